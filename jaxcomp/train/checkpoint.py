"""Checkpoints through orbax-checkpoint's `CheckpointManager` (asynchronous saves).

Each checkpoint `WORKDIR/checkpoints/<step>/` holds three items saved together:
  state   the host (un-replicated) train-state pytree        `ocp.args.StandardSave`
  config  the run's config as JSON                            `ocp.args.JsonSave`
  data    the grain data-iterator state (per process)        `grain.checkpoint.CheckpointSave`
Kept: the last `keep` checkpoints, plus the best one by `best_metric` when given.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Iterator, Mapping

import grain.checkpoint
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from jaxcomp.errors import CheckpointError, ConfigError

PyTree = Any
CHECKPOINT_DIR = "checkpoints"


def config_to_dict(config: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """A JSON-able dict of a config (tuples become lists)."""
  if isinstance(config, ml_collections.ConfigDict):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(dict(config), default=str))


def _key_name(k: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def path_name(path: tuple) -> str:
  """`"params/dense/kernel"` for a `tree_flatten_with_path` key path (dict keys, dataclass fields, list indices)."""
  return "/".join(_key_name(k) for k in path)


def flat_shapes(tree: PyTree) -> dict[str, tuple[tuple[int, ...], str]]:
  """`{"params/dense/kernel": (shape, dtype)}` for every array leaf; paths are the same for a flax dataclass and
  for the nested dicts orbax stores it as."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if leaf is None:
      continue
    out[path_name(path)] = (tuple(np.shape(leaf)), str(np.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype))))
  return out


def compare_shapes(saved: PyTree, target: PyTree, *, what: str) -> None:
  """Raises CheckpointError naming the first leaf that is missing, extra, or of another shape/dtype."""
  a, b = flat_shapes(saved), flat_shapes(target)
  # Parameters first: they name the layer a user changed; optimizer state and statistics mismatch as a consequence.
  for name in sorted(set(a) | set(b), key=lambda n: ("params" not in n.split("/"), n)):
    if name not in a:
      raise CheckpointError(f"{what}: checkpoint has no '{name}' that this config's model needs (other config?)")
    if name not in b:
      raise CheckpointError(f"{what}: checkpoint has '{name}' that this config's model lacks (other config?)")
    if a[name] != b[name]:
      raise CheckpointError(
          f"{what}: '{name}' is {a[name][0]} {a[name][1]} in the checkpoint but {b[name][0]} {b[name][1]} "
          "for this config (other config?)")


def _manager(directory: pathlib.Path, *, keep: int, best_metric: str | None, best_mode: str,
             read_only: bool = False) -> ocp.CheckpointManager:
  policies: list[Any] = [pp.LatestN(n=keep)]
  if best_metric:
    policies.append(pp.BestN(get_metric_fn=lambda m: float(m[best_metric]), reverse=(best_mode == "min"), n=1,
                             keep_checkpoints_without_metrics=False))
  # create=False for writers too: orbax then makes the folder with the first save, so a run that fails before it
  # (a refused resume, a bad init_from) leaves no empty checkpoints/ behind. Readers use create=False rather than
  # read_only=True, which only differs by logging warnings.
  # best_fn/best_mode also make orbax persist each step's metrics, so the ranking survives a restart.
  best = dict(best_fn=lambda m: float(m[best_metric]), best_mode=best_mode) if best_metric else {}
  options = ocp.CheckpointManagerOptions(
      preservation_policy=pp.AnyPreservationPolicy(policies), create=False,
      enable_async_checkpointing=not read_only, **best)
  handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler(),
              "data": grain.checkpoint.CheckpointHandler()}
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def saved_config(workdir: str | pathlib.Path, step: int | None = None) -> dict[str, Any] | None:
  """The config dict saved with the latest (or given) checkpoint of `workdir`; None when there is none."""
  directory = pathlib.Path(workdir) / CHECKPOINT_DIR
  if not directory.is_dir():
    return None
  with _manager(directory, keep=1, best_metric=None, best_mode="min", read_only=True) as mngr:
    if step is not None and step not in mngr.all_steps():
      kept = ", ".join(map(str, mngr.all_steps())) or "none"
      raise CheckpointError(f"no checkpoint at step {step} in workdir {workdir} (kept steps: {kept})")
    step = mngr.latest_step() if step is None else step
    if step is None:
      return None
    return dict(mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])


class Checkpointer:
  """Saves and restores one run's train state, config and data-iterator position.

  Typical use inside a method's `train_and_evaluate` (see docs/training.md):

    ckpt = Checkpointer(workdir, config, every=config.checkpoint_every, keep=3, best_metric="loss")
    host_state, start_step = ckpt.restore_or_init(host_state, data_iter)
    ...
    ckpt.save(step, parallel.unreplicate(state), data_iter, metrics)   # saves only every `every` steps
    ...
    ckpt.save(step, parallel.unreplicate(state), data_iter, metrics, force=True)
    ckpt.close()                                                       # waits for the asynchronous save

  Creating it on a workdir whose checkpoints were written for another `config.method` raises CheckpointError.
  """

  def __init__(
      self,
      workdir: str | pathlib.Path,
      config: ml_collections.ConfigDict | Mapping[str, Any],
      *,
      every: int,
      keep: int = 3,
      best_metric: str | None = None,
      best_mode: str = "min",
  ):
    if best_mode not in ("min", "max"):
      raise ConfigError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
    self.directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
    self.config = config_to_dict(config)
    self.every = int(every)
    self.best_metric = best_metric
    self.best_mode = best_mode
    # One manager, created identically on every process: orbax synchronises processes while creating it, so a
    # process must not take another path because another one already created the folder.
    self._mngr = _manager(self.directory, keep=keep, best_metric=best_metric, best_mode=best_mode)
    step = self._mngr.latest_step()
    if step is not None:
      old = self._mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
      if old.get("method") != self.config.get("method"):
        self._mngr.close()
        raise CheckpointError(f"workdir {workdir} holds a checkpoint of method {old.get('method')!r}, "
                              f"not {self.config.get('method')!r}")

  @property
  def latest_step(self) -> int | None:
    """Step of the newest checkpoint, or None."""
    return self._mngr.latest_step()

  def restore_or_init(self, state: PyTree, data_iter: Iterator | None = None) -> tuple[PyTree, int]:
    """Restores the latest checkpoint onto the shapes of `state` (a fresh host state), or returns it unchanged.

    Also moves `data_iter` (a grain iterator) to where the checkpoint left it. Returns `(state, start_step)`.
    Raises CheckpointError if the checkpoint's parameter tree does not match `state` (another config shape).
    """
    step = self._mngr.latest_step()
    if step is None:
      return state, 0
    meta = self._mngr.item_metadata(step)
    saved_tree = meta["state"]
    saved_tree = getattr(saved_tree, "tree", saved_tree)
    compare_shapes(saved_tree, state, what=f"checkpoint {self.directory / str(step)}")
    args = {"state": ocp.args.StandardRestore(state)}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self._mngr.restore(step, args=ocp.args.Composite(**args))
    return restored["state"], int(step)

  def should_save(self, step: int) -> bool:
    return self.every > 0 and step % self.every == 0

  def save(self, step: int, state: PyTree, data_iter: Iterator | None = None,
           metrics: Mapping[str, Any] | None = None, *, force: bool = False) -> bool:
    """Starts an asynchronous save of the host `state` at `step` (every `every` steps, or now if `force`).

    `metrics` (host scalars) rank checkpoints for `best_metric`. Returns True if a save was started.
    """
    step = int(step)
    if not (force or self.should_save(step)) or self._mngr.latest_step() == step:
      return False
    args = {"state": ocp.args.StandardSave(state), "config": ocp.args.JsonSave(self.config)}
    if data_iter is not None:
      args["data"] = grain.checkpoint.CheckpointSave(data_iter)
    clean = None
    if metrics is not None:
      clean = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
      if self.best_metric and self.best_metric not in clean:
        raise ConfigError(f"best_metric {self.best_metric!r} not among the metrics {sorted(clean)}")
    elif self.best_metric:
      clean = None
    return bool(self._mngr.save(step, args=ocp.args.Composite(**args), metrics=clean, force=True))

  def all_steps(self) -> list[int]:
    return list(self._mngr.all_steps())

  def best_step(self) -> int | None:
    """The kept step with the best `best_metric` (None without a best metric or ranked checkpoints)."""
    if not self.best_metric:
      return None
    ranked = [(m[self.best_metric], s) for s in self._mngr.all_steps()
              if (m := self._mngr.metrics(s)) and self.best_metric in m]
    if not ranked:
      return None
    return (min(ranked) if self.best_mode == "min" else max(ranked))[1]

  def wait(self) -> None:
    """Blocks until the asynchronous save in flight (if any) is on disk."""
    self._mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._mngr.wait_until_finished()
    self._mngr.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()

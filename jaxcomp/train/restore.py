"""Restore for evaluation: parameters and config from a workdir alone, onto the host (numpy arrays).

Used by `jaxcomp eval / compress / decompress`: no model code or fresh state is needed to read a checkpoint, and the
arrays can then be put on CPU or replicated onto any number of devices (`jaxcomp.parallel.replicate`).
`init_from` uses the same reader to warm-start a new run from another run's parameters (fine-tuning).
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxcomp.errors import CheckpointError
from jaxcomp.train import checkpoint as _ckpt

PyTree = Any


RENAMED_KEYS = {"crop_size": "patch_size", "max_eval_images": "eval_max_images", "patch": "patch_size"}
"""Config keys renamed when the shared names were unified (jaxcomp.train.config): old name -> shared name."""


def upgrade_config(saved: dict[str, Any]) -> dict[str, Any]:
  """A saved config under today's key names, so workdirs written before the renames still evaluate."""
  out = dict(saved)
  for old, new in RENAMED_KEYS.items():
    if old in out and new not in out:
      out[new] = out.pop(old)
  return out


def latest_step(workdir: str | pathlib.Path) -> int | None:
  """Newest checkpoint step in `workdir`, or None."""
  directory = pathlib.Path(workdir).absolute() / _ckpt.CHECKPOINT_DIR
  if not directory.is_dir():
    return None
  with _ckpt._manager(directory, keep=1, best_metric=None, best_mode="min", read_only=True) as mngr:
    return mngr.latest_step()


def load_config(workdir: str | pathlib.Path, step: int | None = None) -> ml_collections.ConfigDict:
  """The config saved with the latest (or given) checkpoint; CheckpointError if the workdir has none."""
  saved = _ckpt.saved_config(pathlib.Path(workdir).absolute(), step)
  if saved is None:
    raise CheckpointError(f"no checkpoint in workdir {workdir} (train first, or check the path)")
  return ml_collections.ConfigDict(upgrade_config(saved))


def load_for_eval(workdir: str | pathlib.Path, step: int | None = None) -> tuple[ml_collections.ConfigDict, PyTree]:
  """Loads `(config, state)` from the latest (or given) checkpoint of `workdir`.

  `state` is the saved train-state pytree as nested dicts of numpy arrays: `state["params"]`,
  `state["mutable"]["batch_stats"]` for a single TrainState, `state["gen"]["params"]` for a dict of states.
  Optimizer states come back too (as lists/dicts); evaluation code ignores them.
  """
  workdir = pathlib.Path(workdir).absolute()
  directory = workdir / _ckpt.CHECKPOINT_DIR
  if not directory.is_dir():
    raise CheckpointError(f"no checkpoint in workdir {workdir} (train first, or check the path)")
  with _ckpt._manager(directory, keep=1, best_metric=None, best_mode="min", read_only=True) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None or step not in mngr.all_steps():
      raise CheckpointError(f"no checkpoint{'' if step is None else f' at step {step}'} in workdir {workdir}")
    meta = mngr.item_metadata(step)["state"]
    # Restore onto one host CPU device whatever the device count that wrote it (checkpoints hold host arrays).
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=cpu), getattr(meta, "tree", meta))
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                          config=ocp.args.JsonRestore()))
  config = ml_collections.ConfigDict(upgrade_config(dict(restored["config"])))
  return config, jax.tree.map(np.asarray, restored["state"])


def _get(tree: PyTree, part: str, where: str) -> PyTree:
  if isinstance(tree, Mapping):
    if part not in tree:
      raise CheckpointError(f"{where} has no '{part}'")
    return tree[part]
  if not hasattr(tree, part):
    raise CheckpointError(f"{where} has no '{part}'")
  return getattr(tree, part)


def _replaced(tree: PyTree, parts: Sequence[str], value: PyTree) -> PyTree:
  """`tree` with the subtree at `parts` replaced; dicts are copied, flax dataclasses `.replace`d."""
  if not parts:
    return value
  head, rest = parts[0], parts[1:]
  if isinstance(tree, Mapping):
    return {**tree, head: _replaced(tree[head], rest, value)}
  return tree.replace(**{head: _replaced(getattr(tree, head), rest, value)})


def init_from(state: PyTree, workdir: str | pathlib.Path, keys: Sequence[str], *,
              step: int | None = None) -> PyTree:
  """`state` (a fresh host state) with its subtrees at `keys` taken from the latest (or given) checkpoint of `workdir`.

  A warm start: e.g. `init_from(fresh, "runs/mse", ["codec/params"])` starts a perceptual run from a trained MSE
  codec while its optimizer states, step counters, PRNG keys and other networks (the proxy) stay fresh. Keys are
  `/`-separated paths through dicts and TrainState fields. The shapes and dtypes must match leaf by leaf;
  a missing key or another shape raises CheckpointError naming it (the usual cause: the runs differ in N or M).
  """
  _, saved = load_for_eval(workdir, step)
  for key in keys:
    parts = [p for p in key.split("/") if p]
    src, dst = saved, state
    for i, part in enumerate(parts):
      src = _get(src, part, f"init_from: checkpoint of {workdir} at '{'/'.join(parts[:i]) or '/'}'")
      dst = _get(dst, part, f"init_from: this run's state at '{'/'.join(parts[:i]) or '/'}'")
    _ckpt.compare_shapes({key: src}, {key: dst}, what=f"init_from {workdir}")  # names leaves by full path
    by_name = {_ckpt.path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(src)[0]}
    new = jax.tree_util.tree_map_with_path(
        lambda path, leaf: np.asarray(by_name[_ckpt.path_name(path)], dtype=leaf.dtype), dst)
    state = _replaced(state, parts, new)
  return state

"""Restore for evaluation: parameters and config from a workdir alone, onto the host (numpy arrays).

Used by `jaxcomp eval / compress / decompress`: no model code or fresh state is needed to read a checkpoint, and the
arrays can then be put on CPU or replicated onto any number of devices (`jaxcomp.parallel.replicate`).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from jaxcomp.errors import CheckpointError
from jaxcomp.train import checkpoint as _ckpt

PyTree = Any


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
  return ml_collections.ConfigDict(saved)


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
  config = ml_collections.ConfigDict(dict(restored["config"]))
  return config, jax.tree.map(np.asarray, restored["state"])

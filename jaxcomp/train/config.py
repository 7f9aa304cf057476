"""The configuration keys every method shares, defined once (configs/<method>.py call `add_shared`).

Each method's config sets its paper values for these keys; the names and meanings are the same everywhere, so a
flag learned on one method works on all (`--config.steps`, `--config.eval_max_images`, ...). docs/training.md's
table lists them (a test keeps it in step with `SHARED`).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from jaxcomp.errors import ConfigError

SHARED: dict[str, tuple[Any, str]] = {
    "seed": (0, "one integer: parameter init, data order and per-device keys all derive from it"),
    "parallel": ("pmap", "`\"pmap\"` or `\"shard_map\"` (`jaxcomp.parallel`)"),
    "train_data": ("sample", "training images: a folder, a tfds name, or `sample` (the scikit-image photos)"),
    "eval_data": ("sample", "images of the end-of-training evaluation (`\"\"`: none)"),
    "eval_max_images": (0, "at most this many images in that evaluation (0: all)"),
    "num_workers": (0, "grain worker processes feeding the training batches (0: in-process)"),
    "patch_size": (128, "side of the square training crops / patches, in pixels"),
    "global_batch_size": (8, "images (patches) per step across all devices (must divide by the device count)"),
    "steps": (1000, "total optimizer steps (CAE-ADMM: 0 = `epochs` x the epoch length)"),
    "learning_rate": (1e-4, "the main optimizer's (initial) learning rate"),
    "log_every": (100, "steps between logged training scalars (also logged at the last step and when validating)"),
    "eval_every": (0, "steps between validations (0: only at checkpoints and at the last step)"),
    "checkpoint_every": (1000, "steps between checkpoints (also saved on SIGTERM / SIGINT and at the end)"),
    "keep_checkpoints": (3, "latest checkpoints kept"),
    "best_metric": ("", "logged scalar ranking an extra kept \"best\" checkpoint (`\"\"`: none)"),
    "best_mode": ("min", "`\"min\"` or `\"max\"`: which value of `best_metric` is best"),
    "init_from": ("", "a workdir whose latest parameters start this run when it starts from scratch (fine-tuning)"),
}
"""key -> (default, meaning)."""


def add_shared(c: ml_collections.ConfigDict, **values: Any) -> ml_collections.ConfigDict:
  """Sets every shared key on `c` (the method's value where given, else the default); returns `c`."""
  unknown = sorted(set(values) - set(SHARED))
  if unknown:
    raise ConfigError(f"not shared config keys: {', '.join(unknown)} (set them on the config directly)")
  for key, (default, _) in SHARED.items():
    c[key] = values.get(key, default)
  return c

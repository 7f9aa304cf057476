"""Metrics computed on the host between jitted steps, named in a config: `"module:function"`, a numpy callable
`f(x_BHWC, y_BHWC) -> [B]` on float images in [0, 1]. It need not be differentiable: ProxIQA learns a proxy of it,
RL-SRGAN rewards it. (VMAF, the built-in host metric, lives in `jaxcomp.metrics.vmaf`.)"""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from jaxcomp.errors import ConfigError

HostMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]


def import_metric(name: str, *, key: str = "config.metric", builtin: str = "ssim, ms_ssim, vmaf") -> HostMetric:
  """The callable named by `"package.module:function"`; a one-line ConfigError naming `key` otherwise."""
  if ":" not in name:
    raise ConfigError(f"{key}={name!r}: use {builtin}, or 'module:function' for your own")
  module, fn = name.split(":", 1)
  try:
    f = getattr(importlib.import_module(module), fn)
  except (ImportError, AttributeError) as e:
    raise ConfigError(f"{key}={name!r} cannot be imported: {e}") from None
  if not callable(f):
    raise ConfigError(f"{key}={name!r} is not callable")
  return f

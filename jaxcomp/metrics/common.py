"""Input checks shared by the metrics."""

from __future__ import annotations

import jax.numpy as jnp

from jaxcomp.errors import JaxcompError


class MetricInputError(JaxcompError, ValueError):
  """Arrays or curves a metric cannot be computed on (shape mismatch, image too small, too few RD points).

  It is both a `JaxcompError` (the CLI prints it as one line) and a `ValueError` (what numeric code expects).
  """


def as_float_pair(x: jnp.ndarray, y: jnp.ndarray, name: str) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Checks that `x` and `y` are images `[..., H, W, C]` of one shape and casts them to a common float dtype.

  Integer inputs (uint8) become float32; float inputs keep their precision (float64 under `enable_x64`).
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  if x.shape != y.shape:
    raise MetricInputError(f"{name}: shapes differ, {x.shape} vs {y.shape}")
  if x.ndim < 3:
    raise MetricInputError(f"{name}: expected images shaped [..., H, W, C], got shape {x.shape}")
  dtype = jnp.result_type(x.dtype, y.dtype)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  return x.astype(dtype), y.astype(dtype)

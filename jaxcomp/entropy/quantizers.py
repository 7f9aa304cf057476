"""Quantizers for learned compression: training proxies and test-time rounding.

Every function is pure; the random ones take an explicit `jax.random` key. Shapes are preserved (`x` of any shape).

- `add_uniform_noise`: additive U(-1/2, 1/2) noise, the differentiable training proxy of rounding (Ballé et al.
  2017, "End-to-end optimized image compression", sec. 2.2; Ballé et al. 2018, eq. 1).
- `round_ste`: hard rounding with a straight-through (identity) gradient.
- `stochastic_round`: Theis et al. 2017's stochastic rounding used by CAE-ADMM (Zhao et al. 2019, eq. 3-4):
  `floor(t) + eps`, `eps ~ Bernoulli(t - floor(t))`, gradient 1 (the gradient of its expectation, `t`).
- `round_offset`: test-time rounding around an offset (the learned medians of an `EntropyBottleneck`, the means of
  a `GaussianConditional`): `round(x - offset) + offset`, as in CompressAI's "dequantize" mode.
- `quantize`: dispatches on a mode string, for models that choose their quantizer from a config.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

MODES = ("noise", "ste", "stochastic", "round")


def add_uniform_noise(x: jax.Array, key: jax.Array) -> jax.Array:
  """Returns `x + u`, `u ~ U(-1/2, 1/2)` i.i.d. per element (gradient 1)."""
  return x + jax.random.uniform(key, x.shape, x.dtype, -0.5, 0.5)


def round_ste(x: jax.Array) -> jax.Array:
  """Rounds to the nearest integer (half to even) with a straight-through gradient of 1."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def stochastic_round(x: jax.Array, key: jax.Array) -> jax.Array:
  """Theis et al.'s stochastic rounding (CAE-ADMM eq. 3-4).

  Returns `floor(x) + eps` with `P(eps = 1) = x - floor(x)`, so `E[Q(x)] = x`; the gradient is that of the
  expectation, i.e. 1 (implemented straight-through).
  """
  floor = jnp.floor(x)
  eps = jax.random.bernoulli(key, x - floor).astype(x.dtype)
  return x + jax.lax.stop_gradient(floor + eps - x)


def round_offset(x: jax.Array, offset: Optional[jax.Array] = None) -> jax.Array:
  """Test-time quantization `round(x - offset) + offset` (gradient straight-through; offset not differentiated).

  `offset` broadcasts against `x` (e.g. per-channel medians of shape [C] for `x_BHWC`). With `offset=None` it is
  plain rounding.
  """
  if offset is None:
    return round_ste(x)
  offset = jax.lax.stop_gradient(offset)
  return round_ste(x - offset) + offset


def symbols(x: jax.Array, offset: Optional[jax.Array] = None) -> jax.Array:
  """The integer symbols the range coder writes: `round(x - offset)` as int32 (no gradient)."""
  if offset is not None:
    x = x - offset
  return jnp.round(x).astype(jnp.int32)


def quantize(x: jax.Array, mode: str, *, key: Optional[jax.Array] = None,
             offset: Optional[jax.Array] = None) -> jax.Array:
  """Quantizes `x` with one of `MODES`.

  Args:
    x: values of any shape.
    mode: "noise" (additive uniform noise; needs `key`), "ste" (hard rounding around `offset`, straight-through),
      "stochastic" (Theis et al. stochastic rounding; needs `key`), "round" (same values as "ste"; meant for test
      time).
    key: PRNG key for the random modes.
    offset: optional offset for the rounding modes (medians or means); ignored by "noise" and "stochastic", which
      are unbiased around any offset.
  """
  if mode == "noise":
    if key is None:
      raise ValueError("quantize(mode='noise') needs a PRNG key")
    return add_uniform_noise(x, key)
  if mode == "stochastic":
    if key is None:
      raise ValueError("quantize(mode='stochastic') needs a PRNG key")
    return stochastic_round(x, key)
  if mode in ("ste", "round"):
    return round_offset(x, offset)
  raise ValueError(f"unknown quantization mode {mode!r}; expected one of {MODES}")

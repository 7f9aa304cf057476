"""Generalized divisive normalization (Ballé, Laparra, Simoncelli 2016, "Density modeling of images using a
generalized normalization transformation", eq. 6 with alpha = 2, epsilon = 1/2):

  GDN:   y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
  IGDN:  y_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2)     (the approximate inverse used by the synthesis)

beta and gamma are kept non-negative and bounded below by the reparameterisation of tensorflow-compression /
CompressAI (`NonNegativeParametrizer`): the stored parameter p relates to the effective value v by
v = max(p, bound)^2 - pedestal, with pedestal = 2^-36 and bound = sqrt(minimum + pedestal), and the `max` has a
gradient that still lets p climb back above the bound (`lower_bound`). minimum = 1e-6 for beta, 0 for gamma.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

PEDESTAL = 2.0 ** -36  # reparam_offset (2^-18) squared


@jax.custom_vjp
def lower_bound(x: jax.Array, bound: jax.Array | float) -> jax.Array:
  """max(x, bound) whose gradient passes where x >= bound or where the update would raise x (grad < 0).

  Plain `maximum` would give zero gradient below the bound and a parameter stuck there could never recover.
  """
  return jnp.maximum(x, bound)


def _lower_bound_fwd(x, bound):
  return jnp.maximum(x, bound), (x, bound)


def _lower_bound_bwd(res, g):
  x, bound = res
  pass_through = (x >= bound) | (g < 0)
  return g * pass_through.astype(g.dtype), jnp.zeros_like(jnp.asarray(bound, dtype=g.dtype))


lower_bound.defvjp(_lower_bound_fwd, _lower_bound_bwd)


class NonNegativeParametrizer(NamedTuple):
  """Maps a stored parameter to a value >= `minimum` (sqrt reparameterisation with a pedestal)."""
  minimum: float = 0.0
  pedestal: float = PEDESTAL

  @property
  def bound(self) -> float:
    return float((self.minimum + self.pedestal) ** 0.5)

  def init(self, value: jax.Array) -> jax.Array:
    """The stored parameter whose `forward` is `value` (for value >= minimum)."""
    return jnp.sqrt(jnp.maximum(value + self.pedestal, self.pedestal))

  def forward(self, param: jax.Array) -> jax.Array:
    return jnp.square(lower_bound(param, self.bound)) - self.pedestal


class GDN(nn.Module):
  """GDN over the last (channel) axis of an NHWC tensor; `inverse=True` gives IGDN.

  Attributes:
    inverse: multiply instead of divide (IGDN, used in synthesis transforms).
    beta_min: lower bound on beta (1e-6 in CompressAI / tensorflow-compression).
    gamma_init: gamma is initialised to `gamma_init * I` (0.1).
  """
  inverse: bool = False
  beta_min: float = 1e-6
  gamma_init: float = 0.1

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    c = x_BHWC.shape[-1]
    beta_p = NonNegativeParametrizer(minimum=self.beta_min)
    gamma_p = NonNegativeParametrizer(minimum=0.0)
    beta_raw = self.param("beta", lambda _, shape: beta_p.init(jnp.ones(shape)), (c,))
    gamma_raw = self.param("gamma", lambda _, shape: gamma_p.init(self.gamma_init * jnp.eye(shape[0])), (c, c))
    beta = beta_p.forward(beta_raw)
    gamma_ij = gamma_p.forward(gamma_raw)  # gamma_ij: weight of input channel j in the norm of output channel i
    norm = jnp.einsum("...j,ij->...i", jnp.square(x_BHWC), gamma_ij.astype(x_BHWC.dtype)) + beta.astype(x_BHWC.dtype)
    if self.inverse:
      return x_BHWC * jnp.sqrt(norm)
    return x_BHWC * jax.lax.rsqrt(norm)


def gdn_effective_params(params: dict, beta_min: float = 1e-6) -> tuple[jax.Array, jax.Array]:
  """(beta [C], gamma [C, C]) as used in the forward pass, from a GDN module's parameters {"beta", "gamma"}."""
  beta = NonNegativeParametrizer(minimum=beta_min).forward(params["beta"])
  gamma = NonNegativeParametrizer(minimum=0.0).forward(params["gamma"])
  return beta, gamma

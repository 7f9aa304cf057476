"""ADMM pruning of the quantized latent (CAE-ADMM, Zhao & Liao 2019, Section 3.2 and Algorithm 1).

The rate term is replaced by a cardinality constraint on the quantized latent `Q(E(x))` (eq. 5-7):

  argmin_{E,D} d(x, x_hat) + g(Z)   s.t.  Q(E(x)) - Z = 0,   g(Z) = 0 if card(Z) <= l else +inf.

ADMM splits it into (eq. 8) the network loss `d + rho/2 ||Q(E(x)) - Z + U||_F^2`, minimised by SGD with Z, U fixed,
(eq. 10) `Z <- Pi_S(Q(E(x)) + U)`, the Euclidean projection onto `S = {card <= l}` (keep the l entries of largest
magnitude, zero the rest; Boyd et al. 2011, Section 9.1), and (eq. 11) the dual update `U <- U + Q(E(x)) - Z`.

Z and U belong to training examples (the paper's batch-indexed Z, U): the state holds one slot per example,
`z_N...`, `u_N...`, addressed by an integer example index, so it survives shuffling and sharding (the caller passes
the indices of the examples it encodes). How CAE-ADMM chooses its examples (fixed "anchor" crops, one per record) is
decided in `jaxcomp.methods.cae_admm.train`, not here: this module is shape-generic (any per-example latent shape,
the cardinality counted per example) so it is equally used on the toy problems in the tests.

Everything is an optax-style pair of pure functions over a NamedTuple state:

  state = admm.init(num_examples, latent_shape)
  loss = d + admm.penalty(q_B..., *admm.gather(state, idx_B), rho)        # eq. 8, inside the jitted train step
  info, state = admm.update(q_B..., idx_B, state, keep=l)                  # eqs. 10-11, every `admm_every` epochs
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxcomp import errors


class ADMMState(NamedTuple):
  """Per-example ADMM variables (Algorithm 1: both start at zero).

  Attributes:
    z: `[N, *latent_shape]` the auxiliary variable Z, always in S = {card <= l} per example.
    u: `[N, *latent_shape]` the scaled dual variable U.
    count: `[N]` int32, how many projections each example has received (0 = its Z, U are still the initial zeros).
  """

  z: jax.Array
  u: jax.Array
  count: jax.Array


class ADMMInfo(NamedTuple):
  """Diagnostics of one ADMM update for the updated examples (Boyd et al. 2011, Section 3.3).

  Attributes:
    primal_residual: `[B]` ||Q(E(x)) - Z^{k+1}||_F per example (how far the latent is from the sparse target).
    dual_residual: `[B]` ||Z^{k+1} - Z^k||_F per example (how much the sparse target moved; rho x this is the
      dual residual of Boyd et al.).
    latent_nonzeros: `[B]` card(Q(E(x))) per example: the sparsity the network has actually reached.
  """

  primal_residual: jax.Array
  dual_residual: jax.Array
  latent_nonzeros: jax.Array


def keep_count(latent_shape: Sequence[int], ratio: float) -> int:
  """l = round(ratio x latent size), the number of entries kept per example (the paper uses ratio = 10%).

  Raises:
    ConfigError: ratio outside (0, 1].
  """
  if not 0.0 < ratio <= 1.0:
    raise errors.ConfigError(f"admm keep ratio must be in (0, 1], got {ratio!r}")
  size = math.prod(latent_shape)
  return max(1, min(size, int(round(ratio * size))))


def init(num_examples: int, latent_shape: Sequence[int], dtype=jnp.float32) -> ADMMState:
  """Z = U = 0 for every example (Algorithm 1, first line)."""
  shape = (num_examples, *latent_shape)
  return ADMMState(z=jnp.zeros(shape, dtype), u=jnp.zeros(shape, dtype), count=jnp.zeros((num_examples,), jnp.int32))


def project(v_B: jax.Array, keep: int) -> jax.Array:
  """Euclidean projection of each example onto {card <= keep} (eq. 10): keep the `keep` largest |v|, zero the rest.

  Ties in |v| (common: v is an integer latent plus an integer dual) are broken towards the lower flat (row-major)
  index, because `jax.lax.top_k` returns the lower index first among equal values; the result is therefore
  deterministic and identical on every backend.

  Args:
    v_B: `[B, ...]` one example per leading index; the cardinality is counted over all remaining axes.
    keep: l, the number of entries kept per example (static).

  Returns:
    `[B, ...]`, same shape and dtype as `v_B`, with at most `keep` non-zeros per example.
  """
  flat_BM = v_B.reshape(v_B.shape[0], -1)
  keep = int(keep)
  if keep >= flat_BM.shape[1]:
    return v_B
  _, idx_Bk = jax.lax.top_k(jnp.abs(flat_BM), keep)
  mask_BM = jnp.zeros(flat_BM.shape, bool).at[jnp.arange(flat_BM.shape[0])[:, None], idx_Bk].set(True)
  return jnp.where(mask_BM, flat_BM, jnp.zeros_like(flat_BM)).reshape(v_B.shape)


def gather(state: ADMMState, idx_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(Z, U) of the examples `idx_B`, `[B, ...]` each, to feed `penalty` inside a train step."""
  return state.z[idx_B], state.u[idx_B]


def penalty(q_B: jax.Array, z_B: jax.Array, u_B: jax.Array, rho: float) -> jax.Array:
  """The augmented-Lagrangian term of eq. 8, rho/2 ||Q(E(x)) - Z + U||_F^2, averaged over the batch.

  The paper writes the Frobenius norm of the whole batch; summing per example and averaging over the batch keeps the
  term's scale independent of the (per-device) batch size, so that `pmean` over devices gives the global-batch value
  and rho has the same meaning for every batch size. Z and U are constants here (stop_gradient), as in eq. 8.

  Args:
    q_B: `[B, ...]` quantized latents Q(E(x)) (gradients flow through the quantizer's identity gradient, eq. 4).
    z_B, u_B: `[B, ...]` the examples' Z and U.
    rho: the penalty factor rho > 0.

  Returns:
    A scalar.
  """
  r_B = q_B - jax.lax.stop_gradient(z_B) + jax.lax.stop_gradient(u_B)
  return 0.5 * rho * jnp.mean(jnp.sum(jnp.square(r_B).reshape(r_B.shape[0], -1), axis=1))


def update(q_B: jax.Array, idx_B: jax.Array, state: ADMMState, *, keep: int) -> tuple[ADMMInfo, ADMMState]:
  """Steps 2 and 3 of Algorithm 1 for the examples `idx_B` (eqs. 10 and 11).

    Z^{k+1} = Pi_S(Q(E(x)) + U^k),   U^{k+1} = U^k + Q(E(x)) - Z^{k+1}.

  Args:
    q_B: `[B, ...]` the current quantized latents of the examples (the caller decides the quantizer mode; CAE-ADMM
      uses deterministic rounding so that Z and U stay integer-valued).
    idx_B: `[B]` int, distinct example indices into the state.
    state: the ADMM state.
    keep: l, entries kept per example (static; see `keep_count`).

  Returns:
    `(info, new_state)`; the other examples' slots are unchanged.
  """
  q_B = q_B.astype(state.z.dtype)
  z_old_B, u_old_B = gather(state, idx_B)
  z_new_B = project(q_B + u_old_B, keep)
  u_new_B = u_old_B + q_B - z_new_B

  def norm_B(a):
    return jnp.sqrt(jnp.sum(jnp.square(a).reshape(a.shape[0], -1), axis=1))

  info = ADMMInfo(
      primal_residual=norm_B(q_B - z_new_B),
      dual_residual=norm_B(z_new_B - z_old_B),
      latent_nonzeros=jnp.sum((q_B != 0).reshape(q_B.shape[0], -1), axis=1),
  )
  new_state = ADMMState(
      z=state.z.at[idx_B].set(z_new_B),
      u=state.u.at[idx_B].set(u_new_B),
      count=state.count.at[idx_B].add(1),
  )
  return info, new_state


def is_projection_epoch(epoch: int, admm_every: int, warmup_epochs: int = 0) -> bool:
  """Whether ADMM steps 2-3 run at the end of `epoch` (1-based): every `admm_every` epochs after the warm-up.

  `admm_every <= 0` disables the projection (the paper's "no pruning" ablation keeps Z = U = 0 throughout).
  """
  if admm_every <= 0 or epoch <= warmup_epochs:
    return False
  return (epoch - warmup_epochs) % admm_every == 0

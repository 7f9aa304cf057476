"""ADMM pruning (Algorithm 1 of CAE-ADMM) against independent references: a numpy sort-based projection, the closed
form of the dual update, finite differences of the augmented loss, and a toy problem with a planted sparse answer."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import errors
from jaxcomp.methods.cae_admm import admm


def _numpy_project(v_B: np.ndarray, keep: int) -> np.ndarray:
  """Reference: stable sort by decreasing |v| (ties -> lower flat index), keep the first `keep` entries."""
  flat = v_B.reshape(v_B.shape[0], -1)
  out = np.zeros_like(flat)
  for i, row in enumerate(flat):
    order = np.argsort(-np.abs(row), kind="stable")[:keep]
    out[i, order] = row[order]
  return out.reshape(v_B.shape)


@pytest.mark.parametrize("keep", [1, 5, 12, 48])
def test_project_matches_numpy_sort_with_ties(keep):
  # Small integers give many ties in |v|, including +a/-a pairs: the tie rule must match the reference exactly.
  rng = np.random.default_rng(keep)
  v = rng.integers(-3, 4, size=(4, 2, 3, 8)).astype(np.float32)
  got = np.asarray(jax.jit(admm.project, static_argnums=1)(jnp.asarray(v), keep))
  np.testing.assert_array_equal(got, _numpy_project(v, keep))
  chex.assert_shape(got, v.shape)
  assert np.all(np.count_nonzero(got.reshape(4, -1), axis=1) <= keep)


def test_project_is_euclidean_projection_on_continuous_values():
  # For distinct magnitudes the kept entries are exactly the l largest |v|, and no other l-sparse point is closer.
  rng = np.random.default_rng(0)
  v = rng.normal(size=(1, 30)).astype(np.float32)
  keep = 7
  p = np.asarray(admm.project(jnp.asarray(v), keep))
  assert np.count_nonzero(p) == keep
  best = np.sum((v - p) ** 2)
  for _ in range(200):
    support = rng.choice(30, keep, replace=False)
    cand = np.zeros_like(v)
    cand[0, support] = v[0, support]
    assert np.sum((v - cand) ** 2) >= best - 1e-6


def test_keep_count_and_bad_ratio():
  assert admm.keep_count((16, 16, 32), 0.1) == 819
  assert admm.keep_count((3,), 1e-6) == 1
  with pytest.raises(errors.ConfigError, match="ratio"):
    admm.keep_count((4, 4), 0.0)


def test_update_is_eqs_10_and_11_and_touches_only_its_examples():
  rng = np.random.default_rng(1)
  state = admm.init(6, (2, 2, 3))
  state = state._replace(u=jnp.asarray(rng.integers(-2, 3, size=(6, 2, 2, 3)).astype(np.float32)))
  q = rng.integers(-4, 5, size=(2, 2, 2, 3)).astype(np.float32)
  idx = np.array([4, 1])
  keep = 3
  info, new = jax.jit(admm.update, static_argnames="keep")(jnp.asarray(q), jnp.asarray(idx), state, keep=keep)
  u_old = np.asarray(state.u)[idx]
  z_ref = _numpy_project(q + u_old, keep)
  np.testing.assert_array_equal(np.asarray(new.z)[idx], z_ref)
  np.testing.assert_array_equal(np.asarray(new.u)[idx], u_old + q - z_ref)
  others = np.setdiff1d(np.arange(6), idx)
  np.testing.assert_array_equal(np.asarray(new.z)[others], 0)
  np.testing.assert_array_equal(np.asarray(new.u)[others], np.asarray(state.u)[others])
  np.testing.assert_array_equal(np.asarray(new.count), [0, 1, 0, 0, 1, 0])
  np.testing.assert_allclose(np.asarray(info.primal_residual), np.linalg.norm((q - z_ref).reshape(2, -1), axis=1),
                             rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(info.latent_nonzeros), np.count_nonzero(q.reshape(2, -1), axis=1))
  chex.assert_trees_all_equal_shapes(new, state)


def test_penalty_value_and_gradient_against_finite_differences():
  rng = np.random.default_rng(2)
  q, z, u = (rng.normal(size=(3, 2, 2, 2)) for _ in range(3))
  rho = 0.7
  ref = 0.5 * rho * np.mean(np.sum((q - z + u).reshape(3, -1) ** 2, axis=1))
  np.testing.assert_allclose(float(admm.penalty(*(jnp.asarray(a, jnp.float32) for a in (q, z, u)), rho)), ref,
                             rtol=1e-6)
  grad = np.asarray(jax.grad(admm.penalty)(*(jnp.asarray(a, jnp.float32) for a in (q, z, u)), rho))

  def f(qq):  # float64 numpy, central differences
    return 0.5 * rho * np.mean(np.sum((qq - z + u).reshape(3, -1) ** 2, axis=1))

  fd = np.zeros_like(q)
  eps = 1e-5
  for i in np.ndindex(q.shape):
    dq = np.zeros_like(q)
    dq[i] = eps
    fd[i] = (f(q + dq) - f(q - dq)) / (2 * eps)
  np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6)
  # Z and U are constants of the sub-problem (eq. 8): no gradient reaches them.
  gz = jax.grad(admm.penalty, argnums=1)(*(jnp.asarray(a, jnp.float32) for a in (q, z, u)), rho)
  np.testing.assert_array_equal(np.asarray(gz), 0)


def test_projection_schedule():
  assert [e for e in range(1, 61) if admm.is_projection_epoch(e, 20)] == [20, 40, 60]
  assert [e for e in range(1, 30) if admm.is_projection_epoch(e, 10, warmup_epochs=5)] == [15, 25]
  assert not any(admm.is_projection_epoch(e, 0) for e in range(1, 50))


def test_admm_recovers_planted_sparse_least_squares_solution():
  # min ||A w - b||^2 s.t. card(w) <= l, with b = A w* for a 4-sparse w*: the w-step (eq. 8) is done by gradient
  # descent through `penalty`, the Z- and U-steps by `update`, exactly as the CAE-ADMM train loop does.
  rng = np.random.default_rng(3)
  n, m, keep = 40, 24, 4
  a = jnp.asarray(rng.normal(size=(n, m)) / np.sqrt(n), jnp.float32)
  w_star = np.zeros(m, np.float32)
  w_star[[2, 9, 15, 20]] = [3.0, -2.0, 1.5, -2.5]
  b = a @ w_star
  rho = 1.0

  def loss(w, z, u):
    return jnp.sum(jnp.square(a @ w - b)) + admm.penalty(w[None], z, u, rho)

  @jax.jit
  def w_step(w, z, u):
    def body(_, w):
      return w - 0.1 * jax.grad(loss)(w, z, u)
    return jax.lax.fori_loop(0, 200, body, w)

  state = admm.init(1, (m,))
  w = jnp.zeros(m)
  idx = jnp.array([0])
  for _ in range(60):
    w = w_step(w, state.z, state.u)
    info, state = admm.update(w[None], idx, state, keep=keep)
  z = np.asarray(state.z[0])
  assert np.count_nonzero(z) <= keep
  np.testing.assert_allclose(z, w_star, atol=1e-2)
  assert float(info.primal_residual[0]) < 1e-2
  np.testing.assert_allclose(np.asarray(w), w_star, atol=1e-2)

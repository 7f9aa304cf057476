"""GDN / IGDN against the direct formula, and the lower-bounded reparameterisation under gradient steps."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcomp.nn import GDN, NonNegativeParametrizer, gdn_effective_params, lower_bound


def _numpy_gdn(x, beta, gamma, inverse):
  x = np.asarray(x, np.float64)
  out = np.empty_like(x)
  for i in range(x.shape[-1]):
    norm = beta[i] + sum(gamma[i, j] * x[..., j] ** 2 for j in range(x.shape[-1]))
    out[..., i] = x[..., i] * np.sqrt(norm) if inverse else x[..., i] / np.sqrt(norm)
  return out


def test_init_values_match_compressai():
  x = jnp.ones((1, 2, 2, 4))
  params = GDN().init(jax.random.key(0), x)["params"]
  beta, gamma = gdn_effective_params(params)
  np.testing.assert_allclose(beta, np.ones(4), rtol=1e-6)
  np.testing.assert_allclose(gamma, 0.1 * np.eye(4), atol=1e-7)


def test_forward_matches_formula():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(2, 3, 3, 4)), jnp.float32)
  beta = rng.uniform(0.5, 2.0, size=4)
  gamma = rng.uniform(0.0, 0.5, size=(4, 4))  # not symmetric: checks the (i, j) orientation
  p = NonNegativeParametrizer(1e-6), NonNegativeParametrizer(0.0)
  params = {"params": {"beta": p[0].init(jnp.asarray(beta, jnp.float32)),
                       "gamma": p[1].init(jnp.asarray(gamma, jnp.float32))}}
  for inverse in (False, True):
    y = GDN(inverse=inverse).apply(params, x)
    chex.assert_shape(y, x.shape)
    np.testing.assert_allclose(y, _numpy_gdn(x, beta, gamma, inverse), rtol=1e-5, atol=1e-6)


def test_lower_bound_gradient_lets_parameters_recover():
  grad = lambda sign: jax.grad(lambda x: sign * jnp.sum(lower_bound(x, 1.0)))(jnp.array([0.5, 2.0]))
  # below the bound: a gradient that would lower x further is blocked; one that raises it passes
  np.testing.assert_array_equal(grad(1.0), [0.0, 1.0])
  np.testing.assert_array_equal(grad(-1.0), [-1.0, -1.0])


def test_parameters_stay_in_bounds_after_gradient_steps():
  beta_min = 1e-3
  mod = GDN(beta_min=beta_min)
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
  params = mod.init(jax.random.key(1), x)
  # maximising |GDN(x)| drives beta and gamma down as fast as possible; a large step overshoots the bound
  loss = lambda p: -jnp.mean(jnp.abs(mod.apply(p, x)))
  opt = optax.sgd(5.0)
  state = opt.init(params)
  raw_below = False

  @jax.jit
  def step(params, state):
    upd, state = opt.update(jax.grad(loss)(params), state)
    return optax.apply_updates(params, upd), state

  for _ in range(30):
    params, state = step(params, state)
    raw_below |= bool(jnp.any(params["params"]["beta"] < NonNegativeParametrizer(beta_min).bound))
  beta, gamma = gdn_effective_params(params["params"], beta_min=beta_min)
  assert raw_below, "the test should push the stored beta below its bound"
  assert np.all(np.asarray(beta) >= beta_min * (1 - 1e-4))
  assert np.all(np.asarray(gamma) >= -1e-12)
  assert np.all(np.isfinite(np.asarray(mod.apply(params, x))))
  # and a loss that wants a larger beta gets a non-zero gradient for it even while clamped
  g_up = jax.grad(lambda p: jnp.mean(jnp.abs(mod.apply(p, x))))(params)
  assert np.all(np.asarray(g_up["params"]["beta"]) < 0)

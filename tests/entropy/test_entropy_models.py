"""Quantizers and entropy models against closed forms, numpy re-implementations and finite differences."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from jaxcomp.entropy import quantizers
from jaxcomp.entropy.models import (SCALE_TABLE, EntropyBottleneck, GaussianConditional, build_indexes,
                                    lower_bound, rate_bits)


def test_uniform_noise_range_and_gradient():
  x = jnp.linspace(-3.0, 3.0, 1001)
  y = quantizers.add_uniform_noise(x, jax.random.PRNGKey(0))
  chex.assert_shape(y, x.shape)
  d = np.asarray(y - x)
  assert d.min() >= -0.5 and d.max() <= 0.5 and abs(d.mean()) < 0.03 and d.std() > 0.25
  g = jax.grad(lambda x: quantizers.add_uniform_noise(x, jax.random.PRNGKey(0)).sum())(x)
  np.testing.assert_array_equal(g, np.ones_like(x))


def test_round_ste_values_and_gradient():
  x = jnp.array([-1.6, -0.4, 0.4, 0.6, 2.5, 3.5])
  np.testing.assert_array_equal(quantizers.round_ste(x), np.round(np.asarray(x)))
  np.testing.assert_array_equal(jax.grad(lambda x: (quantizers.round_ste(x) * 3).sum())(x), 3 * np.ones(6))


def test_round_offset_rounds_around_the_offset():
  x = jnp.array([[0.2, 1.2], [0.9, -0.7]])
  offset = jnp.array([0.3, -0.25])
  np.testing.assert_allclose(quantizers.round_offset(x, offset), np.round(np.asarray(x - offset)) + offset)
  np.testing.assert_array_equal(quantizers.symbols(x, offset), np.round(np.asarray(x - offset)).astype(np.int32))
  g = jax.grad(lambda o: quantizers.round_offset(x, o).sum())(offset)
  np.testing.assert_array_equal(g, np.zeros(2))  # offsets (medians) are learned by the aux loss only


def test_stochastic_round_is_unbiased_with_unit_gradient():
  x = jnp.full((20000,), 0.3) + jnp.repeat(jnp.arange(4.0) - 2, 5000)
  q = quantizers.stochastic_round(x, jax.random.PRNGKey(1))
  qn, xn = np.asarray(q), np.asarray(x)
  assert set(np.unique(qn - np.floor(xn))) <= {0.0, 1.0}
  # P(ceil) = frac = 0.3: mean within 4 standard errors.
  assert abs((qn - np.floor(xn)).mean() - 0.3) < 4 * np.sqrt(0.21 / qn.size)
  g = jax.grad(lambda x: quantizers.stochastic_round(x, jax.random.PRNGKey(1)).sum())(x)
  np.testing.assert_array_equal(g, np.ones_like(xn))


def test_quantize_dispatch_and_errors():
  x = jnp.array([0.4, 1.6])
  np.testing.assert_array_equal(quantizers.quantize(x, "round"), [0.0, 2.0])
  with pytest.raises(ValueError, match="needs a PRNG key"):
    quantizers.quantize(x, "noise")
  with pytest.raises(ValueError, match="unknown quantization mode"):
    quantizers.quantize(x, "bogus")


def test_lower_bound_gradient_passes_only_upward():
  x = jnp.array([0.5, 2.0])
  np.testing.assert_array_equal(lower_bound(x, 1.0), [1.0, 2.0])
  # Loss increasing in x: below the bound the gradient is blocked (it would push x further down).
  np.testing.assert_array_equal(jax.grad(lambda x: lower_bound(x, 1.0).sum())(x), [0.0, 1.0])
  # Loss decreasing in x: the gradient passes everywhere (descent raises x back above the bound).
  np.testing.assert_array_equal(jax.grad(lambda x: -lower_bound(x, 1.0).sum())(x), [-1.0, -1.0])


def _numpy_cumulative(params, x_CN):
  """Independent float64 numpy re-implementation of appendix 6.1's cumulative logits."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  logits = x_CN[:, None, :]
  i = 0
  while f"matrix{i}" in p:
    logits = np.einsum("cij,cjn->cin", np.log1p(np.exp(p[f"matrix{i}"])), logits) + p[f"bias{i}"]
    if f"factor{i}" in p:
      logits = logits + np.tanh(p[f"factor{i}"]) * np.tanh(logits)
    i += 1
  return logits[:, 0, :]


@pytest.fixture(scope="module")
def bottleneck():
  eb = EntropyBottleneck(channels=3)
  y = jnp.zeros((1, 2, 2, 3))
  variables = eb.init(jax.random.PRNGKey(0), y, training=False)
  # Perturb factors so the tanh terms matter in the comparison.
  params = dict(variables["params"])
  for k in params:
    if k.startswith("factor"):
      params[k] = jax.random.normal(jax.random.PRNGKey(len(k)), params[k].shape)
  return eb, {"params": params}


def test_bottleneck_likelihood_matches_numpy_reference(bottleneck):
  eb, variables = bottleneck
  y = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 5, 3)) * 6
  lik = eb.apply(variables, y, method="likelihood")
  chex.assert_shape(lik, y.shape)
  y_CN = np.moveaxis(np.asarray(y, np.float64).reshape(-1, 3), -1, 0)
  sig = scipy.special.expit
  ref = sig(_numpy_cumulative(variables["params"], y_CN + 0.5)) - sig(_numpy_cumulative(variables["params"],
                                                                                       y_CN - 0.5))
  ref = np.moveaxis(ref, 0, -1).reshape(y.shape)
  np.testing.assert_allclose(lik, np.maximum(ref, 1e-9), rtol=2e-4, atol=1e-7)


def test_bottleneck_pmf_is_normalised_and_monotone_cdf(bottleneck):
  eb, variables = bottleneck
  # sum_k p(k + u) telescopes to c(+inf) - c(-inf) = 1 for any offset u.
  for u in (0.0, 0.37):
    ks = jnp.arange(-200, 201, dtype=jnp.float32) + u
    lik = eb.apply(variables, jnp.broadcast_to(ks[:, None], (401, 3)), method="likelihood")
    np.testing.assert_allclose(np.asarray(lik, np.float64).sum(0), 1.0, atol=1e-4)
  x = jnp.linspace(-40, 40, 2001)
  logits = eb.apply(variables, jnp.broadcast_to(x, (3, 1, 2001)), method="_logits_cumulative")
  assert np.all(np.diff(np.asarray(logits[:, 0]), axis=-1) > 0)


def test_bottleneck_likelihood_gradient_matches_finite_differences(bottleneck):
  eb, variables = bottleneck
  y = jnp.array([[0.3, -1.2, 2.7]])
  f = lambda y: jnp.sum(jnp.log(eb.apply(variables, y, method="likelihood")))
  g = jax.grad(f)(y)
  eps = 1e-2
  for c in range(3):
    e = jnp.zeros_like(y).at[0, c].set(eps)
    fd = (f(y + e) - f(y - e)) / (2 * eps)
    np.testing.assert_allclose(g[0, c], fd, rtol=2e-2, atol=1e-3)


def test_bottleneck_call_modes(bottleneck):
  eb, variables = bottleneck
  y = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 3, 3)) * 4
  med = np.asarray(variables["params"]["quantiles"][:, 0, 1])
  y_hat, lik = eb.apply(variables, y, training=False)
  np.testing.assert_allclose(y_hat, np.round(np.asarray(y) - med) + med, atol=1e-6)
  np.testing.assert_allclose(lik, eb.apply(variables, y_hat, method="likelihood"))
  y_noisy, _ = eb.apply(variables, y, training=True, rngs={"noise": jax.random.PRNGKey(5)})
  assert np.abs(np.asarray(y_noisy - y)).max() <= 0.5 and not np.allclose(y_noisy, y_hat)
  with pytest.raises(ValueError, match="channels"):
    eb.apply(variables, jnp.zeros((1, 2, 2, 4)), training=False)


def test_quantiles_converge_on_a_known_distribution():
  """Fit the density to N(mu_c, 2^2) + U(-1/2, 1/2) data jointly with the aux loss; medians -> mu_c."""
  mus = np.array([3.0, -1.5], np.float32)
  eb = EntropyBottleneck(channels=2, tail_mass=1e-3)
  data = mus + 2.0 * jax.random.normal(jax.random.PRNGKey(6), (4096, 2))
  params = eb.init(jax.random.PRNGKey(7), data[:4], training=False)["params"]
  opt = optax.adam(3e-2)

  def loss_fn(params, key):
    _, lik = eb.apply({"params": params}, data, training=True, key=key)
    aux = eb.apply({"params": params}, method="aux_loss")
    return rate_bits(lik) / data.shape[0] + aux, aux

  @jax.jit
  def step(params, state, key):
    (_, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, key)
    updates, state = opt.update(g, state)
    return optax.apply_updates(params, updates), state, aux

  state = opt.init(params)
  for i in range(1500):
    params, state, aux = step(params, state, jax.random.PRNGKey(100 + i))
  q = np.asarray(params["quantiles"][:, 0, :])
  np.testing.assert_allclose(q[:, 1], mus, atol=0.25)
  # Quantiles sit where the learned cumulative reaches tail/2 and 1 - tail/2; the true N(mu, 2^2 + 1/12)
  # quantiles are mu -/+ 3.29 * 2.02: the learned density is close to it, so they land nearby.
  np.testing.assert_allclose(q[:, 2] - q[:, 1], 3.29 * 2.02, rtol=0.2)
  np.testing.assert_allclose(q[:, 1] - q[:, 0], 3.29 * 2.02, rtol=0.2)
  assert float(aux) < 0.5


def test_gaussian_conditional_matches_scipy():
  gc = GaussianConditional()
  key1, key2, key3 = jax.random.split(jax.random.PRNGKey(8), 3)
  y = jnp.round(jax.random.normal(key1, (500,)) * 5)
  scales = jnp.exp(jax.random.uniform(key2, (500,), minval=np.log(0.2), maxval=np.log(50)))
  means = jax.random.normal(key3, (500,))
  lik = gc.apply({}, y, scales, means, method="likelihood")
  yn, sn, mn = (np.asarray(a, np.float64) for a in (y, scales, means))
  ref = scipy.stats.norm.cdf(yn + 0.5, mn, sn) - scipy.stats.norm.cdf(yn - 0.5, mn, sn)
  ok = ref > 1e-6
  np.testing.assert_allclose(np.asarray(lik)[ok], ref[ok], rtol=2e-4)
  np.testing.assert_array_less(np.abs(np.asarray(lik)[~ok] - np.maximum(ref[~ok], 1e-9)), 2e-7)
  # Scales below the bound are clamped to it.
  np.testing.assert_allclose(gc.apply({}, y[:3], jnp.full(3, 0.01), method="likelihood"),
                             gc.apply({}, y[:3], jnp.full(3, 0.11), method="likelihood"))
  y_hat, lik2 = gc.apply({}, y + 0.3 + means, scales, means, training=False)
  np.testing.assert_allclose(y_hat, np.round(np.asarray(y) + 0.3) + np.asarray(means), atol=1e-5)


def test_scale_table_and_indexes():
  t = np.asarray(SCALE_TABLE)
  assert len(t) == 64 and np.isclose(t[0], 0.11) and np.isclose(t[-1], 256) and np.all(np.diff(t) > 0)
  scales = np.array([0.01, 0.11, 0.1101, 1.0, 255.0, 256.0, 1e4], np.float32)
  idx = build_indexes(scales, SCALE_TABLE)
  ref = np.minimum(np.searchsorted(t.astype(np.float32), scales, side="left"), 63)
  np.testing.assert_array_equal(idx, ref)
  assert np.all(t[idx] >= np.minimum(scales, t[-1]))
  np.testing.assert_array_equal(build_indexes(jnp.asarray(scales), SCALE_TABLE), idx)

"""ProxIQA models: shapes, likelihoods, determinism, and parameter counts against CompressAI's by formula."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.errors import ConfigError
from jaxcomp.methods.proxiqa import models

pytestmark = pytest.mark.usefixtures("fast_compile")  # tiny programs: compile without XLA optimisations


def _count(tree) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _conv(cin, cout, k):  # weights + bias
  return cin * cout * k * k + cout


def _gdn(c):  # beta + gamma
  return c + c * c


def _eb(c, filters=(3, 3, 3)):  # CompressAI EntropyBottleneck: matrices, biases, factors, quantiles
  dims = (1,) + filters + (1,)
  per = sum(dims[i] * dims[i + 1] + dims[i + 1] for i in range(len(dims) - 1)) + sum(filters) + 3
  return c * per


def _shapes(tree):
  return jax.eval_shape(lambda: tree)


@pytest.fixture(scope="module")
def x():
  return jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))


def test_bmshj2018_factorized_parameter_count_matches_compressai():
  # CompressAI bmshj2018_factorized(quality 1-5): N=128, M=192; counted from its layer list by hand.
  N, M = 128, 192
  g_a = _conv(3, N, 5) + 2 * _conv(N, N, 5) + _conv(N, M, 5) + 3 * _gdn(N)
  g_s = _conv(M, N, 5) + 2 * _conv(N, N, 5) + _conv(N, 3, 5) + 3 * _gdn(N)
  expected = g_a + g_s + _eb(M)
  assert expected == 2_995_267
  model = models.BLS(N=N, M=M, layout="bmshj2018")
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "noise": jax.random.key(1)},
                                                jnp.zeros((1, 64, 64, 3)), training=True))
  assert _count(variables["params"]) == expected
  assert _count(variables["params"]["g_a"]) == g_a and _count(variables["params"]["g_s"]) == g_s


def test_bmshj2018_hyperprior_parameter_count_matches_compressai():
  N, M = 128, 192
  g_a = _conv(3, N, 5) + 2 * _conv(N, N, 5) + _conv(N, M, 5) + 3 * _gdn(N)
  g_s = _conv(M, N, 5) + 2 * _conv(N, N, 5) + _conv(N, 3, 5) + 3 * _gdn(N)
  h_a = _conv(M, N, 3) + 2 * _conv(N, N, 5)
  h_s = 2 * _conv(N, N, 5) + _conv(N, M, 3)
  expected = g_a + g_s + h_a + h_s + _eb(N)
  assert expected == 5_073_923
  model = models.BMSHJ(N=N, M=M)
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "noise": jax.random.key(1)},
                                                jnp.zeros((1, 64, 64, 3)), training=True))
  assert _count(variables["params"]) == expected


def test_proxiqa_net_matches_fig4():
  net = models.ProxIQANet()
  params = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)), jnp.zeros((1, 128, 128, 3))))
  p = params["params"]
  chex.assert_shape(p["conv0"]["kernel"], (5, 5, 6, 16))
  chex.assert_shape(p["conv1"]["kernel"], (5, 5, 16, 32))
  chex.assert_shape(p["conv2"]["kernel"], (5, 5, 32, 64))
  chex.assert_shape(p["fc"]["kernel"], (16384, 1))  # "fc 16384 x 1" in Fig. 4
  out = net.apply(jax.tree.map(jnp.ones_like, params), jnp.zeros((3, 128, 128, 3)), jnp.ones((3, 128, 128, 3)))
  chex.assert_shape(out, (3,))


@pytest.mark.parametrize("name,layout,N,M", [("bls", "bls2017", 8, 8), ("bls", "bmshj2018", 8, 12),
                                             ("bmshj", "bmshj2018", 8, 12)])
def test_forward_shapes_likelihoods_rate_and_deterministic_eval(name, layout, N, M):
  model = models.build_model(name, N, M, layout)
  side = 64 if name == "bmshj" else 32  # the hyperprior needs sides divisible by 16 * 4
  x = jax.random.uniform(jax.random.key(0), (2, side, side, 3))
  rngs = {"params": jax.random.key(1), "noise": jax.random.key(2)}
  variables = model.init(rngs, x, training=True)
  f = models.downsampling_factor(layout)
  assert f == 16 and models.downsampling_factor(layout, hyperprior=True) == 64
  out = jax.jit(lambda v, x, k: model.apply(v, x, training=True, rngs={"noise": k}))(variables, x, jax.random.key(3))
  chex.assert_shape(out["x_hat"], x.shape)
  chex.assert_shape(out["likelihoods"]["y"], (2, side // f, side // f, M))
  if name == "bmshj":
    chex.assert_shape(out["likelihoods"]["z"], (2, side // f // 4, side // f // 4, N))
  for lik in out["likelihoods"].values():
    lik = np.asarray(lik)
    assert np.all(lik > 0) and np.all(lik <= 1)
  bits = sum(-np.sum(np.log2(np.asarray(l))) for l in out["likelihoods"].values())
  assert np.isfinite(bits) and bits > 0

  ev = jax.jit(lambda v, x: model.apply(v, x, training=False))
  a, b = ev(variables, x), ev(variables, x)
  chex.assert_trees_all_equal(a, b)  # no rng needed, identical outputs
  # the eval path rounds: y_hat is integer-valued around the medians, so its decoding is g_s(round(y - m) + m)
  y = model.apply(variables, x, method=type(model).analysis)
  if name == "bls":
    med = variables["params"]["entropy_bottleneck"]["quantiles"][:, 0, 1]
    x_ref = model.apply(variables, jnp.round(y - med) + med, method=type(model).synthesis)
    np.testing.assert_allclose(a["x_hat"], x_ref, atol=1e-5)
  # noisy training reconstructions differ from rounded ones
  assert not np.allclose(out["x_hat"], a["x_hat"])


def test_unknown_layout_or_model_is_a_config_error(x):
  with pytest.raises(ConfigError, match="layout"):
    models.BLS(N=4, M=4, layout="nope").init({"params": jax.random.key(0), "noise": jax.random.key(0)}, x,
                                               training=True)
  with pytest.raises(ConfigError, match="model"):
    models.build_model("vgg", 4, 4, "bls2017")

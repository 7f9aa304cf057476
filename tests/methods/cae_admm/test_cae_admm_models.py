"""The CAE-ADMM autoencoder: shapes and strides per configuration, the quantizer's train/eval behaviour (eq. 3-4),
BatchNorm modes and cross-device synchronisation, parameter count
against a hand count of the architecture."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import errors
from jaxcomp.methods.cae_admm import models

TINY = dict(latent_channels=4, stem_features=(4, 8, 8), num_res_blocks=1, down_features=(8, 6))


@pytest.fixture(scope="module")
def tiny():
  model = models.CAE(**TINY)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  variables = jax.jit(lambda x: model.init({"params": jax.random.key(1)}, x, train=False))(x)
  return model, variables, x


@pytest.fixture(scope="module")
def eval_fn(tiny):
  model = tiny[0]
  return jax.jit(lambda v, x, k: model.apply(v, x, train=False, rngs={"quantize": k}))


def test_shapes_and_output_range(tiny, eval_fn):
  model, variables, x = tiny
  out = eval_fn(variables, x, jax.random.key(0))
  chex.assert_shape(out["x_hat"], (2, 32, 32, 3))
  chex.assert_shape(out["z"], (2, 4, 4, 4))
  chex.assert_shape(out["z_hat"], (2, 4, 4, 4))
  assert out["likelihoods"] == {}
  assert float(out["x_hat"].min()) >= 0.0 and float(out["x_hat"].max()) <= 1.0
  assert set(variables) == {"params", "batch_stats"}
  assert {"g_a", "g_s"} <= set(variables["params"])


@pytest.mark.parametrize("strides,channels,expect_stride", [((1, 2, 1), 4, 8), ((2, 2, 2), 3, 32),
                                                             ((1, 1, 1), 5, 4)])
def test_stride_and_latent_size_follow_config(strides, channels, expect_stride):
  model = models.CAE(**{**TINY, "stem_strides": strides, "latent_channels": channels})
  assert model.stride == expect_stride
  x = jnp.zeros((1, 64, 32, 3))
  shapes = jax.eval_shape(lambda: model.init_with_output({"params": jax.random.key(0)}, x, train=False))
  out, _ = shapes
  chex.assert_shape(out["z"], (1, 64 // expect_stride, 32 // expect_stride, channels))
  chex.assert_shape(out["x_hat"], (1, 64, 32, 3))


def test_image_size_not_multiple_of_stride_is_a_clear_error(tiny):
  model, variables, _ = tiny
  with pytest.raises(errors.DataError, match="multiple of the model stride 8"):
    model.apply(variables, jnp.zeros((1, 36, 32, 3)), train=False)


def test_eval_mode_rounds_and_is_deterministic(tiny, eval_fn):
  model, variables, x = tiny
  out1 = eval_fn(variables, x, jax.random.key(0))
  out2 = eval_fn(variables, x, jax.random.key(9))
  np.testing.assert_array_equal(out1["z_hat"], np.round(np.asarray(out1["z"])))
  np.testing.assert_array_equal(out1["x_hat"], out2["x_hat"])
  # Eval BatchNorm uses running statistics: an example's output does not depend on the rest of the batch.
  single = eval_fn(variables, x[:1], jax.random.key(0))
  np.testing.assert_allclose(single["x_hat"], out1["x_hat"][:1], atol=1e-5)


def test_train_mode_stochastic_rounding_and_batch_stats(tiny):
  model, variables, x = tiny
  # Scale z up so that its fractional parts are spread out; BatchNorm makes z O(1) at init.
  apply = jax.jit(lambda v, k: model.apply(v, x, train=True, rngs={"quantize": k}, mutable=["batch_stats"]))
  out_a, upd = apply(variables, jax.random.key(3))
  out_b, _ = apply(variables, jax.random.key(4))
  z, za, zb = (np.asarray(a) for a in (out_a["z"], out_a["z_hat"], out_b["z_hat"]))
  np.testing.assert_array_equal(za, np.round(za))                       # integers
  assert np.all((za == np.floor(z)) | (za == np.floor(z) + 1))          # floor or ceil (eq. 3)
  assert np.any(za != zb)                                                # random across keys
  np.testing.assert_allclose(z, np.asarray(out_b["z"]), atol=1e-6)      # the encoder itself is deterministic
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), upd["batch_stats"], variables["batch_stats"])
  assert all(jax.tree.leaves(changed))


def test_stochastic_rounding_is_unbiased_and_has_identity_gradient(tiny):
  model, variables, x = tiny
  z = jax.jit(lambda v: model.apply(v, x, train=False, method="analysis"))(variables)
  keys = jax.random.split(jax.random.key(5), 2000)
  q = jax.jit(jax.vmap(lambda k: model.apply(variables, z, train=True, rngs={"quantize": k}, method="quantize")))(
      keys)
  # E[Q(z)] = z (eq. 4's premise); std of a Bernoulli mean over 2000 draws is <= 0.5/sqrt(2000) ~ 0.011.
  np.testing.assert_allclose(np.asarray(q.mean(0)), np.asarray(z), atol=0.06)
  w = jax.random.normal(jax.random.key(6), z.shape)
  g_q = jax.grad(lambda t: jnp.sum(w * model.apply(variables, t, train=True, rngs={"quantize": keys[0]},
                                                   method="quantize")))(z)
  np.testing.assert_array_equal(g_q, w)


def test_gradient_reaches_encoder_through_quantizer(tiny):
  model, variables, x = tiny

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x, train=True, rngs={"quantize": jax.random.key(7)},
                         mutable=["batch_stats"])
    return jnp.mean(jnp.square(out["x_hat"] - x)) + 1e-3 * jnp.sum(jnp.square(out["z_hat"]))

  grads = jax.jit(jax.grad(loss))(variables["params"])
  enc_norm = sum(float(jnp.sum(jnp.square(g))) for g in jax.tree.leaves(grads["g_a"]))
  assert np.isfinite(enc_norm) and enc_norm > 0


def test_remat_changes_memory_not_results(tiny):
  # Rematerialised residual blocks keep the parameter names (checkpoints interchangeable) and give the same loss,
  # gradients and BatchNorm updates; the remat path must really be taken (its jaxpr holds a checkpoint).
  model, variables, x = tiny
  remat = models.CAE(**TINY, remat=True)
  assert jax.tree.structure(jax.eval_shape(lambda: remat.init({"params": jax.random.key(1)}, x, train=False))) \
      == jax.tree.structure(variables)

  def loss(m, params):
    out, upd = m.apply({**variables, "params": params}, x, train=True, rngs={"quantize": jax.random.key(7)},
                       mutable=["batch_stats"])
    return jnp.mean(jnp.square(out["x_hat"] - x)) + 1e-3 * jnp.sum(jnp.square(out["z"])), upd

  grad = lambda m: jax.jit(jax.value_and_grad(lambda p: loss(m, p), has_aux=True))(variables["params"])
  (l0, u0), g0 = grad(model)
  (l1, u1), g1 = grad(remat)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  chex.assert_trees_all_close(g1, g0, rtol=1e-5, atol=1e-7)
  chex.assert_trees_all_close(u1, u0, rtol=1e-6, atol=1e-7)
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: loss(remat, p)[0]))(variables["params"]))
  assert "remat" in jaxpr or "checkpoint" in jaxpr


def test_batchnorm_statistics_synchronised_over_named_axis():
  # Under a named axis (as in the data-parallel step) the batch statistics are those of the global batch.
  kw = dict(latent_channels=2, stem_features=(4, 4, 4), num_res_blocks=0, down_features=(4, 4))
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
  single = models.CAE(**kw)
  variables = jax.jit(lambda x: single.init({"params": jax.random.key(1)}, x, train=False))(x)

  def run(model, v, xb):
    # Round instead of the stochastic quantizer: its draws depend on the per-device batch shape.
    def fwd(m, xb):
      z = m.analysis(xb, train=True)
      return z, m.synthesis(jnp.round(z), train=True)
    (z, x_hat), upd = model.apply(v, xb, method=fwd, mutable=["batch_stats"])
    return (z, x_hat), upd["batch_stats"]

  z_ref, stats_ref = jax.jit(lambda v, x: run(single, v, x))(variables, x)
  synced = models.CAE(**kw, bn_axis_name="batch")
  z_par, stats_par = jax.jit(jax.vmap(lambda xb: run(synced, variables, xb), axis_name="batch"))(
      x.reshape(2, 2, 16, 16, 3))
  for a, b in zip(z_par, z_ref):
    np.testing.assert_allclose(np.asarray(a).reshape(b.shape), b, atol=1e-4)
  for a, b in zip(jax.tree.leaves(stats_par), jax.tree.leaves(stats_ref)):
    np.testing.assert_allclose(a[0], b, atol=1e-5)
    np.testing.assert_allclose(a[1], b, atol=1e-5)


def _hand_count_default_params(c_lat: int) -> int:
  """Parameters of the default architecture, counted from the module docstring's layer list."""
  conv = lambda k, i, o: k * k * i * o  # no bias before BatchNorm  # noqa: E731
  bn = lambda o: 2 * o  # noqa: E731
  res = 3 * conv(1, 128, 128) - conv(1, 128, 128) + conv(3, 128, 128) + 3 * bn(128) + 3  # 1x1, 3x3, 1x1, 3 PReLU
  enc = (conv(3, 3, 32) + bn(32) + 1 + conv(5, 32, 64) + bn(64) + 1 + conv(3, 64, 128) + bn(128) + 1
         + 15 * res + conv(5, 128, 64) + bn(64) + conv(5, 64, 32) + bn(32) + conv(3, 32, c_lat) + bn(c_lat))
  sub = lambda i, o, r: conv(1, i, r * r * o) + bn(r * r * o)  # noqa: E731
  dec = (sub(c_lat, 32, 1) + sub(32, 64, 2) + sub(64, 128, 2) + 1 + 15 * res
         + sub(128, 64, 1) + 1 + sub(64, 32, 2) + 1 + sub(32, 3, 1))
  return enc + dec


def test_default_architecture_parameter_count():
  model = models.CAE(latent_channels=32)
  assert model.stride == 8
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 3))))
  n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))
  assert n == _hand_count_default_params(32)

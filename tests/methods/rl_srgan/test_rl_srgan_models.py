"""RL-SRGAN networks (Savioli, Sec. 2.1): generator shapes at r = 2 and 4 on odd sizes, architecture pinned by
parameter counts from hand-counted layer lists, BatchNorm synchronised over a named axis (train) and batch
independent (eval), the actor-critic heads, the discriminator."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import errors
from jaxcomp.methods.rl_srgan import models

pytestmark = pytest.mark.usefixtures("fast_compile")

TINY = dict(features=8, num_res_blocks=1)


@pytest.fixture(scope="module", autouse=True)
def _fast_threefry_compile():
  # Compiling jax.random.normal with partitionable threefry costs seconds on XLA:CPU (tests/methods/cae_admm).
  with jax.threefry_partitionable(False):
    yield


def _n_params(tree) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("scale,lr,hr", [(4, (7, 5), (28, 20)), (2, (5, 9), (10, 18))])
def test_generator_shapes_on_odd_sizes(scale, lr, hr):
  model = models.Generator(**TINY, scale=scale)
  x = jnp.zeros((2, *lr, 3))
  out, variables = jax.eval_shape(lambda: model.init_with_output({"params": jax.random.key(0)}, x, train=False))
  chex.assert_shape(out["x_hat"], (2, *hr, 3))
  chex.assert_shape(out["latent"], (2, *lr, 8))
  assert set(variables) == {"params", "batch_stats"}
  assert set(variables["params"]) == {"encoder", "decoder"}
  latent = jax.eval_shape(lambda v: model.apply(v, x, train=False, method="encode"), variables)
  chex.assert_shape(latent, (2, *lr, 8))


def test_generator_real_forward_and_entry_points():
  model = models.Generator(**TINY, scale=2)
  x = jax.random.uniform(jax.random.key(0), (2, 5, 7, 3))
  variables = jax.jit(lambda x: model.init({"params": jax.random.key(1)}, x, train=False))(x)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  latent = jax.jit(lambda v, x: model.apply(v, x, train=False, method="encode"))(variables, x)
  x_hat = jax.jit(lambda v, z: model.apply(v, z, method="decode"))(variables, latent)
  np.testing.assert_allclose(out["latent"], latent, atol=1e-6)
  np.testing.assert_allclose(out["x_hat"], x_hat, atol=1e-6)
  assert np.all(np.isfinite(out["x_hat"]))


@pytest.mark.parametrize("scale", [3, 1, 6, 0])
def test_scale_not_power_of_two_is_config_error(scale):
  with pytest.raises(errors.ConfigError, match=f"r={scale} must be a power of 2"):
    models.Generator(scale=scale)


def test_wrong_channel_count_is_data_error():
  with pytest.raises(errors.DataError, match=r"\[B, H, W, 3\]"):
    jax.eval_shape(lambda: models.Generator(**TINY).init(jax.random.key(0), jnp.zeros((1, 8, 8, 4)), train=False))


def test_generator_default_parameter_count():
  # Hand count of Sec. 2.1.1-2.1.2 / SRGAN: convs feeding BN have no bias, one PReLU slope per layer.
  f, c = 64, 3
  conv = lambda k, i, o, bias=True: k * k * i * o + (o if bias else 0)  # noqa: E731
  bn, prelu = 2 * f, 1
  head = conv(9, c, f) + prelu
  res_block = 2 * (conv(3, f, f, bias=False) + bn) + prelu
  tail = conv(3, f, f, bias=False) + bn
  upsample = conv(3, f, 4 * f) + prelu                        # conv 3x3 to 256, pixel shuffle, PReLU
  out = conv(9, f, c)
  expected = head + 5 * res_block + tail + 2 * upsample + out  # r = 4: two x2 stages
  assert expected == 733_515
  model = models.Generator()
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, 8, 8, 3)), train=False))
  assert _n_params(shapes["params"]) == expected
  assert _n_params(shapes["batch_stats"]) == 2 * (5 * 2 + 1) * f  # mean, var of 11 BatchNorms
  assert _n_params(shapes["params"]["decoder"]) == 2 * upsample + out


def _bn_sync_check(make, x, apply_kwargs):
  """Applying under vmap(axis_name="batch") with bn_axis_name="batch" equals one device on the whole batch."""
  single = make(None)
  variables = jax.jit(lambda x: single.init({"params": jax.random.key(1)}, x, train=False))(x)
  run = lambda m, xb: m.apply(variables, xb, train=True, mutable=["batch_stats"], **apply_kwargs)  # noqa: E731
  out_ref, upd_ref = jax.jit(lambda x: run(single, x))(x)
  synced = make("batch")
  out_par, upd_par = jax.jit(jax.vmap(lambda xb: run(synced, xb), axis_name="batch"))(
      x.reshape(2, x.shape[0] // 2, *x.shape[1:]))
  for a, b in zip(jax.tree.leaves(out_par), jax.tree.leaves(out_ref)):
    np.testing.assert_allclose(np.asarray(a).reshape(b.shape), b, atol=1e-4)
  for a, b in zip(jax.tree.leaves(upd_par), jax.tree.leaves(upd_ref)):
    np.testing.assert_allclose(a[0], b, atol=1e-5)
    np.testing.assert_allclose(a[1], b, atol=1e-5)
  # Without the named axis the per-device statistics differ (the check above is not vacuous).
  out_local, _ = jax.jit(jax.vmap(lambda xb: run(single, xb)))(x.reshape(2, x.shape[0] // 2, *x.shape[1:]))
  a, b = jax.tree.leaves(out_local)[0], jax.tree.leaves(out_ref)[0]
  assert not np.allclose(np.asarray(a).reshape(b.shape), b, atol=1e-3)
  return single, variables


def test_generator_batchnorm_synchronised_over_named_axis_and_eval_independent_of_batch():
  x = jax.random.uniform(jax.random.key(0), (4, 6, 5, 3)) * jnp.arange(1, 5).reshape(4, 1, 1, 1)
  make = lambda axis: models.Generator(features=4, num_res_blocks=1, scale=2, bn_axis_name=axis)  # noqa: E731
  model, variables = _bn_sync_check(make, x, {})
  # Eval mode: running averages, so an image's output does not depend on the rest of its batch.
  apply = jax.jit(lambda x: model.apply(variables, x, train=False))
  full, first = apply(x), apply(x[:1])
  np.testing.assert_allclose(first["x_hat"], full["x_hat"][:1], atol=1e-5)
  np.testing.assert_allclose(first["latent"], full["latent"][:1], atol=1e-5)


def test_discriminator_batchnorm_synchronised_over_named_axis():
  x = jax.random.uniform(jax.random.key(2), (4, 16, 16, 3)) * jnp.arange(1, 5).reshape(4, 1, 1, 1)
  _bn_sync_check(lambda axis: models.Discriminator(features=2, dense_features=8, bn_axis_name=axis), x, {})


def test_actor_critic_shapes_clamp_and_gradient_to_encoder():
  gen = models.Generator(**TINY, scale=2)
  heads = models.ActorCritic(hidden=16)
  x = jax.random.uniform(jax.random.key(0), (3, 5, 7, 3))
  g_vars = jax.jit(lambda x: gen.init({"params": jax.random.key(1)}, x, train=False))(x)
  latent = jax.jit(lambda v, x: gen.apply(v, x, train=False, method="encode"))(g_vars, x)
  h_vars = jax.jit(lambda z: heads.init({"params": jax.random.key(2)}, z))(latent)
  apply_heads = jax.jit(heads.apply)
  out = apply_heads(h_vars, latent)
  assert set(out) == {"mean", "log_std", "value"}
  for v in out.values():
    chex.assert_shape(v, (3,))
  # Initial action near mean_bias_init (20 dB in units of PSNR_UNIT_DB = 10 dB).
  assert np.all(np.abs(np.asarray(out["mean"]) - 2.0) < 1.0)

  # log_std is clamped to [-5, 2]: push its head's bias far out of range both ways.
  for bias, bound in ((100.0, 2.0), (-100.0, -5.0)):
    p = jax.tree.map(lambda a: a, h_vars)
    p["params"]["log_std"]["bias"] = jnp.full((1,), bias)
    np.testing.assert_array_equal(apply_heads(p, latent)["log_std"], np.full(3, bound, np.float32))

  # The policy gradient (eq. 9) reaches the encoder's parameters through the latent.
  def policy_objective(g_params):
    z, _ = gen.apply({**g_vars, "params": g_params}, x, train=True, method="encode", mutable=["batch_stats"])
    o = heads.apply(h_vars, z)
    action = jnp.full((3,), 2.2)
    log_prob = -0.5 * jnp.square((action - o["mean"]) / jnp.exp(o["log_std"])) - o["log_std"]
    return jnp.sum(log_prob) + jnp.sum(jnp.square(o["value"]))

  grads = jax.jit(jax.grad(policy_objective))(g_vars["params"])
  enc = sum(float(jnp.sum(jnp.square(g))) for g in jax.tree.leaves(grads["encoder"]))
  assert np.isfinite(enc) and enc > 0
  assert all(float(jnp.sum(jnp.abs(g))) == 0 for g in jax.tree.leaves(grads["decoder"]))
  g_latent = jax.jit(jax.grad(lambda z: jnp.sum(heads.apply(h_vars, z)["mean"])))(latent)
  chex.assert_shape(g_latent, latent.shape)
  assert float(jnp.sum(jnp.abs(g_latent))) > 0


def test_actor_critic_parameter_count():
  f, hidden = 64, 256
  expected = (f * hidden + hidden) + 3 * (hidden + 1)
  shapes = jax.eval_shape(lambda: models.ActorCritic().init(jax.random.key(0), jnp.zeros((1, 3, 3, f))))
  assert _n_params(shapes["params"]) == expected
  assert set(shapes["params"]) == {"hidden", "mean", "log_std", "value"}


@pytest.mark.parametrize("size", [(16, 16), (24, 40)])
def test_discriminator_logits_shape(size):
  model = models.Discriminator(features=2, dense_features=8)
  x = jax.random.uniform(jax.random.key(0), (3, *size, 3))

  @jax.jit
  def run(x):
    variables = model.init({"params": jax.random.key(1)}, x, train=False)
    return model.apply(variables, x, train=False), model.apply(variables, x, train=True, mutable=["batch_stats"])

  logits, (logits_train, upd) = run(x)
  chex.assert_shape(logits, (3,))
  chex.assert_shape(logits_train, (3,))
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(logits_train))
  assert set(upd) == {"batch_stats"}


def test_discriminator_default_parameter_count():
  conv = lambda i, o, bias: 9 * i * o + (o if bias else 0)  # noqa: E731
  widths = [64 * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
  expected = conv(3, widths[0], True)
  for c_in, c_out in zip(widths[:-1], widths[1:]):
    expected += conv(c_in, c_out, False) + 2 * c_out   # conv (no bias before BN) + BN scale, bias
  expected += (512 * 1024 + 1024) + (1024 + 1)        # Dense 1024, Dense 1
  assert expected == 5_213_569
  model = models.Discriminator()
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, 32, 32, 3)), train=False))
  assert _n_params(shapes["params"]) == expected


def test_residual_generator_starts_at_the_bicubic_upsampling():
  """`residual=True` (not the paper's form): an untrained generator returns bicubic_r(x) exactly."""
  gen = models.Generator(features=8, num_res_blocks=1, scale=4, residual=True)
  x = jax.random.uniform(jax.random.key(0), (2, 5, 7, 3))
  variables = gen.init(jax.random.key(1), x, train=False)
  out = gen.apply(variables, x, train=False)["x_hat"]
  np.testing.assert_allclose(out, jax.image.resize(x, (2, 20, 28, 3), "bicubic"), atol=1e-6)
  assert not np.allclose(models.Generator(features=8, num_res_blocks=1, scale=4).apply(
      variables, x, train=False)["x_hat"], out, atol=1e-3)  # the paper's form does not

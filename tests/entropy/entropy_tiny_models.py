"""Tiny CompressAI-style models for the codec tests (a couple of strided convs; not methods of the project)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcomp.entropy import EntropyBottleneck, GaussianConditional, rate_bits


class TinyFactorized(nn.Module):
  """x [B, H, W, C] -> y [B, H/4, W/4, M] -> factorized prior -> x_hat.

  `gain` spreads the latents of the untrained transforms over many integers (so coding is exercised beyond 0/1).
  """
  M: int = 6
  channels: int = 3
  gain: float = 20.0

  def setup(self):
    self.g_a = nn.Sequential([nn.Conv(8, (3, 3), strides=2), nn.relu, nn.Conv(self.M, (3, 3), strides=2)])
    self.g_s = nn.Sequential([nn.ConvTranspose(8, (3, 3), strides=(2, 2)), nn.relu,
                              nn.ConvTranspose(self.channels, (3, 3), strides=(2, 2))])
    self.entropy_bottleneck = EntropyBottleneck(channels=self.M)

  def analysis(self, x):
    return self.g_a(x) * self.gain

  def __call__(self, x, *, training: bool = False):
    y = self.analysis(x)
    y_hat, y_lik = self.entropy_bottleneck(y, training=training)
    return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_lik}}

  def aux_loss(self):
    return self.entropy_bottleneck.aux_loss()


class TinyHyperprior(nn.Module):
  """Scale hyperprior (Ballé et al. 2018): y [H/4, W/4, M] with scales from z [H/8, W/8, N]."""
  M: int = 6
  N: int = 4
  channels: int = 3

  def setup(self):
    big = nn.initializers.variance_scaling(400.0, "fan_in", "normal")  # latents spread over many integers
    self.g_a = nn.Sequential([nn.Conv(8, (3, 3), strides=2), nn.relu,
                              nn.Conv(self.M, (3, 3), strides=2, kernel_init=big)])
    self.g_s = nn.Sequential([nn.ConvTranspose(8, (3, 3), strides=(2, 2)), nn.relu,
                              nn.ConvTranspose(self.channels, (3, 3), strides=(2, 2))])
    self.h_a = nn.Conv(self.N, (3, 3), strides=2)
    self.h_s = nn.ConvTranspose(self.M, (3, 3), strides=(2, 2))
    self.entropy_bottleneck = EntropyBottleneck(channels=self.N)
    self.gaussian_conditional = GaussianConditional()

  def hyper_analysis(self, y):
    return self.h_a(jnp.abs(y))

  def hyper_synthesis(self, z_hat):
    return jnp.exp(self.h_s(z_hat))

  def __call__(self, x, *, training: bool = False):
    y = self.g_a(x)
    z = self.hyper_analysis(y)
    z_hat, z_lik = self.entropy_bottleneck(z, training=training)
    scales = self.hyper_synthesis(z_hat)
    y_hat, y_lik = self.gaussian_conditional(y, scales, training=training)
    return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_lik, "z": z_lik}}

  def aux_loss(self):
    return self.entropy_bottleneck.aux_loss()


def smooth_images(key, n: int, size: int = 32, channels: int = 3) -> jax.Array:
  """Random smooth images in [0, 1]: sums of a few random sinusoids."""
  k1, k2, k3 = jax.random.split(key, 3)
  yy, xx = jnp.meshgrid(jnp.linspace(0, 1, size), jnp.linspace(0, 1, size), indexing="ij")
  freqs = jax.random.uniform(k1, (n, 3, 2, channels), minval=0.5, maxval=4.0)
  phases = jax.random.uniform(k2, (n, 3, 1, 1, channels), maxval=6.28)
  amps = jax.random.uniform(k3, (n, 3, 1, 1, channels), minval=0.05, maxval=0.2)
  waves = amps * jnp.sin(6.28 * (freqs[:, :, None, None, 0] * yy[None, None, :, :, None]
                                 + freqs[:, :, None, None, 1] * xx[None, None, :, :, None]) + phases)
  return jnp.clip(0.5 + waves.sum(1), 0.0, 1.0)


def fit_entropy_models(model: nn.Module, steps: int, seed: int = 0, size: int = 32, batch: int = 4):
  """Init params, then fit only the entropy models to the model's own latents by minimising the rate + aux loss.

  g_a and g_s stay at their init (no gradient reaches their kernels, which keeps this cheap on CPU); the
  bottleneck (and for the hyperprior h_a, h_s) end up matched to real latents, as after training.
  """
  fit = ("entropy_bottleneck", "h_a", "h_s")
  key = jax.random.PRNGKey(seed)
  x = smooth_images(key, batch, size, model.channels)
  variables = model.init(jax.random.PRNGKey(seed + 1), x[:1])
  params = variables["params"]
  opt = optax.adam(5e-2)

  def loss_fn(sub, k):
    p = {**params, **sub}
    out = model.apply({"params": p}, x, training=True, rngs={"noise": k})
    rate = sum(rate_bits(l) for l in out["likelihoods"].values())
    return rate / batch + model.apply({"params": p}, method="aux_loss")

  @jax.jit
  def run(eb):
    state = opt.init(eb)

    def body(i, carry):
      eb, state = carry
      g = jax.grad(loss_fn)(eb, jax.random.fold_in(key, i))
      updates, state = opt.update(g, state)
      return optax.apply_updates(eb, updates), state

    return jax.lax.fori_loop(0, steps, body, (eb, state))[0]

  return {"params": {**params, **run({k: v for k, v in params.items() if k in fit})}}


def make_image(seed: int, h: int, w: int, channels: int = 3) -> np.ndarray:
  """A smooth uint8 test image of arbitrary size (not a multiple of the stride)."""
  x = smooth_images(jax.random.PRNGKey(seed), 1, max(h, w), channels)[0, :h, :w]
  return np.asarray(jnp.round(x * 255), np.uint8)

"""Networks of RL-SRGAN (Savioli, "A hybrid approach between adversarial generative networks and actor-critic policy
gradient for low rate high-resolution image compression", CLIC 2019, Sec. 2.1 and 2.2).

The codec sends a JPEG of the image bicubic-downsampled by r; the generator H = decoder(encoder(.)) restores the HR
image (Sec. 2.1). The encoder's features are also the input of the actor-critic heads (Sec. 2.1.1, 2.2.2), and a
discriminator D drives the adversarial loss (Sec. 2.1.3, eq. 1). The paper gives only the outline below; the rest
follows SRGAN (Ledig et al. 2017, Fig. 4), which it modifies:

  encoder:  conv 9x9/64 + PReLU -> e1;  5 x [conv 3x3/64, BN, PReLU, conv 3x3/64, BN, + skip];  conv 3x3/64, BN,
            + e1 (SRGAN's long skip) -> latent [B, h, w, 64]
  decoder:  log2(r) x [conv 3x3 to 64*4, pixel shuffle x2, PReLU];  conv 9x9 to C -> x_hat [B, r h, r w, C]
  D:        conv 3x3/64 + LReLU(0.2);  7 x [conv 3x3, BN, LReLU(0.2)] with (stride, width) = (2, 64), (1, 128),
            (2, 128), (1, 256), (2, 256), (1, 512), (2, 512);  global average pool, Dense 1024, LReLU(0.2), Dense 1

Choices the paper leaves open, made here:
- "the decoder ... with eight subpixel layers" (Sec. 2.1.2) cannot be SRGAN's layout at any of the paper's
  factors (each SRGAN sub-pixel stage doubles the size, so eight would be r = 256); the decoder has log2(r)
  stages, SRGAN's rule, so the output is exactly r times the JPEG's size.
- Convolutions that feed a BatchNorm have no bias (it would be cancelled by the mean subtraction); the others do.
  Weights use flax's default initialisers; PReLU slopes start at 0.25 (one slope per layer, as PyTorch's
  `nn.PReLU()` that SRGAN implementations use).
- D's dense head: SRGAN flattens a fixed 96x96 crop; our images vary in size, so D averages over space first
  (the same global pooling as the actor-critic heads).

BatchNorm: `bn_axis_name` = `jaxcomp.parallel.AXIS` inside the data-parallel step makes the batch statistics those
of the global batch; None for single-device use and evaluation. Flax momentum 0.9 = PyTorch momentum 0.1.
Train/eval mode is the `train` call argument: training normalises with the batch statistics and updates
`batch_stats` (pass `mutable=["batch_stats"]`), eval uses the running averages, so an image's output does not depend
on the rest of its batch.
"""

from __future__ import annotations

import numbers

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp import nn as nn_layers
from jaxcomp.errors import ConfigError, DataError

PSNR_UNIT_DB = 10.0
"""`ActorCritic`'s action is the predicted PSNR in units of 10 dB (2.2 = 22 dB): O(1) targets for the Gaussian."""


def upsampling_stages(scale: int) -> int:
  """log2(scale): the number of x2 sub-pixel stages of the decoder; `scale` must be a power of 2 (2, 4, 8, ...)."""
  if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or scale < 2 or int(scale) & (int(scale) - 1):
    raise ConfigError(f"RL-SRGAN scale r={scale!r} must be a power of 2 (2, 4, 8): the decoder doubles per stage")
  return int(scale).bit_length() - 1


def _batch_norm(train: bool, axis_name: str | None) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=axis_name)


def _prelu() -> nn.PReLU:
  return nn.PReLU(negative_slope_init=0.25)  # SRGAN's (PyTorch's) initial slope; flax's default is 0.01


def _check_image(x_BHWC: jax.Array, channels: int, what: str) -> None:
  if x_BHWC.ndim != 4 or x_BHWC.shape[-1] != channels:
    raise DataError(f"{what} expects images [B, H, W, {channels}], got shape {tuple(x_BHWC.shape)}")


class ResidualBlock(nn.Module):
  """SRGAN residual block (Sec. 2.1.1): conv 3x3, BN, PReLU, conv 3x3, BN, plus the identity; no activation after."""

  features: int = 64
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x_BHWF: jax.Array, train: bool) -> jax.Array:
    h = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(x_BHWF)
    h = _prelu()(_batch_norm(train, self.bn_axis_name)(h))
    h = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(h)
    return x_BHWF + _batch_norm(train, self.bn_axis_name)(h)


class Encoder(nn.Module):
  """The encoder of Sec. 2.1.1 (SRGAN's generator up to its upsampling): LR image [B, h, w, C] -> latent [B, h, w, F].

  The latent is both the decoder's input and the policy's state (Sec. 2.2.2: "the latent space between the encoder
  and the fully connected layer is the same").
  """

  features: int = 64
  num_res_blocks: int = 5
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x_BhwC: jax.Array, train: bool) -> jax.Array:
    e1 = _prelu()(nn.Conv(self.features, (9, 9), padding="SAME")(x_BhwC))
    h = e1
    for i in range(self.num_res_blocks):
      h = ResidualBlock(self.features, self.bn_axis_name, name=f"ResidualBlock_{i}")(h, train)
    h = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(h)
    return _batch_norm(train, self.bn_axis_name)(h) + e1


class Decoder(nn.Module):
  """The decoder of Sec. 2.1.2: log2(r) sub-pixel x2 stages (Shi et al. 2016) and a 9x9 conv to C channels.

  latent [B, h, w, F] -> x_hat [B, r h, r w, C], not clipped. No BatchNorm (SRGAN has none after the residual part).
  """

  features: int = 64
  scale: int = 4
  channels: int = 3
  zero_output: bool = False

  @nn.compact
  def __call__(self, latent_BhwF: jax.Array) -> jax.Array:
    h = latent_BhwF
    for i in range(upsampling_stages(self.scale)):
      # Sub-pixel instead of a transposed conv: same output size, and fast to differentiate on XLA:CPU.
      h = nn.Conv(self.features * 4, (3, 3), padding="SAME", name=f"upsample_{i}")(h)
      h = _prelu()(nn_layers.depth_to_space(h, 2))
    init = nn.initializers.zeros if self.zero_output else nn.linear.default_kernel_init
    return nn.Conv(self.channels, (9, 9), padding="SAME", kernel_init=init, name="output")(h)


class Generator(nn.Module):
  """The generator H = decoder(encoder(.)) of RL-SRGAN (Savioli, Sec. 2.1; SRGAN's layout, Ledig et al. 2017).

  `apply(variables, x_BhwC, train)` with the LR image in [0, 1] (float) returns
  `{"x_hat": [B, r h, r w, C] (not clipped), "latent": [B, h, w, features] (the encoder output)}`; any h, w.
  Other entry points (`method=`): `encode(x, train)` -> latent (the policy's input), `decode(latent)` -> x_hat.
  Parameters: `{"encoder": ..., "decoder": ...}`; state: `batch_stats` (encoder only).

  Attributes:
    features: width of every encoder / decoder layer (64).
    num_res_blocks: residual blocks of the encoder (5, Sec. 2.1.1; SRGAN has 16).
    scale: the down-sampling factor r of the codec, a power of 2.
    channels: C, image channels (3).
    bn_axis_name: named axis for cross-device BatchNorm statistics (`jaxcomp.parallel.AXIS`) or None.
    residual: not in the paper (off by default): the network predicts a correction to the bicubic upsampling of
      its input, x_hat = bicubic_r(x) + decoder(encoder(x)), with the decoder's last layer starting at zero, so
      an untrained generator already returns the bicubic upsampling instead of noise (the iterative decoder's
      `predict a correction` idea, issue 17; docs/rl_srgan.md measures both forms).
  """

  features: int = 64
  num_res_blocks: int = 5
  scale: int = 4
  channels: int = 3
  bn_axis_name: str | None = None
  residual: bool = False

  def __post_init__(self):
    upsampling_stages(self.scale)  # a bad r is a config error at construction, not at the first apply
    super().__post_init__()

  def setup(self):
    self.encoder = Encoder(self.features, self.num_res_blocks, self.bn_axis_name)
    self.decoder = Decoder(self.features, self.scale, self.channels, zero_output=self.residual)

  def __call__(self, x_BhwC: jax.Array, train: bool) -> dict:
    latent = self.encode(x_BhwC, train)
    x_hat = self.decoder(latent)
    if self.residual:
      b, h, w, c = x_BhwC.shape
      x_hat = x_hat + jax.image.resize(x_BhwC, (b, h * self.scale, w * self.scale, c), "bicubic")
    return {"x_hat": x_hat, "latent": latent}

  def encode(self, x_BhwC: jax.Array, train: bool) -> jax.Array:
    """The encoder alone: LR image [B, h, w, C] -> latent [B, h, w, features]."""
    _check_image(x_BhwC, self.channels, "RL-SRGAN generator")
    return self.encoder(x_BhwC, train)

  def decode(self, latent_BhwF: jax.Array) -> jax.Array:
    """The decoder alone: latent [B, h, w, features] -> x_hat [B, r h, r w, C], not clipped."""
    return self.decoder(latent_BhwF)


class ActorCritic(nn.Module):
  """Actor-critic heads on the encoder's latent (Savioli, Sec. 2.1.1 "joint with a fully connected layer", 2.2.2).

  The actor is a Gaussian policy pi(PSNR_pred | I_LR) over the predicted PSNR (the action, eq. 9-10), the critic the
  value V(I_LR), the baseline of the advantage R(i) - V (eq. 10-11). The encoder plus these heads is the policy
  network, so the policy gradient of eq. 9 reaches the encoder's parameters through `latent`.

  latent [B, h, w, F] -> global average pool [B, F] -> Dense(hidden) + ReLU -> three Dense(1) heads. The pooling is
  our choice (the paper does not say how its fully connected layer meets the latent): a dense layer needs a
  fixed-size input, and the LR images vary in size; the mean over positions also keeps the head small.

  Scales: the action is PSNR / `PSNR_UNIT_DB` (units of 10 dB), so `mean` starts at `mean_bias_init` (2.0 = 20 dB,
  about the paper's Table 1 PSNRs) and the initial std exp(0) = 1 (10 dB) explores the whole plausible range.
  `log_std` is clipped to [log_std_min, log_std_max] (default [-5, 2]: std 0.067 dB to 74 dB) so the Gaussian's
  log-density stays finite; the clip has no gradient outside the range. `value` starts near 0: the return of
  eq. 7 sums rewards in {0, 1} (eq. 5), so it lies in [0, 1 / (1 - gamma)].

  `apply(variables, latent)` returns `{"mean": [B], "log_std": [B], "value": [B]}`.
  """

  hidden: int = 256
  mean_bias_init: float = 2.0
  log_std_min: float = -5.0
  log_std_max: float = 2.0

  @nn.compact
  def __call__(self, latent_BhwF: jax.Array) -> dict:
    if latent_BhwF.ndim != 4:
      raise DataError(f"ActorCritic expects a latent [B, h, w, F], got shape {tuple(latent_BhwF.shape)}")
    h = jnp.mean(latent_BhwF, axis=(1, 2))
    h = nn.relu(nn.Dense(self.hidden, name="hidden")(h))
    mean = nn.Dense(1, bias_init=nn.initializers.constant(self.mean_bias_init), name="mean")(h)[:, 0]
    log_std = nn.Dense(1, name="log_std")(h)[:, 0]
    value = nn.Dense(1, name="value")(h)[:, 0]
    return {"mean": mean, "log_std": jnp.clip(log_std, self.log_std_min, self.log_std_max), "value": value}


class Discriminator(nn.Module):
  """The discriminator D of RL-SRGAN (Savioli, Sec. 2.1.3, eq. 1): "a VGG network with LeakyReLU activation
  (alpha = 0.2) without maxpooling" — SRGAN's D (Ledig et al. 2017, Fig. 4), whose strided convs replace pooling.

  conv 3x3/1 w0 + LReLU, then 7 x (conv 3x3, BN, LReLU) with strides (2, 1, 2, 1, 2, 1, 2) and widths w1..w7, where
  (w0..w7) = features * (1, 1, 2, 2, 4, 4, 8, 8); global average pool (images vary in size; SRGAN flattened a fixed
  96x96 crop), Dense(dense_features) + LReLU, Dense(1).

  `apply(variables, x_BHWC, train)` returns the logits [B] (D = sigmoid(logits); eq. 1 is computed on logits).

  Attributes:
    features: base width (64); tiny values for tests.
    dense_features: width of the hidden dense layer (1024).
    bn_axis_name: named axis for cross-device BatchNorm statistics, as `Generator`.
  """

  features: int = 64
  dense_features: int = 1024
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool) -> jax.Array:
    if x_BHWC.ndim != 4:
      raise DataError(f"RL-SRGAN discriminator expects images [B, H, W, C], got shape {tuple(x_BHWC.shape)}")
    lrelu = lambda t: nn.leaky_relu(t, 0.2)  # noqa: E731
    h = lrelu(nn.Conv(self.features, (3, 3), padding="SAME")(x_BHWC))
    for mult, stride in zip((1, 2, 2, 4, 4, 8, 8), (2, 1, 2, 1, 2, 1, 2)):
      h = nn.Conv(self.features * mult, (3, 3), strides=stride, padding="SAME", use_bias=False)(h)
      h = lrelu(_batch_norm(train, self.bn_axis_name)(h))
    h = jnp.mean(h, axis=(1, 2))
    h = lrelu(nn.Dense(self.dense_features)(h))
    return nn.Dense(1)(h)[:, 0]

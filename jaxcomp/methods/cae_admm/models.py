"""The CAE-ADMM compressive autoencoder (Zhao & Liao 2019, Sections 3.1 and 4.1; base model Theis et al. 2017).

  z = E(x) = g_a(x),   z_hat = Q(z),   x_hat = D(z_hat) = g_s(z_hat)            (eq. 1)

Q is the stochastic rounding of Theis et al. (eq. 3: floor(t) + eps, P(eps = 1) = t - floor(t)) with the gradient
of its expectation, 1 (eq. 4), while training, and plain rounding at test time. There is no entropy model: the rate
is controlled by the cardinality of z_hat through ADMM pruning (`admm.py`), and the real rate of a file comes from
a static per-channel table fitted after training (`train.py`).

Architecture (Section 4.1: "down-sampled by three blocks with each containing a convolutional layer, a batch
normalization layer and a PReLU layer. Following 15 residual blocks, two more down-sampling convolutional blocks with
the last convolutional block are applied, generating z"; the decoder mirrors it with sub-pixel convolutions, Shi et
al. 2016). The text gives no kernel sizes, widths or strides and its Fig. 1 is not in our copy, so the defaults
follow the authors' released PyTorch model (github.com/JasonZHM/CAE-ADMM, `CAE_ADMM/model.py`), which is consistent
with the paper's figures (a stride-8 latent of 32 channels is 0.5 symbols per pixel; at ~3.4 bits each that is the
1.68 bpp of Table 1 before pruning; a stride-32 latent could not reach it):

  g_a: conv3x3/1 32 + BN + PReLU, conv5x5/2 64 + BN + PReLU, conv3x3/1 128 + BN + PReLU   (of the three opening
       blocks only the middle one strides in the authors' model; "down-sampled by three blocks" is read as a group)
       15 x bottleneck residual block at 128 (1x1, 3x3, 1x1 convs, each + BN, PReLU; last BN scale starts at 0)
       conv5x5/2 64 + BN, conv5x5/2 32 + BN                                                (no activation, as theirs)
       conv3x3/1 C + BN -> z                               (C = `latent_channels` sets the bpp range, Section 4.2)
  g_s: subpix(C -> 32, x1), subpix(32 -> 64, x2), subpix(64 -> 128, x2) + PReLU
       15 x bottleneck residual block at 128
       subpix(128 -> 64, x1) + PReLU, subpix(64 -> 32, x2) + PReLU, subpix(32 -> 3, x1), (tanh + 1) / 2
  where subpix(a -> b, xr) = conv kxk (k = `subpix_kernel`, 1 in the authors' model) to r^2 b channels, BN, pixel
  shuffle by r (`jaxcomp.nn.depth_to_space`, PyTorch channel order). Encoder convolutions use reflection padding
  (Theis et al.'s mirror padding); convolutions feeding a BatchNorm have no bias. Weights use He-normal (fan-out)
  initialisation, as the authors'.

BatchNorm: `bn_axis_name` = `jaxcomp.parallel.AXIS` inside the data-parallel step synchronises the batch statistics
across devices (the global batch of 32 is what the paper normalises over); None for single-device use.
Flax momentum 0.9 = PyTorch momentum 0.1, the authors' default.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp import errors
from jaxcomp import nn as nn_layers
from jaxcomp.entropy import quantizers

_HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # untruncated, as torch kaiming_normal_


class ConvBN(nn.Module):
  """Convolution (reflection padded, no bias) + BatchNorm + optional PReLU: one block of Section 4.1."""

  features: int
  kernel_size: int
  strides: int = 1
  activation: bool = True
  reflect: bool = True
  zero_scale: bool = False
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool) -> jax.Array:
    k = self.kernel_size
    if k > 1 and self.reflect:
      p = k // 2
      x_BHWC = jnp.pad(x_BHWC, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
      padding = "VALID"
    else:
      padding = "SAME"
    x = nn.Conv(self.features, (k, k), strides=self.strides, padding=padding, use_bias=False,
                kernel_init=_HE_FAN_OUT)(x_BHWC)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=self.bn_axis_name,
                     scale_init=nn.initializers.zeros if self.zero_scale else nn.initializers.ones)(x)
    if self.activation:
      x = nn.PReLU(negative_slope_init=0.25)(x)  # PyTorch's nn.PReLU() default slope
    return x


class ResidualBlock(nn.Module):
  """Bottleneck residual block (1x1, 3x3, 1x1 at constant width), PReLU after the sum.

  The final BatchNorm scale starts at zero so each block starts as the identity (followed by PReLU), which keeps 15
  stacked blocks trainable at the paper's learning rate of 4e-3.
  """

  features: int
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool) -> jax.Array:
    a = self.bn_axis_name
    h = ConvBN(self.features, 1, bn_axis_name=a)(x_BHWC, train)
    h = ConvBN(self.features, 3, reflect=False, bn_axis_name=a)(h, train)
    h = ConvBN(self.features, 1, activation=False, zero_scale=True, bn_axis_name=a)(h, train)
    return nn.PReLU(negative_slope_init=0.25)(h + x_BHWC)


def _residual_block(remat: bool):
  """`ResidualBlock`, or its rematerialised version (same parameter names, so checkpoints are interchangeable).

  Remat keeps only each block's input for the backward pass and recomputes its inside: at batch 32 of 128x128 the
  30 blocks (plus the anchor pass's 15) at 64x64x128 otherwise keep ~10 activations each, ~0.9 GiB per image.
  """
  # static_argnums counts the module as argument 0: `train` (argument 2) selects the BatchNorm mode.
  return nn.remat(ResidualBlock, static_argnums=(2,)) if remat else ResidualBlock


class SubPixel(nn.Module):
  """Sub-pixel up-sampling (Shi et al. 2016): conv to r^2 x features, BatchNorm, pixel shuffle by r, opt. PReLU."""

  features: int
  upscale: int
  kernel_size: int = 1
  activation: bool = False
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool) -> jax.Array:
    h = ConvBN(self.features * self.upscale**2, self.kernel_size, activation=False,
               bn_axis_name=self.bn_axis_name)(x_BHWC, train)
    h = nn_layers.depth_to_space(h, self.upscale) if self.upscale > 1 else h
    if self.activation:
      h = nn.PReLU(negative_slope_init=0.25)(h)
    return h


class Encoder(nn.Module):
  """E = g_a: `[B, H, W, 3]` in [0, 1] -> z `[B, H/s, W/s, latent_channels]`, s = prod of all strides (8)."""

  latent_channels: int = 32
  stem_features: Sequence[int] = (32, 64, 128)
  stem_kernels: Sequence[int] = (3, 5, 3)
  stem_strides: Sequence[int] = (1, 2, 1)
  num_res_blocks: int = 15
  down_features: Sequence[int] = (64, 32)
  down_kernel: int = 5
  final_kernel: int = 3
  bn_axis_name: str | None = None
  remat: bool = False

  @nn.compact
  def __call__(self, x_BHWC: jax.Array, train: bool) -> jax.Array:
    a = self.bn_axis_name
    h = x_BHWC
    for f, k, s in zip(self.stem_features, self.stem_kernels, self.stem_strides):
      h = ConvBN(f, k, s, bn_axis_name=a)(h, train)
    block = _residual_block(self.remat)
    for i in range(self.num_res_blocks):
      h = block(self.stem_features[-1], bn_axis_name=a, name=f"ResidualBlock_{i}")(h, train)
    for f in self.down_features:
      h = ConvBN(f, self.down_kernel, 2, activation=False, bn_axis_name=a)(h, train)
    return ConvBN(self.latent_channels, self.final_kernel, activation=False, bn_axis_name=a)(h, train)


class Decoder(nn.Module):
  """D = g_s, the mirror of `Encoder` with sub-pixel up-sampling: z_hat `[B, h, w, C]` -> x_hat `[B, sh, sw, 3]`."""

  out_channels: int = 3
  stem_features: Sequence[int] = (32, 64, 128)
  stem_strides: Sequence[int] = (1, 2, 1)
  num_res_blocks: int = 15
  down_features: Sequence[int] = (64, 32)
  subpix_kernel: int = 1
  bn_axis_name: str | None = None
  remat: bool = False

  @nn.compact
  def __call__(self, z_hat_BhwC: jax.Array, train: bool) -> jax.Array:
    a, k = self.bn_axis_name, self.subpix_kernel
    h = z_hat_BhwC
    # Mirror of the final conv (stride 1) and of the two stride-2 down-sampling blocks.
    ups = list(self.down_features[::-1]) + [self.stem_features[-1]]
    h = SubPixel(ups[0], 1, k, bn_axis_name=a)(h, train)
    for i, f in enumerate(ups[1:]):
      last = i == len(ups) - 2
      h = SubPixel(f, 2, k, activation=last, bn_axis_name=a)(h, train)
    block = _residual_block(self.remat)
    for i in range(self.num_res_blocks):
      h = block(self.stem_features[-1], bn_axis_name=a, name=f"ResidualBlock_{i}")(h, train)
    # Mirror of the three opening blocks, last to first; the first block's mirror outputs the image.
    outs = list(self.stem_features[:-1][::-1]) + [self.out_channels]
    for i, (f, s) in enumerate(zip(outs, self.stem_strides[::-1])):
      h = SubPixel(f, s, k, activation=i < len(outs) - 1, bn_axis_name=a)(h, train)
    return (jnp.tanh(h) + 1.0) / 2.0


class CAE(nn.Module):
  """Compressive autoencoder of CAE-ADMM (Zhao & Liao 2019, eq. 1-4; Theis et al. 2017).

  `apply(variables, x_BHWC, train=..., rngs={"quantize": key})` returns
  `{"x_hat": [B, H, W, 3], "z": [B, h, w, C] (encoder output), "z_hat": [B, h, w, C] (quantized),
  "likelihoods": {}}` — the CompressAI keys, with no likelihoods because CAE-ADMM has no entropy model in training.
  In training mode the quantizer draws from the "quantize" RNG stream and BatchNorm uses (synchronised) batch
  statistics, updating `batch_stats` (pass `mutable=["batch_stats"]`); in eval mode it rounds and uses the
  running statistics, so the output is deterministic.

  Other entry points (`method=`): `analysis(x, train)` -> z, `quantize(z, train)` -> z_hat,
  `quantized_latent(x, train)` -> z_hat, `synthesis(z_hat, train)` -> x_hat.
  """

  latent_channels: int = 32
  stem_features: Sequence[int] = (32, 64, 128)
  stem_kernels: Sequence[int] = (3, 5, 3)
  stem_strides: Sequence[int] = (1, 2, 1)
  num_res_blocks: int = 15
  down_features: Sequence[int] = (64, 32)
  down_kernel: int = 5
  final_kernel: int = 3
  subpix_kernel: int = 1
  out_channels: int = 3
  bn_axis_name: str | None = None
  remat: bool = False  # rematerialise the residual blocks in the backward pass (memory, not results; see below)

  def setup(self):
    if len(self.stem_features) != len(self.stem_kernels) or len(self.stem_features) != len(self.stem_strides):
      raise errors.ConfigError("cae_admm model: stem_features, stem_kernels and stem_strides must have equal lengths")
    self.g_a = Encoder(self.latent_channels, self.stem_features, self.stem_kernels, self.stem_strides,
                       self.num_res_blocks, self.down_features, self.down_kernel, self.final_kernel,
                       self.bn_axis_name, self.remat)
    self.g_s = Decoder(self.out_channels, self.stem_features, self.stem_strides, self.num_res_blocks,
                       self.down_features, self.subpix_kernel, self.bn_axis_name, self.remat)

  @property
  def stride(self) -> int:
    """Total down-sampling factor of the encoder: image sizes must be multiples of it."""
    s = 2 ** len(self.down_features)
    for t in self.stem_strides:
      s *= t
    return s

  def analysis(self, x_BHWC: jax.Array, train: bool = False) -> jax.Array:
    h, w = x_BHWC.shape[-3:-1]
    if h % self.stride or w % self.stride:
      raise errors.DataError(f"cae_admm: image size {h}x{w} is not a multiple of the model stride {self.stride}; "
                             "pad it first")
    return self.g_a(x_BHWC, train)

  def quantize(self, z: jax.Array, train: bool = False) -> jax.Array:
    """Q of eq. 3-4 in training (needs the "quantize" RNG stream), rounding at test time."""
    if train:
      return quantizers.stochastic_round(z, self.make_rng("quantize"))
    return quantizers.round_ste(z)

  def quantized_latent(self, x_BHWC: jax.Array, train: bool = False) -> jax.Array:
    """Q(E(x)): the integer latent the ADMM variables constrain and the codec writes (rounded at test time)."""
    return self.quantize(self.analysis(x_BHWC, train), train)

  def synthesis(self, z_hat: jax.Array, train: bool = False) -> jax.Array:
    return self.g_s(z_hat, train)

  def __call__(self, x_BHWC: jax.Array, train: bool = False) -> dict[str, Any]:
    z = self.analysis(x_BHWC, train)
    z_hat = self.quantize(z, train)
    return {"x_hat": self.synthesis(z_hat, train), "z": z, "z_hat": z_hat, "likelihoods": {}}

"""Networks of ProxIQA (Chen, Bampis, Li, Norkin, Bovik, "ProxIQA: A proxy approach to perceptual optimization of
learned image compression", IEEE TIP 2021): the compression networks it optimises (BLS, BMSHJ) and the proxy
network itself (Fig. 4).

Compression networks follow CompressAI's contract: `__call__(x, training=...)` returns
`{"x_hat": [B, H, W, 3], "likelihoods": {"y": [B, h, w, M], ("z": ...)}}`, with submodules `g_a`, `g_s` (and `h_a`,
`h_s`). Models take float32 images in [0, 1]. Quantisation noise is drawn from the flax rng stream "noise"
(`apply(..., rngs={"noise": key})`) when `training=True`; `training=False` rounds (the deterministic codec path).

Layouts of the analysis/synthesis transforms (`layout`):
- "bls2017" (the default for the paper's runs): Sec. III-A-2 describes g_a and g_s as "three consecutive layers of
  convolution-down(up) sampling-activation" with GDN, built on Ballé et al. 2017 through TensorFlow Compression
  release 1.0 (Table II). Fig. 3 is not in our copy of the paper, so the layer sizes follow the authors' released
  training script (github.com/treammm/Compression, `examples/bls2017_*.py`, TFC 1.0's `bls2017.py`): conv 9x9 /4 +
  GDN, conv 5x5 /2 + GDN, conv 5x5 /2 (no activation), and the mirror with IGDN and transposed convolutions; all
  layers have N filters ("we used 192 filters at every layer", Sec. IV-A-2), so M = N there.
- "bmshj2018": CompressAI's `bmshj2018_factorized` / `bmshj2018_hyperprior` transforms (Ballé et al. 2018): four
  conv 5x5 /2 layers with GDN between them, N filters and M latent channels (the BMSHJ model of Table III, and the
  N=128, M=192 model that `benchmarks/train_step.py` compares with CompressAI).
Transposed convolutions are `jaxcomp.nn.ConvTranspose` (the PyTorch `ConvTranspose2d(k, s, k // 2, s - 1)`
geometry, exactly `s` times larger) whose kernel gradient is fast on XLA:CPU; strided ones are `jaxcomp.nn.Conv`
(flax's `nn.Conv` parameters, with a sub-pixel input gradient).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.entropy import EntropyBottleneck, GaussianConditional
from jaxcomp.errors import ConfigError
from jaxcomp.nn import GDN, Conv, ConvTranspose

# One layer: (output features or "N" / "M" / 3, kernel, stride, activation after it: "gdn", "igdn", "relu" or "").
Layer = tuple[int | str, int, int, str]

LAYOUTS: dict[str, dict[str, tuple[Layer, ...]]] = {
    "bls2017": {
        "g_a": (("N", 9, 4, "gdn"), ("N", 5, 2, "gdn"), ("M", 5, 2, "")),
        "g_s": (("N", 5, 2, "igdn"), ("N", 5, 2, "igdn"), (3, 9, 4, "")),
    },
    "bmshj2018": {
        "g_a": (("N", 5, 2, "gdn"), ("N", 5, 2, "gdn"), ("N", 5, 2, "gdn"), ("M", 5, 2, "")),
        "g_s": (("N", 5, 2, "igdn"), ("N", 5, 2, "igdn"), ("N", 5, 2, "igdn"), (3, 5, 2, "")),
    },
}
# Scale hyperprior (Ballé et al. 2018, Fig. 4; CompressAI `ScaleHyperprior`): h_a takes |y|.
HYPER = {
    "h_a": (("N", 3, 1, "relu"), ("N", 5, 2, "relu"), ("N", 5, 2, "")),
    "h_s": (("N", 5, 2, "relu"), ("N", 5, 2, "relu"), ("M", 3, 1, "relu")),
}


def _check_layout(layout: str) -> dict[str, tuple[Layer, ...]]:
  if layout not in LAYOUTS:
    raise ConfigError(f"unknown model layout {layout!r} (choose from {', '.join(LAYOUTS)})")
  return LAYOUTS[layout]


def downsampling_factor(layout: str, hyperprior: bool = False) -> int:
  """Total stride of g_a (times h_a's for a hyperprior model): image sides must be multiples of it."""
  f = 1
  for _, _, s, _ in _check_layout(layout)["g_a"] + (HYPER["h_a"] if hyperprior else ()):
    f *= s
  return f


class Transform(nn.Module):
  """A stack of convolutions (or transposed convolutions when `up`) with GDN / IGDN / ReLU between them.

  Attributes:
    layers: `Layer` tuples; "N" / "M" features are resolved with `N` and `M`.
    N, M: filter count and latent channels.
    up: transposed (upsampling) convolutions instead of strided ones.
  """
  layers: Sequence[Layer]
  N: int
  M: int
  up: bool = False

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    x = x_BHWC
    for i, (feat, k, s, act) in enumerate(self.layers):
      feat = {"N": self.N, "M": self.M}.get(feat, feat)
      if self.up and s > 1:
        x = ConvTranspose(feat, kernel_size=k, strides=s, name=f"conv{i}")(x)
      else:
        # PyTorch/CompressAI `conv(k, s)` = Conv2d(k, s, padding=k // 2): output ceil(H / s) for odd k. Same
        # parameters as flax's nn.Conv; its input gradient is the fast sub-pixel transposed convolution.
        x = Conv(feat, k, strides=s, padding="SAME_TORCH", name=f"conv{i}")(x)
      if act == "gdn":
        x = GDN(name=f"gdn{i}")(x)
      elif act == "igdn":
        x = GDN(inverse=True, name=f"igdn{i}")(x)
      elif act == "relu":
        x = nn.relu(x)
    return x


class BLS(nn.Module):
  """Ballé, Laparra, Simoncelli 2017, "End-to-end optimized image compression" (ICLR): the BLS baseline of ProxIQA.

  y = g_a(x), y_hat = Q(y), x_hat = g_s(y_hat) (ProxIQA eq. 3, x_hat = f_c(x)); rate from the factorized
  `EntropyBottleneck` p_{y_hat} (eq. 6: L_r = -log2 p(y_hat)).

  Attributes:
    N: filters of the hidden layers (192 in the paper's comparisons).
    M: latent channels (= N for "bls2017"; 192 for CompressAI's N=128 "bmshj2018" factorized model).
    layout: "bls2017" or "bmshj2018" (module docstring).
  """
  N: int = 192
  M: int = 192
  layout: str = "bls2017"

  def setup(self):
    layers = _check_layout(self.layout)
    self.g_a = Transform(layers["g_a"], self.N, self.M)
    self.g_s = Transform(layers["g_s"], self.N, self.M, up=True)
    self.entropy_bottleneck = EntropyBottleneck(self.M)

  def __call__(self, x_BHW3: jax.Array, *, training: bool, quantizer: str = "noise") -> dict:
    y = self.g_a(x_BHW3)
    y_hat, y_likelihoods = self.entropy_bottleneck(y, training=training, quantizer=quantizer)
    x_hat = self.g_s(y_hat)
    return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods}}

  def analysis(self, x_BHW3: jax.Array) -> jax.Array:
    """y = g_a(x), unquantised latents [B, h, w, M]."""
    return self.g_a(x_BHW3)

  def synthesis(self, y_hat_BhwM: jax.Array) -> jax.Array:
    """x_hat = g_s(y_hat), not clipped."""
    return self.g_s(y_hat_BhwM)

  def aux_loss(self) -> jax.Array:
    """The entropy bottleneck's quantile loss (reaches only its `quantiles`)."""
    return self.entropy_bottleneck.aux_loss()


class BMSHJ(nn.Module):
  """Ballé, Minnen, Singh, Hwang, Johnston 2018, "Variational image compression with a scale hyperprior" (ICLR).

  y = g_a(x), z = h_a(|y|), z_hat = Q(z) under a factorized prior, sigma = h_s(z_hat), y_hat = Q(y) under
  N(0, sigma^2) convolved with U(-1/2, 1/2) (Ballé 2018 eq. 9-10); x_hat = g_s(y_hat). ProxIQA applies its
  VMAF_p optimisation to this model in Table III ("BMSHJ").

  Attributes:
    N, M: filters and latent channels (CompressAI: N=128, M=192 for qualities 1-5; N=192, M=320 above).
    layout: transforms g_a / g_s; "bmshj2018" (the paper's model) by default.
  """
  N: int = 128
  M: int = 192
  layout: str = "bmshj2018"

  def setup(self):
    layers = _check_layout(self.layout)
    self.g_a = Transform(layers["g_a"], self.N, self.M)
    self.g_s = Transform(layers["g_s"], self.N, self.M, up=True)
    self.h_a = Transform(HYPER["h_a"], self.N, self.M)
    self.h_s = Transform(HYPER["h_s"], self.N, self.M, up=True)
    self.entropy_bottleneck = EntropyBottleneck(self.N)
    self.gaussian_conditional = GaussianConditional()

  def __call__(self, x_BHW3: jax.Array, *, training: bool, quantizer: str = "noise") -> dict:
    y = self.g_a(x_BHW3)
    z = self.h_a(jnp.abs(y))
    z_hat, z_likelihoods = self.entropy_bottleneck(z, training=training, quantizer=quantizer)
    scales_hat = self.h_s(z_hat)
    y_hat, y_likelihoods = self.gaussian_conditional(y, scales_hat, training=training, quantizer=quantizer)
    x_hat = self.g_s(y_hat)
    return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

  def analysis(self, x_BHW3: jax.Array) -> jax.Array:
    """y = g_a(x), unquantised latents [B, h, w, M]."""
    return self.g_a(x_BHW3)

  def hyper_analysis(self, y_BhwM: jax.Array) -> jax.Array:
    """z = h_a(|y|), [B, h/4, w/4, N]."""
    return self.h_a(jnp.abs(y_BhwM))

  def hyper_synthesis(self, z_hat: jax.Array) -> jax.Array:
    """sigma = h_s(z_hat), the Gaussian scales of y."""
    return self.h_s(z_hat)

  def synthesis(self, y_hat_BhwM: jax.Array) -> jax.Array:
    """x_hat = g_s(y_hat), not clipped."""
    return self.g_s(y_hat_BhwM)

  def aux_loss(self) -> jax.Array:
    return self.entropy_bottleneck.aux_loss()


class ProxIQANet(nn.Module):
  """The ProxIQA network f_p (Sec. III-A-1, Fig. 4; eq. 4: M_hat = f_p(x, x_hat)).

  Reference and distorted patches are concatenated into 6 channels, then three stages of conv 5x5 (stride 1,
  padding 2; 16, 32, 64 filters) + ReLU + 2x2 max-pool, flattened (64 * H/8 * W/8 = 16384 for the paper's 128x128
  patches) into one fully connected output.

  Attributes:
    features: filters of the three stages.
  """
  features: Sequence[int] = (16, 32, 64)

  @nn.compact
  def __call__(self, x_BHW3: jax.Array, x_hat_BHW3: jax.Array) -> jax.Array:
    """Returns the predicted score M_hat, [B]."""
    h = jnp.concatenate([x_BHW3, x_hat_BHW3], axis=-1)
    for i, f in enumerate(self.features):
      h = nn.Conv(f, (5, 5), strides=(1, 1), padding=((2, 2), (2, 2)), name=f"conv{i}")(h)
      h = nn.max_pool(nn.relu(h), (2, 2), strides=(2, 2))
    h = h.reshape(h.shape[0], -1)
    return nn.Dense(1, name="fc")(h)[:, 0]


def build_model(name: str, N: int, M: int, layout: str) -> nn.Module:
  """A compression model from config fields (`config.model`, `config.N`, `config.M`, `config.layout`)."""
  if name == "bls":
    return BLS(N=N, M=M, layout=layout)
  if name == "bmshj":
    return BMSHJ(N=N, M=M, layout=layout)
  raise ConfigError(f"config.model={name!r} is not 'bls' or 'bmshj'")

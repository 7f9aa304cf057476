"""The VGG19 feature map Omega of RL-SRGAN's VGG loss (Savioli, Sec. 2.2.1, eq. 3; SRGAN's "VGG54", Ledig et al.
2017, Sec. 2.2.2), with ImageNet weights read from a local `.npz` file.

Omega is the 16 convolutions of VGG19 (Simonyan & Zisserman 2015, configuration E): 3x3 convs with ReLU, widths
64, 64 | 128, 128 | 256 x 4 | 512 x 4 | 512 x 4, a 2x2 max-pool (stride 2, floor) between blocks, cut after the ReLU
of a chosen layer ("conv5_4" by default: SRGAN's phi_{5,4}, the feature map before the fifth pool; "conv2_2" is
its VGG22). No fully connected layers: the loss uses feature maps, which works at any image size.

Input convention: RGB in [0, 1], normalised inside the model with torchvision's ImageNet statistics
(mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]) — the preprocessing torchvision's `vgg19` weights were
trained with. Weights from elsewhere must follow it (Keras' Caffe-derived weights expect BGR in [0, 255] minus the
mean, which is why `convert_vgg19` accepts only torchvision's checkpoint).

Weights file: `.npz` with keys `conv{b}_{i}/kernel` [3, 3, in, out] (HWIO, float32) and `conv{b}_{i}/bias` [out] for
all 16 layers; `python -m jaxcomp.methods.rl_srgan.convert_vgg19` writes it from torchvision's published checkpoint.
No weights are downloaded and none are ever invented: a missing or malformed file is a `DataError`.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.errors import ConfigError, DataError

# (block, number of convs, width) of VGG19.
BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))


def _layer_shapes() -> dict[str, tuple[int, int]]:
  """{"conv1_1": (in, out), ...} in network order."""
  shapes, c_in = {}, 3
  for b, n, width in BLOCKS:
    for i in range(1, n + 1):
      shapes[f"conv{b}_{i}"] = (c_in, width)
      c_in = width
  return shapes


LAYER_SHAPES = _layer_shapes()
LAYERS = tuple(LAYER_SHAPES)
"""The 16 conv layers, "conv1_1" ... "conv5_4"; any of them can end `VGG19`."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """The `.npz` keys and shapes `load_vgg19_params` requires: {"conv1_1/kernel": (3, 3, 3, 64), ...}."""
  out = {}
  for name, (c_in, c_out) in LAYER_SHAPES.items():
    out[f"{name}/kernel"] = (3, 3, c_in, c_out)
    out[f"{name}/bias"] = (c_out,)
  return out


def _check_layer(layer: str) -> str:
  if layer not in LAYER_SHAPES:
    raise ConfigError(f"VGG19 layer {layer!r} is not one of conv1_1 ... conv5_4 ({', '.join(LAYERS)})")
  return layer


class VGG19(nn.Module):
  """VGG19's convolutional features up to `layer` (after its ReLU): Omega of Savioli eq. 3.

  `apply({"params": load_vgg19_params(path)}, x_BHWC)` with RGB `x_BHWC` in [0, 1] returns the feature map
  [B, H / 2^p, W / 2^p, width], p = pools before `layer` (4 for conv5_4: [B, H/16, W/16, 512], floor at odd sizes).
  Parameters: `{"conv1_1": {"kernel": [3, 3, 3, 64], "bias": [64]}, ...}`; layers after `layer` are not used.

  Attributes:
    layer: the last layer, "conv5_4" (SRGAN's VGG54) by default.
  """

  layer: str = "conv5_4"

  def __post_init__(self):
    _check_layer(self.layer)
    super().__post_init__()

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    if x_BHWC.ndim != 4 or x_BHWC.shape[-1] != 3:
      raise DataError(f"VGG19 expects RGB images [B, H, W, 3] in [0, 1], got shape {tuple(x_BHWC.shape)}")
    h = (x_BHWC - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    for b, n, width in BLOCKS:
      if b > 1:
        h = nn.max_pool(h, (2, 2), strides=(2, 2), padding="VALID")
      for i in range(1, n + 1):
        name = f"conv{b}_{i}"
        h = nn.relu(nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), name=name)(h))
        if name == self.layer:
          return h
    raise AssertionError("unreachable: the layer name was checked")


def load_vgg19_params(path: str | os.PathLike) -> dict[str, dict[str, jax.Array]]:
  """The VGG19 parameters `{"conv1_1": {"kernel", "bias"}, ...}` (float32) from an `.npz` weights file.

  Every one of the 32 keys of `expected_shapes()` must be present with its shape (extra keys are ignored); the first
  missing or mis-shaped key, or an unreadable file, is a one-line `DataError` naming the file. There is no fallback:
  random weights would make the VGG loss silently meaningless.
  """
  path = os.fspath(path)
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files if k in expected_shapes()}
  except FileNotFoundError:
    raise DataError(f"VGG19 weights file {path} not found (convert one with "
                    "`python -m jaxcomp.methods.rl_srgan.convert_vgg19 SRC DST.npz`)") from None
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f"VGG19 weights file {path} is not a readable .npz ({' '.join(str(e).split())})") from None
  params: dict[str, dict[str, Any]] = {}
  for key, shape in expected_shapes().items():
    if key not in arrays:
      raise DataError(f"VGG19 weights file {path} lacks key {key!r} (expected shape {shape})")
    a = arrays[key]
    if a.shape != shape:
      raise DataError(f"VGG19 weights file {path}: key {key!r} has shape {a.shape}, expected {shape}")
    if not (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a))):
      raise DataError(f"VGG19 weights file {path}: key {key!r} is not finite floating point (dtype {a.dtype})")
    layer, leaf = key.split("/")
    params.setdefault(layer, {})[leaf] = jnp.asarray(a, jnp.float32)
  return params


@dataclasses.dataclass(frozen=True)
class VGGFeatures:
  """Omega as a function: `features(x_BHWC)` = `module.apply({"params": params}, x_BHWC)`, compiled once per shape.

  Inside a jitted train step, pass `params` as an argument of the step and call `module.apply` there: arrays a
  traced function closes over are embedded in the compiled program as constants (XLA does this; 80 MB here).
  """

  module: VGG19
  params: dict
  _apply: Callable = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    object.__setattr__(self, "_apply", jax.jit(self.module.apply))  # params stay an argument, not a constant

  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    return self._apply({"params": self.params}, x_BHWC)


def vgg_feature_fn(path: str | os.PathLike, layer: str = "conv5_4") -> VGGFeatures:
  """`f(x_BHWC) -> features` of VGG19 up to `layer` (after ReLU), with the weights of the `.npz` file at `path`."""
  module = VGG19(layer=_check_layer(layer))
  params = load_vgg19_params(path)
  used = set(LAYERS[:LAYERS.index(layer) + 1])
  return VGGFeatures(module, {k: v for k, v in params.items() if k in used})

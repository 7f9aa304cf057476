"""Transposed convolution whose kernel gradient goes through the strided-convolution weight gradient.

XLA:CPU lowers the kernel gradient of an input-dilated convolution (what `flax.linen.ConvTranspose` computes) to a
convolution with both input and kernel dilation that runs 20-40x slower than the weight gradient of the ordinary
strided convolution (docs: /work/shared/notes/performance.md). A transposed convolution is the adjoint of a strided
convolution `S_k`, so with `y = S_k^T x` and cotangent `g`:

  dL/dx = S_k(g)                        (a plain strided convolution)
  dL/dk = d/dk <S_k(g), x>              (the strided convolution's weight gradient, input g, cotangent x)

Both are exact; `conv_transpose` below uses them as its VJP. The forward pass is the same input-dilated convolution
as `jax.lax.conv_transpose(..., transpose_kernel=False)`, so parameters are interchangeable with
`flax.linen.ConvTranspose`.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")
Padding2D = tuple[tuple[int, int], tuple[int, int]]


def torch_padding(kernel_size: int, stride: int, padding: int, output_padding: int) -> tuple[int, int]:
  """The (low, high) padding of the dilated input equal to PyTorch `ConvTranspose2d(k, s, p, output_padding)`.

  Output size is `(H - 1) * s - 2p + k + output_padding` in both conventions.
  """
  del stride  # the padding of the dilated input does not depend on it
  return kernel_size - 1 - padding, kernel_size - 1 - padding + output_padding


def same_upsampling_padding(kernel_size: int, stride: int) -> tuple[int, int]:
  """Padding that makes the output exactly `stride` times the input (CompressAI `deconv`, TFC "same_zeros").

  CompressAI's `deconv(k, s)` is `ConvTranspose2d(k, s, padding=k // 2, output_padding=s - 1)`.
  """
  return torch_padding(kernel_size, stride, kernel_size // 2, stride - 1)


def _strided_conv(g_BHWO: jax.Array, kernel_HWIO: jax.Array, strides: tuple[int, int],
                  padding: Padding2D) -> jax.Array:
  """S_k: the strided convolution whose adjoint is the transposed convolution with `kernel_HWIO`.

  Maps [B, H_out, W_out, O] -> [B, H_in, W_in, I]. Derivation (1-D, kernel K, dilated-input padding (lo, hi)):
  y[j] = sum_i x[i] k[i*s + lo - j], so (S g)[i] = sum_u g[i*s + lo - (K-1) + u] k[K-1-u]: a correlation with the
  spatially flipped kernel, stride s, padding (K-1-lo, K-1-hi) (the high side may be negative = cropping).
  """
  kh, kw = kernel_HWIO.shape[:2]
  # flip spatially and swap I/O so the kernel maps O channels back to I channels
  k = jnp.flip(kernel_HWIO, axis=(0, 1)).transpose(0, 1, 3, 2)
  pad = ((kh - 1 - padding[0][0], kh - 1 - padding[0][1]), (kw - 1 - padding[1][0], kw - 1 - padding[1][1]))
  return lax.conv_general_dilated(g_BHWO, k, window_strides=strides, padding=pad, dimension_numbers=_DN)


def _forward(x_BHWI: jax.Array, kernel_HWIO: jax.Array, strides: tuple[int, int], padding: Padding2D) -> jax.Array:
  return lax.conv_general_dilated(x_BHWI, kernel_HWIO, window_strides=(1, 1), padding=padding,
                                  lhs_dilation=strides, dimension_numbers=_DN)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_transpose(x_BHWI: jax.Array, kernel_HWIO: jax.Array, strides: tuple[int, int],
                   padding: Padding2D) -> jax.Array:
  """Transposed convolution, NHWC/HWIO, same result as `lax.conv_transpose(x, k, strides, padding)`.

  Args:
    x_BHWI: input [B, H, W, I].
    kernel_HWIO: kernel [kh, kw, I, O] (not flipped, as `flax.linen.ConvTranspose` with `transpose_kernel=False`).
    strides: (sh, sw) upsampling factors.
    padding: ((lo_h, hi_h), (lo_w, hi_w)) padding of the dilated input; see `torch_padding`.

  Returns:
    [B, (H-1)*sh + lo_h + hi_h - kh + 2, ..., O].
  """
  return _forward(x_BHWI, kernel_HWIO, strides, padding)


def _conv_transpose_fwd(x, kernel, strides, padding):
  return _forward(x, kernel, strides, padding), (x, kernel)


def _conv_transpose_bwd(strides, padding, res, g):
  x, kernel = res
  # S_k(g) has exactly x's shape: the padded g is (H-1)*s + kh long, so a stride-s, kh-tap window fits H times.
  dx, vjp_k = jax.vjp(lambda k: _strided_conv(g, k, strides, padding), kernel)
  (dk,) = vjp_k(x.astype(dx.dtype))
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


class ConvTranspose(nn.Module):
  """Drop-in for `flax.linen.ConvTranspose` (NHWC, 2-D, explicit padding) with the fast kernel gradient.

  Attributes:
    features: output channels O.
    kernel_size: (kh, kw) or an int.
    strides: upsampling factors (sh, sw) or an int.
    padding: "SAME_UPSAMPLE" (output exactly `strides` times the input, the PyTorch/CompressAI
      `ConvTranspose2d(k, s, padding=k // 2, output_padding=s - 1)` convention) or explicit ((lo, hi), (lo, hi)) pads
      of the dilated input.
    use_bias: add a per-channel bias.
  """
  features: int
  kernel_size: int | Sequence[int] = 5
  strides: int | Sequence[int] = 2
  padding: str | Padding2D = "SAME_UPSAMPLE"
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x_BHWI: jax.Array) -> jax.Array:
    kh, kw = (self.kernel_size,) * 2 if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
    sh, sw = (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides)
    if isinstance(self.padding, str):
      if self.padding != "SAME_UPSAMPLE":
        raise ValueError(f"ConvTranspose: padding must be 'SAME_UPSAMPLE' or explicit pairs, got {self.padding!r}")
      padding = (same_upsampling_padding(kh, sh), same_upsampling_padding(kw, sw))
    else:
      padding = tuple(tuple(int(v) for v in p) for p in self.padding)
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x_BHWI.shape[-1], self.features))
    y = conv_transpose(x_BHWI, kernel.astype(x_BHWI.dtype), (sh, sw), padding)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,)).astype(y.dtype)
    return y

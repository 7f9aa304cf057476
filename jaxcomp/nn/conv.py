"""Transposed convolution whose kernel gradient goes through the strided-convolution weight gradient.

XLA:CPU lowers the kernel gradient of an input-dilated convolution (what `flax.linen.ConvTranspose` computes) to a
convolution with both input and kernel dilation that runs 20-40x slower than the weight gradient of the ordinary
strided convolution (docs: /work/shared/notes/performance.md). A transposed convolution is the adjoint of a strided
convolution `S_k`, so with `y = S_k^T x` and cotangent `g`:

  dL/dx = S_k(g)                        (a plain strided convolution)
  dL/dk = d/dk <S_k(g), x>              (the strided convolution's weight gradient, input g, cotangent x)

Both are exact; `conv_transpose` below uses them as its VJP. The forward pass computes the same function as
`jax.lax.conv_transpose(..., transpose_kernel=False)` (so parameters are interchangeable with
`flax.linen.ConvTranspose`), but by sub-pixel decomposition: each of the s*s output phases is a small stride-1
convolution of the undilated input, all done as one convolution followed by depth-to-space, which skips the
multiplications by the zeros of the dilated input.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
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


def _phase_taps(K: int, s: int, lo: int) -> tuple[int, np.ndarray, np.ndarray]:
  """Sub-pixel decomposition of one axis: output j = q*s + r reads x[q + d] with kernel tap t = d*s + lo - r.

  Returns (d_min, taps [s, L], valid [s, L]) over the offsets d = d_min .. d_min + L - 1 any phase r uses.
  """
  d_min = min(-((lo - r) // s) for r in range(s))  # ceil((r - lo) / s)
  d_max = max((K - 1 - lo + r) // s for r in range(s))
  t = np.arange(d_min, d_max + 1)[None, :] * s + lo - np.arange(s)[:, None]
  valid = (t >= 0) & (t < K)
  return d_min, np.where(valid, t, 0), valid


def _forward(x_BHWI: jax.Array, kernel_HWIO: jax.Array, strides: tuple[int, int], padding: Padding2D) -> jax.Array:
  """The input-dilated convolution, computed without the zeros: one stride-1 convolution producing all sh*sw output
  phases as channels, then depth-to-space (2.8x fewer multiplies for k=5, s=2; exact, tested against lax)."""
  b, h, w, i = x_BHWI.shape
  kh, kw, _, o = kernel_HWIO.shape
  (sh, sw), ((lo_h, hi_h), (lo_w, hi_w)) = strides, padding
  h_out, w_out = (h - 1) * sh + lo_h + hi_h - kh + 2, (w - 1) * sw + lo_w + hi_w - kw + 2
  dh, th, vh = _phase_taps(kh, sh, lo_h)
  dw, tw, vw = _phase_taps(kw, sw, lo_w)
  lh, lw = th.shape[1], tw.shape[1]
  sub = kernel_HWIO[th[:, :, None, None], tw[None, None, :, :]]  # [sh, lh, sw, lw, I, O]
  mask = (vh[:, :, None, None] & vw[None, None, :, :]).astype(kernel_HWIO.dtype)
  sub = (sub * mask[..., None, None]).transpose(1, 3, 4, 5, 0, 2).reshape(lh, lw, i, o * sh * sw)
  qh, qw = -(-h_out // sh), -(-w_out // sw)  # phase outputs per axis (the last row / column may be cropped)
  pad = ((-dh, qh - h + dh + lh - 1), (-dw, qw - w + dw + lw - 1))
  y = lax.conv_general_dilated(x_BHWI, sub, (1, 1), pad, dimension_numbers=_DN)  # [B, qh, qw, O*sh*sw]
  y = y.reshape(b, qh, qw, o, sh, sw).transpose(0, 1, 4, 2, 5, 3).reshape(b, qh * sh, qw * sw, o)
  return y[:, :h_out, :w_out]


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

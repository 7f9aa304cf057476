"""Transposed convolution whose kernel gradient goes through the strided-convolution weight gradient.

XLA:CPU lowers the kernel gradient of an input-dilated convolution (what `flax.linen.ConvTranspose` computes) to a
convolution with both input and kernel dilation that runs 20-40x slower than the weight gradient of the ordinary
strided convolution (docs: ../shared/notes/performance.md). A transposed convolution is the adjoint of a strided
convolution `S_k`, so with `y = S_k^T x` and cotangent `g`:

  dL/dx = S_k(g)                        (a plain strided convolution)
  dL/dk = d/dk <S_k(g), x>              (the strided convolution's weight gradient, input g, cotangent x)

Both are exact; `conv_transpose` below uses them as its VJP. The forward pass computes the same function as
`jax.lax.conv_transpose(..., transpose_kernel=False)` (so parameters are interchangeable with
`flax.linen.ConvTranspose`), but by sub-pixel decomposition: each of the s*s output phases is a small stride-1
convolution of the undilated input with the kernel taps it uses, which skips the multiplications by the zeros of the
dilated input.

The strided convolution `conv2d` (module `Conv`) has the mirror-image custom VJP: its input gradient is a transposed
convolution, which XLA:CPU would compute on the dilated cotangent; here it goes through the same sub-pixel forward.
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


def _axis_phases(K: int, s: int, lo: int) -> list[tuple[int, np.ndarray]]:
  """Sub-pixel decomposition of one axis: output j = q*s + r reads x[q + d] with kernel tap t = d*s + lo - r.

  Returns, for each phase r, (d_lo, taps): the contiguous offsets d = d_lo .. d_lo + len(taps) - 1 whose tap is in
  the kernel, and those taps (empty when the phase reads no input, possible for K < s).
  """
  phases = []
  for r in range(s):
    d_lo, d_hi = -((lo - r) // s), (K - 1 + r - lo) // s  # ceil((r - lo) / s), floor((K - 1 + r - lo) / s)
    phases.append((d_lo, np.arange(d_lo, d_hi + 1) * s + lo - r))
  return phases


def _conv_stride1(x_BHWI: jax.Array, kernel_HWIO: jax.Array, pad: Padding2D) -> jax.Array:
  """Stride-1 convolution; negative padding (a phase that starts or ends inside x) is done as a slice, because
  XLA:CPU returned garbage for a negative low padding with several input channels (jax 0.10.2)."""
  (ph_lo, ph_hi), (pw_lo, pw_hi) = pad
  h, w = x_BHWI.shape[1:3]
  xs = x_BHWI[:, max(-ph_lo, 0):h - max(-ph_hi, 0), max(-pw_lo, 0):w - max(-pw_hi, 0)]
  pad = ((max(ph_lo, 0), max(ph_hi, 0)), (max(pw_lo, 0), max(pw_hi, 0)))
  return lax.conv_general_dilated(xs, kernel_HWIO, (1, 1), pad, dimension_numbers=_DN)


# Below this many output channels the phases are computed as one convolution with s*s times the output channels:
# per-phase convolutions with 3 output channels (the synthesis' last layer) measured 2.2x slower than one with 12.
_PER_PHASE_MIN_FEATURES = 32


def _forward(x_BHWI: jax.Array, kernel_HWIO: jax.Array, strides: tuple[int, int], padding: Padding2D,
             per_phase: bool | None = None) -> jax.Array:
  """The input-dilated convolution, computed without the zeros of the dilated input (exact, tested against lax).

  per_phase=True: one stride-1 convolution per output phase with only the kernel taps that phase uses (3x3, 3x2,
  2x3, 2x2 for k=5, s=2: 25 taps, not the dilated input's 100), then the phases are interleaved; about 20% faster
  at 128 channels than the alternative. per_phase=False: one convolution producing all phases as channels (every
  phase padded to the largest tap count, 36 for k=5, s=2), then depth-to-space; faster for few output channels.
  None picks by the number of output channels.
  """
  b, h, w, _ = x_BHWI.shape
  kh, kw, i, o = kernel_HWIO.shape
  (sh, sw), ((lo_h, hi_h), (lo_w, hi_w)) = strides, padding
  h_out, w_out = (h - 1) * sh + lo_h + hi_h - kh + 2, (w - 1) * sw + lo_w + hi_w - kw + 2
  qh, qw = -(-h_out // sh), -(-w_out // sw)  # phase outputs per axis (the last row / column may be cropped)
  phases_h, phases_w = _axis_phases(kh, sh, lo_h), _axis_phases(kw, sw, lo_w)
  if per_phase is None:
    per_phase = o >= _PER_PHASE_MIN_FEATURES
  if per_phase:
    rows = []
    for dh, th in phases_h:
      cols = []
      for dw, tw in phases_w:
        if th.size == 0 or tw.size == 0:
          cols.append(jnp.zeros((b, qh, qw, o), x_BHWI.dtype))
          continue
        pad = ((-dh, qh - h + dh + th.size - 1), (-dw, qw - w + dw + tw.size - 1))
        cols.append(_conv_stride1(x_BHWI, kernel_HWIO[th[:, None], tw[None, :]], pad))
      rows.append(jnp.stack(cols, axis=3))  # [B, qh, qw, sw, O]
    y = jnp.stack(rows, axis=2)  # [B, qh, sh, qw, sw, O]
  else:
    # Common offset range of all phases; taps outside a phase's own range are zero.
    dh = min((d for d, t in phases_h if t.size), default=0)
    dw = min((d for d, t in phases_w if t.size), default=0)
    lh = max((d + t.size for d, t in phases_h if t.size), default=dh + 1) - dh
    lw = max((d + t.size for d, t in phases_w if t.size), default=dw + 1) - dw
    th = np.arange(dh, dh + lh)[None, :] * sh + lo_h - np.arange(sh)[:, None]  # [sh, lh]
    tw = np.arange(dw, dw + lw)[None, :] * sw + lo_w - np.arange(sw)[:, None]  # [sw, lw]
    vh, vw = (th >= 0) & (th < kh), (tw >= 0) & (tw < kw)
    sub = kernel_HWIO[np.where(vh, th, 0)[:, :, None, None], np.where(vw, tw, 0)[None, None, :, :]]
    mask = (vh[:, :, None, None] & vw[None, None, :, :]).astype(kernel_HWIO.dtype)
    sub = (sub * mask[..., None, None]).transpose(1, 3, 4, 5, 0, 2).reshape(lh, lw, i, o * sh * sw)
    y = _conv_stride1(x_BHWI, sub, ((-dh, qh - h + dh + lh - 1), (-dw, qw - w + dw + lw - 1)))
    y = y.reshape(b, qh, qw, o, sh, sw).transpose(0, 1, 4, 2, 5, 3)  # [B, qh, sh, qw, sw, O]
  return y.reshape(b, qh * sh, qw * sw, o)[:, :h_out, :w_out]


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


def _adjoint_padding(size: int, k: int, s: int, lo: int, hi: int) -> tuple[int, int]:
  """Padding of the transposed convolution that is the input gradient of a strided convolution.

  For y[j] = sum_t x[j*s + t - lo] k[t] over an input of length `size`, dx[i] = sum_j g[j] k[i + lo - j*s]: a
  transposed convolution of g with the flipped kernel and dilated-input padding (k - 1 - lo, hi') where hi' makes
  the output exactly `size` long (it absorbs the input rows the forward's last window did not reach).
  """
  n_out = (size + lo + hi - k) // s + 1
  return k - 1 - lo, size - (n_out - 1) * s + lo - 1


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x_BHWI: jax.Array, kernel_HWIO: jax.Array, strides: tuple[int, int], padding: Padding2D) -> jax.Array:
  """Strided convolution, NHWC/HWIO, `lax.conv_general_dilated(x, k, strides, padding)`, with an input gradient
  computed by the sub-pixel transposed convolution (XLA:CPU's own input gradient convolves the dilated cotangent:
  4x the multiplications for stride 2). The kernel gradient is XLA's.

  Args:
    x_BHWI: input [B, H, W, I].
    kernel_HWIO: kernel [kh, kw, I, O].
    strides: (sh, sw).
    padding: ((lo_h, hi_h), (lo_w, hi_w)) explicit zero padding of the input.
  """
  return lax.conv_general_dilated(x_BHWI, kernel_HWIO, strides, padding, dimension_numbers=_DN)


def _conv2d_fwd(x, kernel, strides, padding):
  return conv2d(x, kernel, strides, padding), (x, kernel)


def _conv2d_bwd(strides, padding, res, g):
  x, kernel = res
  kh, kw = kernel.shape[:2]
  adj = (_adjoint_padding(x.shape[1], kh, strides[0], *padding[0]),
         _adjoint_padding(x.shape[2], kw, strides[1], *padding[1]))
  dx = _forward(g, jnp.flip(kernel, axis=(0, 1)).transpose(0, 1, 3, 2).astype(g.dtype), strides, adj)
  _, vjp_k = jax.vjp(lambda k: lax.conv_general_dilated(x.astype(g.dtype), k, strides, padding,
                                                        dimension_numbers=_DN), kernel.astype(g.dtype))
  (dk,) = vjp_k(g)
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (int(v),) * 2 if isinstance(v, int) else tuple(int(u) for u in v)


def _linear_layer(module: nn.Module, x_BHWI: jax.Array, op: Callable) -> jax.Array:
  """`op(x, kernel) (+ bias)` with the kernel [kh, kw, I, O] and bias [O] parameters of a Conv / ConvTranspose."""
  kh, kw = _pair(module.kernel_size)
  kernel = module.param("kernel", module.kernel_init, (kh, kw, x_BHWI.shape[-1], module.features))
  y = op(x_BHWI, kernel.astype(x_BHWI.dtype))
  if module.use_bias:
    y = y + module.param("bias", module.bias_init, (module.features,)).astype(y.dtype)
  return y


def _explicit_padding(layer: str, padding: str | Padding2D, named: str, same: Callable[[], Padding2D]) -> Padding2D:
  """A layer's `padding` as explicit ((lo, hi), (lo, hi)) ints: `same()` for its one named convention `named`."""
  if isinstance(padding, str):
    if padding != named:
      raise ValueError(f"{layer}: padding must be {named!r} or explicit pairs, got {padding!r}")
    return same()
  return tuple(tuple(int(v) for v in p) for p in padding)


class Conv(nn.Module):
  """Drop-in for `flax.linen.Conv` (NHWC, 2-D, explicit symmetric padding; same parameter names, shapes and
  initialisers) whose input gradient uses the sub-pixel transposed convolution (`conv2d`).

  Attributes:
    features: output channels O.
    kernel_size: (kh, kw) or an int.
    strides: (sh, sw) or an int.
    padding: "SAME_TORCH" (PyTorch `Conv2d(k, s, padding=k // 2)`, CompressAI's `conv`: output ceil(H / s) for odd
      k) or explicit ((lo, hi), (lo, hi)) zero padding.
    use_bias: add a per-channel bias.
  """
  features: int
  kernel_size: int | Sequence[int] = 5
  strides: int | Sequence[int] = 2
  padding: str | Padding2D = "SAME_TORCH"
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x_BHWI: jax.Array) -> jax.Array:
    (kh, kw), strides = _pair(self.kernel_size), _pair(self.strides)
    padding = _explicit_padding("Conv", self.padding, "SAME_TORCH", lambda: ((kh // 2, kh // 2), (kw // 2, kw // 2)))
    return _linear_layer(self, x_BHWI, lambda x, k: conv2d(x, k, strides, padding))


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
    (kh, kw), (sh, sw) = _pair(self.kernel_size), _pair(self.strides)
    padding = _explicit_padding("ConvTranspose", self.padding, "SAME_UPSAMPLE",
                                lambda: (same_upsampling_padding(kh, sh), same_upsampling_padding(kw, sw)))
    return _linear_layer(self, x_BHWI, lambda x, k: conv_transpose(x, k, (sh, sw), padding))

"""Peak signal-to-noise ratio on RGB, on luma, and the (4Y + U + V) / 6 average of the ProxIQA paper.

Colour conversion is ITU-R BT.601 *full range* YCbCr (the JFIF / ITU-T T.871 matrix, as Pillow's "YCbCr" mode and
JPEG use), applied in floating point without rounding so that it stays differentiable. Cb and Cr are offset by
`data_range / 2`; offsets cancel in the error, so only the matrix matters for PSNR.

PSNR of two identical images is `inf` (the mean squared error is 0); its gradient there is undefined (NaN), and
finite everywhere else. Use a distortion loss on the MSE itself when training, not on PSNR.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxcomp.metrics.common import MetricInputError, as_float_pair

# Rows give Y, Cb, Cr from R, G, B (ITU-T T.871, section 7).
BT601_FULL_RANGE = (
    (0.299, 0.587, 0.114),
    (-0.299 / 1.772, -0.587 / 1.772, 0.5),
    (0.5, -0.587 / 1.402, -0.114 / 1.402),
)


def rgb_to_ycbcr(x_HWC: jnp.ndarray, data_range: float = 255.0) -> jnp.ndarray:
  """BT.601 full-range YCbCr of RGB images `[..., H, W, 3]` in [0, data_range]; chroma offset data_range / 2."""
  x_HWC = jnp.asarray(x_HWC)
  if x_HWC.shape[-1] != 3:
    raise MetricInputError(f"rgb_to_ycbcr: expected 3 channels (RGB) in the last axis, got shape {x_HWC.shape}")
  if not jnp.issubdtype(x_HWC.dtype, jnp.floating):
    x_HWC = x_HWC.astype(jnp.float32)
  m = jnp.asarray(BT601_FULL_RANGE, x_HWC.dtype)
  offset = jnp.asarray([0.0, data_range / 2, data_range / 2], x_HWC.dtype)
  return jnp.einsum("...c,dc->...d", x_HWC, m, precision="highest") + offset


def mse(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """Mean squared error over the last three axes `[H, W, C]`; returns shape `x.shape[:-3]`."""
  x, y = as_float_pair(x, y, "mse")
  return jnp.mean(jnp.square(x - y), axis=(-3, -2, -1))


def _psnr_from_mse(err: jnp.ndarray, data_range: float) -> jnp.ndarray:
  return 10.0 * jnp.log10(jnp.square(jnp.asarray(data_range, err.dtype)) / err)


def psnr(x: jnp.ndarray, y: jnp.ndarray, data_range: float = 255.0) -> jnp.ndarray:
  """PSNR in dB over all pixels and channels of images `[..., H, W, C]`; returns shape `x.shape[:-3]`.

  This is the "PSNR RGB" of CompressAI's results (one MSE over the three channels). `inf` when x == y.
  """
  return _psnr_from_mse(mse(x, y), data_range)


def psnr_per_channel_ycbcr(x: jnp.ndarray, y: jnp.ndarray, data_range: float = 255.0) -> jnp.ndarray:
  """PSNR of Y, Cb and Cr separately (BT.601 full range) for RGB images `[..., H, W, 3]`: shape `[..., 3]`."""
  x, y = as_float_pair(x, y, "psnr_yuv")
  d = rgb_to_ycbcr(x, data_range) - rgb_to_ycbcr(y, data_range)
  return _psnr_from_mse(jnp.mean(jnp.square(d), axis=(-3, -2)), data_range)


def psnr_luma(x: jnp.ndarray, y: jnp.ndarray, data_range: float = 255.0) -> jnp.ndarray:
  """PSNR in dB of the BT.601 luma Y' = 0.299 R + 0.587 G + 0.114 B of RGB images `[..., H, W, 3]`."""
  return psnr_per_channel_ycbcr(x, y, data_range)[..., 0]


def psnr_yuv(x: jnp.ndarray, y: jnp.ndarray, data_range: float = 255.0) -> jnp.ndarray:
  """(4 PSNR_Y + PSNR_Cb + PSNR_Cr) / 6 in dB: the average of per-plane PSNRs in the ProxIQA paper (eq. 12).

  The paper computes it with FFmpeg's libavfilter on YUV 4:4:4 planes; here the planes come from the RGB images
  `[..., H, W, 3]` by the BT.601 full-range matrix, unrounded. Returns shape `x.shape[:-3]`.
  """
  p = psnr_per_channel_ycbcr(x, y, data_range)
  return (4.0 * p[..., 0] + p[..., 1] + p[..., 2]) / 6.0

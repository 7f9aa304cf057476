"""Image-quality and rate metrics.

JAX (jittable, differentiable, batched over leading axes) on images `[..., H, W, C]`, returning one value per
leading index (`x.shape[:-3]`); `data_range` is explicit: 255 for uint8-valued images, 1 for [0, 1] floats.

- `psnr` (RGB, one MSE over all channels), `psnr_luma` (BT.601 Y'), `psnr_yuv` ((4 Y + Cb + Cr) / 6, ProxIQA eq. 12),
  with BT.601 full-range YCbCr (`rgb_to_ycbcr`).
- `ssim`, `ms_ssim`, `ssim_and_ms_ssim` (both in one pass) (Wang et al. 2003/2004, 11x11 Gaussian sigma 1.5, valid convolution, channel-averaged).
- `bpp`, `bd_rate`, `bd_psnr` (numpy/scipy; VCEG-M33 cubic or PCHIP).
- `jaxcomp.metrics.vmaf` (a submodule, not imported here): VMAF on the host through an ffmpeg with libvmaf.
"""

from jaxcomp.metrics.common import MetricInputError
from jaxcomp.metrics.fidelity import mse, psnr, psnr_luma, psnr_per_channel_ycbcr, psnr_yuv, rgb_to_ycbcr
from jaxcomp.metrics.rate import bd_psnr, bd_rate, bpp
from jaxcomp.metrics.structural import (
    MS_SSIM_WEIGHTS,
    gaussian_window,
    ms_ssim,
    ms_ssim_min_side,
    ssim,
    ssim_and_ms_ssim,
)

__all__ = [
    "MetricInputError", "MS_SSIM_WEIGHTS", "bd_psnr", "bd_rate", "bpp", "gaussian_window", "ms_ssim",
    "ms_ssim_min_side", "mse", "psnr", "psnr_luma", "psnr_per_channel_ycbcr", "psnr_yuv", "rgb_to_ycbcr", "ssim",
    "ssim_and_ms_ssim",
]

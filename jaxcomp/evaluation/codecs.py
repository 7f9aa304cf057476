"""Classical codec baselines through Pillow: JPEG 4:2:0 / 4:4:4 (libjpeg-turbo), JPEG 2000 (OpenJPEG), WebP, AVIF.

Each baseline is a `Baseline`: how its parameter is called (quality or target bpp), a default sweep, and an
`encode(image_uint8_HWC, param) -> bytes`. Decoding is always `jaxcomp.data.decode_image`, the project's one
canonical decoder. JPEG and JPEG 2000 reuse the encoders of `jaxcomp.data.transforms` (the degradations the
methods train on), so the baselines and the training-time degradations are the same code.

JPEG 2000 uses the strong setting: the irreversible 9/7 wavelet with the colour transform (Pillow's defaults, 5/3
without it, are ~3.6 dB worse at 0.5 bpp on Kodak), one encode at the requested rate; the real rate is measured
from the bytes, so OpenJPEG's small rate-control misses do not matter for an RD curve.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Callable, Sequence

import numpy as np
from PIL import Image, features

from jaxcomp.data import transforms
from jaxcomp.errors import ConfigError, DataError


def _pil(image_HWC: np.ndarray) -> Image.Image:
  if image_HWC.dtype != np.uint8 or image_HWC.ndim != 3 or image_HWC.shape[-1] not in (1, 3):
    raise DataError(f"expected a uint8 image [H, W, 1|3], got {image_HWC.dtype} {image_HWC.shape}")
  return Image.fromarray(image_HWC[..., 0] if image_HWC.shape[-1] == 1 else image_HWC)


def _check_quality(q: float, lo: int, hi: int, codec: str) -> int:
  if not lo <= int(q) <= hi or int(q) != q:
    raise ConfigError(f"{codec}: quality={q} must be an integer in {lo}..{hi}")
  return int(q)


def _jpeg(subsampling: str) -> Callable[[np.ndarray, float], bytes]:
  def encode(image_HWC: np.ndarray, quality: float) -> bytes:
    return transforms.jpeg_encode(image_HWC, _check_quality(quality, 1, 100, "jpeg"), subsampling)
  return encode


def _jpeg2000(image_HWC: np.ndarray, target_bpp: float) -> bytes:
  return transforms.jpeg2000_encode(image_HWC, float(target_bpp), irreversible=True, mct=True, max_tries=1)


def _webp(image_HWC: np.ndarray, quality: float) -> bytes:
  buf = io.BytesIO()
  # method=4 is libwebp's default speed/size trade-off (cwebp -m 4).
  _pil(image_HWC).save(buf, format="WEBP", quality=_check_quality(quality, 0, 100, "webp"), method=4)
  return buf.getvalue()


def _avif(image_HWC: np.ndarray, quality: float) -> bytes:
  if not features.check("avif"):
    raise ConfigError("avif: this Pillow was built without AVIF support")
  buf = io.BytesIO()
  # speed 6 is Pillow's default; 4:4:4 so that chroma is not the limiting factor at high rates.
  _pil(image_HWC).save(buf, format="AVIF", quality=_check_quality(quality, 0, 100, "avif"), speed=6,
                       subsampling="4:4:4")
  return buf.getvalue()


@dataclasses.dataclass(frozen=True)
class Baseline:
  """A classical codec swept over one parameter."""
  name: str
  description: str
  param_name: str  # "quality" or "bpp" (target rate)
  default_params: tuple[float, ...]
  encode: Callable[[np.ndarray, float], bytes]


_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)

BASELINES: dict[str, Baseline] = {
    "jpeg420": Baseline("jpeg420", f"JPEG 4:2:0 (libjpeg-turbo via Pillow {Image.__version__})", "quality",
                        _QUALITIES, _jpeg("4:2:0")),
    "jpeg444": Baseline("jpeg444", f"JPEG 4:4:4 (libjpeg-turbo via Pillow {Image.__version__})", "quality",
                        _QUALITIES, _jpeg("4:4:4")),
    "jpeg2000": Baseline("jpeg2000", f"JPEG 2000 (OpenJPEG via Pillow {Image.__version__}, irreversible 9/7 wavelet "
                         "+ colour transform, target rate)", "bpp",
                         (0.06, 0.1, 0.15, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0), _jpeg2000),
    "webp": Baseline("webp", f"WebP lossy (libwebp via Pillow {Image.__version__}, method 4)", "quality",
                     (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95), _webp),
    "avif": Baseline("avif", f"AVIF (libavif via Pillow {Image.__version__}, speed 6, 4:4:4)", "quality",
                     (10, 20, 30, 40, 50, 60, 70, 80, 90), _avif),
}


def get_baseline(codec: str) -> Baseline:
  """The baseline called `codec`; `ConfigError` naming the known ones otherwise."""
  if codec not in BASELINES:
    raise ConfigError(f"codec={codec!r}: unknown baseline; choose one of {sorted(BASELINES)}")
  return BASELINES[codec]


def params_or_default(codec: str, params: Sequence[float] | None) -> tuple[float, ...]:
  b = get_baseline(codec)
  params = b.default_params if params is None else tuple(params)
  if not params:
    raise ConfigError(f"codec={codec!r}: params is empty; give at least one {b.param_name}")
  return params

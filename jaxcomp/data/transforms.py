"""Degradations shared by the methods and the codec baselines: JPEG, JPEG 2000, resampling, grayscale.

Every degradation maps a canonical uint8 image `[H, W, C]` (C = 1 or 3) to `(image_uint8, num_bytes)`, where
`num_bytes` is the real size of the file the codec wrote (0 for steps that code nothing, such as resampling), so
callers report bits per pixel as `8 * num_bytes / (H * W)` of the *original* image. They compose with `Chain`
(bytes add up) and run inside a grain pipeline through `Degrade`, which writes `out_key` and
`out_key + "_num_bytes"` into each record.

All coding goes through Pillow: libjpeg(-turbo) for JPEG and OpenJPEG for JPEG 2000.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any, Callable, Sequence

import grain.python as grain
import numpy as np
from PIL import Image

from jaxcomp.errors import ConfigError, DataError

Degradation = Callable[[np.ndarray], tuple[np.ndarray, int]]

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def _to_pil(image_HWC: np.ndarray) -> Image.Image:
  if image_HWC.dtype != np.uint8 or image_HWC.ndim != 3 or image_HWC.shape[-1] not in (1, 3):
    raise DataError(f"expected a uint8 image [H, W, 1|3], got {image_HWC.dtype} {image_HWC.shape}")
  return Image.fromarray(image_HWC[..., 0] if image_HWC.shape[-1] == 1 else image_HWC)


def _from_pil(img: Image.Image, channels: int) -> np.ndarray:
  a = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
  return a[..., None] if a.ndim == 2 else a


def _decode(data: bytes, channels: int) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as img:
    img.load()
    return _from_pil(img, channels)


def bits_per_pixel(num_bytes: int, image_HWC: np.ndarray) -> float:
  """Rate of a file of `num_bytes` for an image `[H, W, C]`: `8 * num_bytes / (H * W)`."""
  return 8.0 * num_bytes / (image_HWC.shape[0] * image_HWC.shape[1])


def jpeg_encode(image_HWC: np.ndarray, quality: int, subsampling: int | str = -1) -> bytes:
  """Baseline JPEG file of `image_HWC` at libjpeg quality 1..100.

  `subsampling` is Pillow's: -1 (libjpeg's default, 4:2:0 chroma for colour images), or "4:4:4" / "4:2:2" /
  "4:2:0".
  """
  if not 1 <= int(quality) <= 100:
    raise ConfigError(f"quality={quality}: JPEG quality must be in 1..100")
  buf = io.BytesIO()
  _to_pil(image_HWC).save(buf, format="JPEG", quality=int(quality), subsampling=subsampling)
  return buf.getvalue()


def jpeg(image_HWC: np.ndarray, quality: int, subsampling: int | str = -1) -> tuple[np.ndarray, int]:
  """JPEG round trip at `quality`: `(decoded uint8 [H, W, C], file size in bytes)`."""
  data = jpeg_encode(image_HWC, quality, subsampling)
  return _decode(data, image_HWC.shape[-1]), len(data)


def jpeg_quality_for_bpp(image_HWC: np.ndarray, target_bpp: float, subsampling: int | str = -1) -> int:
  """The JPEG quality whose real rate is the largest one not above `target_bpp`.

  Binary search for the highest quality within the target, then a scan of every higher quality: file size is
  almost but not exactly monotone in quality, and the scan makes the answer exact for any image. If even quality 1
  is above the target, 1 is returned (JPEG cannot write a smaller file; the caller sees the real size).
  """
  if target_bpp <= 0:
    raise ConfigError(f"target_bpp={target_bpp}: must be positive")
  max_bytes = target_bpp * image_HWC.shape[0] * image_HWC.shape[1] / 8.0
  sizes: dict[int, int] = {}

  def size(q: int) -> int:
    if q not in sizes:
      sizes[q] = len(jpeg_encode(image_HWC, q, subsampling))
    return sizes[q]

  lo, hi = 1, 100  # invariant (monotone case): size(lo) <= max_bytes < size(hi + 1)
  if size(1) > max_bytes:
    return 1
  while lo < hi:
    mid = (lo + hi + 1) // 2
    if size(mid) <= max_bytes:
      lo = mid
    else:
      hi = mid - 1
  best = lo
  for q in range(lo + 1, 101):  # non-monotone pockets above the binary-search answer
    if size(q) <= max_bytes and size(q) > size(best):
      best = q
  return best


def jpeg_at_bpp(image_HWC: np.ndarray, target_bpp: float, subsampling: int | str = -1) -> tuple[np.ndarray, int]:
  """JPEG round trip at the quality of `jpeg_quality_for_bpp`: `(decoded, num_bytes)`."""
  return jpeg(image_HWC, jpeg_quality_for_bpp(image_HWC, target_bpp, subsampling), subsampling)


def jpeg2000_encode(image_HWC: np.ndarray, target_bpp: float, *, irreversible: bool = True, mct: bool = True,
                    max_tries: int = 4) -> bytes:
  """JPEG 2000 codestream (.j2k, no JP2 box overhead) at a target rate, via OpenJPEG's rate control.

  Defaults: irreversible 9/7 wavelet with the colour transform, the strong setting (Pillow's defaults, 5/3 and no
  colour transform, are ~3.6 dB worse at 0.5 bpp on Kodak). OpenJPEG may overshoot slightly; up to `max_tries`
  re-encodes at a proportionally lower rate bring the file to or under the target when possible.
  """
  if target_bpp <= 0:
    raise ConfigError(f"target_bpp={target_bpp}: must be positive")
  img = _to_pil(image_HWC)
  raw_bpp = 8.0 * image_HWC.shape[-1]
  max_bytes = target_bpp * image_HWC.shape[0] * image_HWC.shape[1] / 8.0
  rate = target_bpp
  for _ in range(max_tries):
    buf = io.BytesIO()
    img.save(buf, format="JPEG2000", no_jp2=True, irreversible=irreversible,
             mct=1 if (mct and image_HWC.shape[-1] == 3) else 0, quality_mode="rates",
             quality_layers=[max(raw_bpp / rate, 1.0)])
    data = buf.getvalue()
    if len(data) <= max_bytes:
      break
    rate *= 0.99 * max_bytes / len(data)
  return data


def jpeg2000(image_HWC: np.ndarray, target_bpp: float, *, irreversible: bool = True,
             mct: bool = True) -> tuple[np.ndarray, int]:
  """JPEG 2000 round trip at `target_bpp` (see `jpeg2000_encode`): `(decoded, num_bytes)`."""
  data = jpeg2000_encode(image_HWC, target_bpp, irreversible=irreversible, mct=mct)
  return _decode(data, image_HWC.shape[-1]), len(data)


def resize(image_HWC: np.ndarray, factor: float, method: str = "bicubic") -> np.ndarray:
  """Resamples by `factor` (0.25 = 4x smaller) to `round(H * factor) x round(W * factor)` (at least 1).

  Pillow's filters: bicubic is Keys' a = -0.5 kernel, and both filters widen with the scale when downsampling
  (antialiasing), like MATLAB's `imresize`, which the super-resolution literature uses.
  """
  if method not in _RESAMPLE:
    raise ConfigError(f"method={method!r}: must be one of {sorted(_RESAMPLE)}")
  if factor <= 0:
    raise ConfigError(f"factor={factor}: must be positive")
  h, w = image_HWC.shape[:2]
  size_wh = (max(1, round(w * factor)), max(1, round(h * factor)))
  return _from_pil(_to_pil(image_HWC).resize(size_wh, _RESAMPLE[method]), image_HWC.shape[-1])


def grayscale(image_HWC: np.ndarray) -> np.ndarray:
  """RGB -> 1-channel luma (ITU-R 601-2, Pillow's `convert("L")`); a 1-channel image is returned unchanged."""
  return image_HWC if image_HWC.shape[-1] == 1 else _from_pil(_to_pil(image_HWC), 1)


# Composable steps: frozen dataclasses, so they pickle into grain workers and compare by value.


@dataclasses.dataclass(frozen=True)
class Jpeg:
  """JPEG at a fixed quality."""
  quality: int
  subsampling: int | str = -1

  def __call__(self, image_HWC: np.ndarray) -> tuple[np.ndarray, int]:
    return jpeg(image_HWC, self.quality, self.subsampling)


@dataclasses.dataclass(frozen=True)
class JpegAtBpp:
  """JPEG at the quality whose rate is closest to, and not above, `bpp`."""
  bpp: float
  subsampling: int | str = -1

  def __call__(self, image_HWC: np.ndarray) -> tuple[np.ndarray, int]:
    return jpeg_at_bpp(image_HWC, self.bpp, self.subsampling)


@dataclasses.dataclass(frozen=True)
class Resize:
  """Bicubic or Lanczos resampling by `factor`; codes nothing (0 bytes)."""
  factor: float
  method: str = "bicubic"

  def __call__(self, image_HWC: np.ndarray) -> tuple[np.ndarray, int]:
    return resize(image_HWC, self.factor, self.method), 0


@dataclasses.dataclass(frozen=True)
class Grayscale:
  """RGB -> luma; codes nothing (0 bytes)."""

  def __call__(self, image_HWC: np.ndarray) -> tuple[np.ndarray, int]:
    return grayscale(image_HWC), 0


@dataclasses.dataclass(frozen=True)
class Chain:
  """Applies `steps` in order; the bytes of every coding step add up (e.g. `Chain((Resize(0.25), Jpeg(75)))`)."""
  steps: tuple[Degradation, ...]

  def __call__(self, image_HWC: np.ndarray) -> tuple[np.ndarray, int]:
    total = 0
    for step in self.steps:
      image_HWC, n = step(image_HWC)
      total += n
    return image_HWC, total


class Degrade(grain.MapTransform):
  """Grain transform: `record[out_key], record[out_key + "_num_bytes"] = degradation(record[in_key])`.

  The input key is kept, so a batch carries the original and the degraded image side by side.
  """

  def __init__(self, degradation: Degradation | Sequence[Degradation], in_key: str = "image",
               out_key: str = "degraded"):
    if isinstance(degradation, (list, tuple)):
      degradation = Chain(tuple(degradation))
    self.degradation = degradation
    self.in_key, self.out_key = in_key, out_key

  def map(self, element: dict[str, Any]) -> dict[str, Any]:
    out, num_bytes = self.degradation(element[self.in_key])
    return {**element, self.out_key: out, f"{self.out_key}_num_bytes": np.int64(num_bytes)}

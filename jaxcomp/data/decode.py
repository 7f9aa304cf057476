"""Image decoding to the one canonical form every method sees.

Canonical form: a `uint8` numpy array `[H, W, C]` with C = 3 (RGB), or C = 1 when `grayscale=True`. The rules,
applied in this order (documented in docs/data.md):

1. The first frame of a multi-frame file (GIF, multi-page TIFF) is used.
2. The EXIF orientation tag, if any, is applied (`PIL.ImageOps.exif_transpose`), so camera photos come out upright.
3. 16-bit samples keep their 8 most significant bits (`v >> 8`). This is what Pillow itself does when it opens a
   16-bit RGB/RGBA PNG or TIFF, and we apply the same rule to 16-bit grayscale so both paths agree.
4. Alpha is dropped (RGBA -> RGB, LA -> L, palette with transparency -> RGB): the colour values are kept as
   stored, exactly like CompressAI's / torchvision's `Image.convert("RGB")`, so datasets match the PyTorch
   originals pixel for pixel.
5. Palette, bilevel, CMYK, YCbCr and LAB images go through Pillow's conversion to RGB (or to L).
6. RGB -> grayscale uses Pillow's ITU-R 601-2 luma `L = R * 299/1000 + G * 587/1000 + B * 114/1000`; grayscale ->
   RGB replicates the channel.

Floating-point images (mode "F") have no agreed range and are rejected with `DataError`.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from jaxcomp.errors import DataError

_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_canonical(img: Image.Image, grayscale: bool, name: str) -> np.ndarray:
  """PIL image -> uint8 `[H, W, C]` by the module rules (2-6); `name` only appears in error messages."""
  with warnings.catch_warnings():
    # A malformed EXIF block must not make an otherwise good image unreadable.
    warnings.simplefilter("ignore")
    try:
      img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - broken EXIF: keep the stored orientation
      pass
  mode = img.mode
  if mode in _16BIT_MODES:
    # "I" (32-bit int) is how Pillow sometimes exposes 16-bit grayscale; values are 16-bit by construction.
    a16 = np.asarray(img).astype(np.int64)
    a_HW = np.clip(a16 >> 8, 0, 255).astype(np.uint8)
    a_HWC = a_HW[..., None]
    return a_HWC if grayscale else np.repeat(a_HWC, 3, axis=-1)
  if mode == "F":
    raise DataError(f"{name}: floating-point image (mode F) has no defined 8-bit range; convert it first")
  if mode in ("RGBA", "RGBa", "RGBX", "LA", "La", "PA", "P", "1", "CMYK", "YCbCr", "LAB", "HSV"):
    # P/PA: palette lookup; LA: drop alpha; everything else via Pillow's own conversion matrices.
    img = img.convert("L" if mode in ("LA", "La", "1") else "RGB")
  if img.mode not in ("RGB", "L"):
    raise DataError(f"{name}: unsupported image mode {img.mode!r}")
  if grayscale and img.mode == "RGB":
    img = img.convert("L")
  a = np.asarray(img, dtype=np.uint8)
  if a.ndim == 2:
    a = a[..., None]
  if not grayscale and a.shape[-1] == 1:
    a = np.repeat(a, 3, axis=-1)
  return np.ascontiguousarray(a)


def decode_image(fileobj: BinaryIO | bytes, grayscale: bool = False, name: str = "<bytes>") -> np.ndarray:
  """Decodes an encoded image (file object or bytes) to canonical uint8 `[H, W, C]`.

  Args:
    fileobj: an open binary file or the encoded bytes.
    grayscale: return C = 1 (luma) instead of C = 3 (RGB).
    name: how the image is called in error messages.

  Raises:
    DataError: empty, truncated, corrupt or non-image data, or an unsupported mode.
  """
  if isinstance(fileobj, (bytes, bytearray, memoryview)):
    if len(fileobj) == 0:
      raise DataError(f"{name}: empty file (0 bytes)")
    fileobj = io.BytesIO(fileobj)
  try:
    with Image.open(fileobj) as img:
      # `load()` decodes every pixel: a truncated file fails here, not later inside a training step.
      img.load()
      return _to_canonical(img, grayscale, name)
  except UnidentifiedImageError as e:
    raise DataError(f"{name}: not an image Pillow can read") from e
  except DataError:
    raise
  except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
    raise DataError(f"{name}: corrupt or truncated image ({e})") from e


def read_image(path: str | os.PathLike, grayscale: bool = False) -> np.ndarray:
  """Reads an image file in canonical form: uint8 `[H, W, 3]` RGB, or `[H, W, 1]` when `grayscale`.

  Raises:
    DataError: a missing, empty, truncated, corrupt or non-image file; the message names it.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise DataError(f"{path}: no such image file")
  if os.path.getsize(path) == 0:
    raise DataError(f"{path}: empty file (0 bytes)")
  with open(path, "rb") as f:
    return decode_image(f, grayscale=grayscale, name=path)


def canonicalize_array(a: np.ndarray, grayscale: bool = False, name: str = "<array>") -> np.ndarray:
  """Brings an already-decoded array (`[H, W]`, `[H, W, 1|3|4]`, uint8 or uint16) to canonical form.

  Used for tfds datasets that store pixels as tensors rather than encoded images. Same rules as `read_image`.
  """
  a = np.asarray(a)
  if a.ndim == 2:
    a = a[..., None]
  if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4):
    raise DataError(f"{name}: expected an image [H, W, C] with C in 1..4, got shape {a.shape}")
  if a.dtype == np.uint16:
    a = (a >> 8).astype(np.uint8)
  elif a.dtype != np.uint8:
    raise DataError(f"{name}: expected uint8 or uint16 pixels, got {a.dtype}")
  c = a.shape[-1]
  if c in (2, 4):  # drop alpha, as in `read_image`
    a = a[..., : c - 1]
  img = Image.fromarray(np.ascontiguousarray(a[..., 0] if a.shape[-1] == 1 else a))
  return _to_canonical(img, grayscale, name)

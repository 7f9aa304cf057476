"""Tiny synthetic images for the data tests, written with Pillow (and raw PNG chunks for the 16-bit colour files
Pillow cannot write)."""

from __future__ import annotations

import pathlib
import struct
import zlib

import numpy as np
from PIL import Image


def png16_bytes(a_HWC: np.ndarray) -> bytes:
  """A 16-bit RGB(A) PNG written from the spec (Pillow cannot write one): IHDR, one zlib IDAT, IEND."""
  h, w, c = a_HWC.shape
  raw = b"".join(b"\x00" + a_HWC[i].astype(">u2").tobytes() for i in range(h))

  def chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

  ihdr = struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def random_rgb(seed: int, h: int = 20, w: int = 24) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_images(folder: pathlib.Path, n: int, h: int = 20, w: int = 24, seed0: int = 0) -> list[np.ndarray]:
  """`n` random RGB PNGs `img_000.png`, ... of size h x w; returns their pixels."""
  folder.mkdir(parents=True, exist_ok=True)
  out = []
  for i in range(n):
    a = random_rgb(seed0 + i, h, w)
    Image.fromarray(a).save(folder / f"img_{i:03d}.png")
    out.append(a)
  return out

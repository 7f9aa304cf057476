"""Canonical decoding: every format and mode against a numpy reference of what the file holds."""

from __future__ import annotations

import io

import chex
import numpy as np
import pytest
import tifffile
from PIL import Image

from jaxcomp.data import canonicalize_array, decode_image, read_image
from jaxcomp.errors import DataError
from data_test_images import png16_bytes, random_rgb


def luma(a_HWC: np.ndarray) -> np.ndarray:
  """ITU-R 601-2 luma, the documented RGB -> gray rule."""
  return (a_HWC.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))[..., None]


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "PPM"])
def test_lossless_rgb_formats_are_exact(tmp_path, fmt):
  a = random_rgb(1)
  p = tmp_path / f"x.{fmt.lower()}"
  Image.fromarray(a).save(p, format=fmt)
  out = read_image(p)
  chex.assert_shape(out, a.shape)
  chex.assert_type(out, np.uint8)
  np.testing.assert_array_equal(out, a)


def test_jpeg_decodes_close_to_source(tmp_path):
  a = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (16, 1, 3))
  Image.fromarray(a).save(tmp_path / "x.jpg", quality=95)
  out = read_image(tmp_path / "x.jpg")
  chex.assert_shape(out, (16, 32, 3))
  assert np.abs(out.astype(int) - a).max() <= 4


def test_grayscale_file_is_replicated_or_kept(tmp_path):
  g = random_rgb(2)[..., 0]
  Image.fromarray(g).save(tmp_path / "g.png")
  rgb = read_image(tmp_path / "g.png")
  np.testing.assert_array_equal(rgb, np.repeat(g[..., None], 3, -1))
  np.testing.assert_array_equal(read_image(tmp_path / "g.png", grayscale=True), g[..., None])


def test_rgb_to_grayscale_is_601_luma(tmp_path):
  a = random_rgb(3)
  Image.fromarray(a).save(tmp_path / "x.png")
  out = read_image(tmp_path / "x.png", grayscale=True)
  chex.assert_shape(out, (20, 24, 1))
  assert np.abs(out - luma(a)).max() <= 1.0


def test_palette_is_looked_up(tmp_path):
  rng = np.random.default_rng(4)
  palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
  idx = rng.integers(0, 256, (10, 12), dtype=np.uint8)
  img = Image.frombytes("P", (12, 10), idx.tobytes())
  img.putpalette(palette.tobytes())
  img.save(tmp_path / "p.png")
  np.testing.assert_array_equal(read_image(tmp_path / "p.png"), palette[idx])
  # GIF is palette-only too.
  img.save(tmp_path / "p.gif")
  np.testing.assert_array_equal(read_image(tmp_path / "p.gif"), palette[idx])


def test_alpha_is_dropped_keeping_colour(tmp_path):
  a = random_rgb(5)
  alpha = np.random.default_rng(6).integers(0, 256, a.shape[:2], dtype=np.uint8)
  Image.fromarray(np.dstack([a, alpha])).save(tmp_path / "rgba.png")
  np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), a)
  Image.fromarray(np.dstack([a[..., 0], alpha])).save(tmp_path / "la.png")
  np.testing.assert_array_equal(read_image(tmp_path / "la.png", grayscale=True), a[..., :1])


def test_bilevel_is_0_or_255(tmp_path):
  bits = np.random.default_rng(7).integers(0, 2, (9, 13)).astype(bool)
  Image.fromarray(bits).save(tmp_path / "b.png")
  out = read_image(tmp_path / "b.png", grayscale=True)
  np.testing.assert_array_equal(out[..., 0], np.where(bits, 255, 0))


def a16(seed: int, shape) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_gray_keeps_high_byte(tmp_path, ext):
  g = a16(8, (10, 12))
  Image.fromarray(g).save(tmp_path / f"g16.{ext}")
  np.testing.assert_array_equal(read_image(tmp_path / f"g16.{ext}", grayscale=True)[..., 0], g >> 8)
  np.testing.assert_array_equal(read_image(tmp_path / f"g16.{ext}"), np.repeat((g >> 8)[..., None], 3, -1))


def test_16bit_rgb_png_and_tiff_keep_high_byte(tmp_path):
  a = a16(9, (10, 12, 3))
  (tmp_path / "c16.png").write_bytes(png16_bytes(a))
  tifffile.imwrite(tmp_path / "c16.tif", a, photometric="rgb")
  for name in ("c16.png", "c16.tif"):
    np.testing.assert_array_equal(read_image(tmp_path / name), (a >> 8).astype(np.uint8), err_msg=name)
  a4 = a16(10, (10, 12, 4))
  (tmp_path / "c16a.png").write_bytes(png16_bytes(a4))
  np.testing.assert_array_equal(read_image(tmp_path / "c16a.png"), (a4[..., :3] >> 8).astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
  a = random_rgb(11)
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90 clockwise to display"
  Image.fromarray(a).save(tmp_path / "o.png", exif=exif)
  np.testing.assert_array_equal(read_image(tmp_path / "o.png"), np.rot90(a, k=-1))


def test_multiframe_uses_first_frame(tmp_path):
  frames = [random_rgb(12 + i) for i in range(3)]
  tifffile.imwrite(tmp_path / "m.tif", np.stack(frames), photometric="rgb")
  np.testing.assert_array_equal(read_image(tmp_path / "m.tif"), frames[0])


def test_cmyk_jpeg_is_converted(tmp_path):
  Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "k.jpg", quality=100)  # pure red ink
  out = read_image(tmp_path / "k.jpg")
  chex.assert_shape(out, (6, 8, 3))
  assert out[..., 0].min() > 240 and out[..., 1:].max() < 15


@pytest.mark.parametrize("content", [b"", b"hello, not an image\n", bytes(range(256)) * 4])
def test_unreadable_files_raise_data_error_naming_them(tmp_path, content):
  p = tmp_path / "bad.png"
  p.write_bytes(content)
  with pytest.raises(DataError, match="bad.png"):
    read_image(p)


def test_truncated_png_raises(tmp_path):
  buf = io.BytesIO()
  Image.fromarray(random_rgb(13, 64, 64)).save(buf, format="PNG")
  (tmp_path / "t.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
  with pytest.raises(DataError, match="t.png"):
    read_image(tmp_path / "t.png")


def test_missing_file_and_float_mode_raise(tmp_path):
  with pytest.raises(DataError, match="nope.png"):
    read_image(tmp_path / "nope.png")
  Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tif")
  with pytest.raises(DataError, match="mode F"):
    read_image(tmp_path / "f.tif")


def test_decode_bytes_and_canonicalize_array_agree_with_read_image(tmp_path):
  a = random_rgb(14)
  alpha = np.full(a.shape[:2] + (1,), 7, np.uint8)
  Image.fromarray(np.concatenate([a, alpha], -1)).save(tmp_path / "x.png")
  ref = read_image(tmp_path / "x.png", grayscale=True)
  np.testing.assert_array_equal(decode_image((tmp_path / "x.png").read_bytes(), grayscale=True), ref)
  np.testing.assert_array_equal(canonicalize_array(np.concatenate([a, alpha], -1), grayscale=True), ref)
  np.testing.assert_array_equal(canonicalize_array(a.astype(np.uint16) << 8), a)
  with pytest.raises(DataError):
    canonicalize_array(np.zeros((4, 4, 5), np.uint8))

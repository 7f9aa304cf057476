"""`evaluate_codec` / `eval_table` on a stand-in codec (JPEG at a fixed quality) with a known bit estimate."""

import math

import numpy as np
import pytest

from jaxcomp import metrics
from jaxcomp.data import decode_image, transforms
from jaxcomp.errors import DataError
from jaxcomp.evaluation import eval_table, evaluate_codec


class JpegCodec:
  """compress = JPEG q40; `estimated_bits` claims 90 % of the file, so the gap is known exactly."""

  def compress(self, image):
    return transforms.jpeg_encode(image, 40, "4:2:0")

  def decompress(self, data):
    return decode_image(data)

  def estimated_bits(self, image):
    return {"y": 0.9 * 8 * len(self.compress(image))}


def _images():
  rng = np.random.default_rng(0)
  smooth = lambda h, w: np.kron(rng.integers(0, 256, (h, w, 3)), np.ones((8, 8, 1))).astype(np.uint8)
  return [("im0", smooth(6, 8)), ("im1", smooth(6, 8)), ("big", smooth(21, 22))]  # big: >= 161 px for MS-SSIM


def test_report_against_direct_computation():
  codec, images = JpegCodec(), _images()
  rep = evaluate_codec(codec, images, extra_metrics={"mae": lambda a, b: float(np.mean(np.abs(a.astype(int) - b)))})
  assert rep["num_images"] == 3 and [r["name"] for r in rep["images"]] == ["im0", "im1", "big"]
  bits = []
  for (name, img), r in zip(images, rep["images"]):
    data = codec.compress(img)
    dec = codec.decompress(data)
    x, y = img.astype(np.float32), dec.astype(np.float32)
    h, w = img.shape[:2]
    bits.append(8 * len(data))
    assert r["bytes"] == len(data) and r["bpp"] == pytest.approx(8 * len(data) / (h * w))
    assert r["rate_gap"] == pytest.approx(1 / 0.9 - 1) and r["header_bits"] == 0
    np.testing.assert_allclose(r["psnr"], float(metrics.psnr(x, y)), rtol=1e-5)
    np.testing.assert_allclose(r["psnr_yuv"], float(metrics.psnr_yuv(x, y)), rtol=1e-5)
    np.testing.assert_allclose(r["mae"], np.mean(np.abs(x - y)), rtol=1e-6)
    assert (r["ms_ssim"] is None) == (min(h, w) < metrics.ms_ssim_min_side())
    assert r["encode_s"] > 0 and r["decode_s"] > 0
    # JPEG 4:2:0 at the largest quality whose file fits the learned one: here that is q40 itself or above.
    assert r["jpeg"]["quality"] >= 40 and r["jpeg"]["bytes"] <= len(data)
  assert rep["bpp"] == pytest.approx(np.mean([r["bpp"] for r in rep["images"]]))
  assert rep["ms_ssim"] == pytest.approx(rep["images"][2]["ms_ssim"])  # the mean skips the small images
  assert rep["rate_gap"] == pytest.approx((sum(bits) - 0.9 * sum(bits)) / (0.9 * sum(bits)))
  table = eval_table(rep).splitlines()
  assert table[0].split()[:3] == ["image", "bpp", "est"] and "MAE" in table[0] and "JPEG" in table[0]
  assert [ln.split()[0] for ln in table[1:4]] == ["im0", "im1", "big"] and table[5].startswith("mean")
  assert "+11.111 %" in table[-1]


def test_an_extra_metric_undefined_on_small_images_is_none_and_n_a():
  # like VMAF below 17 px (jaxcomp.metrics.vmaf.vmaf_image): NaN on the small images, a value on the big one
  extra = {"vmaf": lambda a, b: math.nan if min(a.shape[:2]) < 161 else 42.0}
  rep = evaluate_codec(JpegCodec(), _images(), extra_metrics=extra)
  assert [r["vmaf"] for r in rep["images"]] == [None, None, 42.0]
  assert [r["jpeg"]["vmaf"] for r in rep["images"]] == [None, None, 42.0]
  assert rep["vmaf"] == 42.0 and rep["jpeg"]["vmaf"] == 42.0  # the mean skips the n/a images
  rows = eval_table(rep).splitlines()
  assert "n/a" in rows[1] and "42" in rows[3]


def test_no_images_is_a_data_error():
  with pytest.raises(DataError, match="no images"):
    evaluate_codec(JpegCodec(), [])

"""VMAF through ffmpeg + libvmaf (the `vmaf` extra's static ffmpeg, or one on PATH)."""
import math
import stat

import numpy as np
import pytest
from skimage import data as skdata

from jaxcomp.errors import DataError
from jaxcomp.metrics import vmaf

needs_vmaf = pytest.mark.skipif(not vmaf.vmaf_available(), reason=f"no ffmpeg with libvmaf: {vmaf.VMAF_HINT}")


def _crops(n=4, side=64):
  img = skdata.astronaut().astype(np.float32) / 255.0
  return np.stack([img[40 * i:40 * i + side, 60 * i:60 * i + side] for i in range(n)])


@needs_vmaf
def test_pristine_pairs_and_scores_fall_with_distortion():
  x = _crops()
  rng = np.random.default_rng(0)
  pristine = vmaf.vmaf_scores(x, x)
  assert pristine.shape == (4,) and pristine.dtype == np.float32
  # libvmaf's vmaf_v0.6.1 gives identical frames ~97.4 (the ProxIQA authors' script scores pristine pairs 97)
  np.testing.assert_allclose(pristine, 97.43, atol=0.1)
  mild, strong = (vmaf.vmaf_scores(x, np.clip(x + rng.normal(0, s, x.shape), 0, 1)) for s in (0.02, 0.08))
  assert np.all(strong < mild) and np.all(mild < pristine), (mild, strong)


@needs_vmaf
def test_pairs_are_scored_independently_and_uint8_images_agree():
  x = _crops()
  y = np.clip(x + np.random.default_rng(1).normal(0, 0.04, x.shape), 0, 1)
  together = vmaf.vmaf_scores(x, y)
  alone = np.concatenate([vmaf.vmaf_scores(x[i:i + 1], y[i:i + 1]) for i in range(4)])
  np.testing.assert_allclose(together, alone, atol=1e-4)  # one ffmpeg per pair: no coupling through the batch
  a, b = (np.rint(v[0] * 255).astype(np.uint8) for v in (x, y))
  assert vmaf.vmaf_image(a, b) == pytest.approx(float(together[0]), abs=1e-4)


@needs_vmaf
def test_images_too_small_for_libvmaf_are_refused_or_not_applicable():
  x = _crops(1, 16)  # libvmaf segfaults below 17 px a side: refused before ffmpeg runs
  with pytest.raises(DataError, match="at least 17 px a side, got 16x16"):
    vmaf.vmaf_scores(x, x * 0.9)
  a = (_crops(1, 40)[0] * 255).astype(np.uint8)
  assert math.isnan(vmaf.vmaf_image(a[:16], a[:16]))  # an RD / eval entry: n/a, like MS-SSIM below 161 px
  assert vmaf.vmaf_image(a[:17], a[:17]) == pytest.approx(97.43, abs=0.1)  # the smallest side libvmaf takes


def test_a_failing_ffmpeg_is_a_one_line_data_error(tmp_path, monkeypatch):
  fake = tmp_path / "ffmpeg"  # stands in for an ffmpeg whose libvmaf fails
  fake.write_text("#!/bin/sh\necho 'first line' >&2\necho 'libvmaf: model not found' >&2\nexit 1\n")
  fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
  monkeypatch.setattr(vmaf, "ffmpeg_with_vmaf", lambda: str(fake))
  x = _crops(2, 32)
  with pytest.raises(DataError, match="VMAF of a 32x32 image pair failed in .*ffmpeg: libvmaf: model not found$"):
    vmaf.vmaf_scores(x, x * 0.9)


@needs_vmaf
def test_grayscale_images_score_like_their_rgb_replica():
  g = skdata.camera()[100:164, 100:164, None]
  noisy = np.clip(g + np.random.default_rng(0).normal(0, 8, g.shape), 0, 255).astype(np.uint8)
  assert vmaf.vmaf_image(g, g) == pytest.approx(97.43, abs=0.1)
  # VMAF uses luma only; gray -> YUV and RGB -> YUV round differently, hence not exactly equal
  rgb = vmaf.vmaf_image(np.repeat(g, 3, -1), np.repeat(noisy, 3, -1))
  assert vmaf.vmaf_image(g, noisy) == pytest.approx(rgb, abs=0.5) and rgb < 95

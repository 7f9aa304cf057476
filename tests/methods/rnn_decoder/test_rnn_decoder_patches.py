"""Patch extraction, the boundary rule, codec round trips and whole-image reassembly."""

import numpy as np
import pytest

from jaxcomp.errors import DataError
from jaxcomp.methods.rnn_decoder import patches


def _grid_image(rows, cols, d=2):
  """Each d x d patch filled with its own id r * cols + c (ids < 256), so patches are identifiable."""
  ids = np.arange(rows * cols, dtype=np.uint8).reshape(rows, cols)
  return np.kron(ids, np.ones((d, d), np.uint8))


def test_patches_round_trip():
  img = np.random.default_rng(0).integers(0, 256, (16, 24), dtype=np.uint8)
  p = patches.to_patches(img, 8)
  assert p.shape == (2, 3, 64)
  np.testing.assert_array_equal(p[1, 2], img[8:16, 16:24].reshape(-1))
  np.testing.assert_array_equal(patches.from_patches(p, 8), img)


def test_interior_block_is_row_major_neighbourhood():
  idx = patches.neighbourhood_index(5, 6)
  expected = [(r, c) for r in (1, 2, 3) for c in (2, 3, 4)]
  assert [tuple(x) for x in idx[2, 3]] == expected


def test_boundary_rule_uses_nearest_full_block():
  """Paper, Sec. 3.1: (0, 0) is predicted from patches (0..2, 0..2) — the same 9 as (1, 1) — no padding."""
  idx = patches.neighbourhood_index(4, 5)
  block11 = {tuple(x) for x in idx[1, 1]}
  assert {tuple(x) for x in idx[0, 0]} == block11 == {(r, c) for r in range(3) for c in range(3)}
  assert tuple(idx[0, 0, patches.CENTRE]) == (0, 0)  # the target sits in the centre slot
  assert tuple(idx[0, 0, 0]) == (1, 1)  # ...and the block centre in the target's old slot
  # The bottom-right corner uses the last full block; every index stays inside the image.
  assert {tuple(x) for x in idx[3, 4]} == {(r, c) for r in (1, 2, 3) for c in (2, 3, 4)}
  assert idx[..., 0].min() == 0 and idx[..., 0].max() == 3 and idx[..., 1].max() == 4
  # For every target: 9 distinct patches, the target among them, all within one 3x3 window.
  for r in range(4):
    for c in range(5):
      cells = {tuple(x) for x in idx[r, c]}
      assert len(cells) == 9 and (r, c) in cells and tuple(idx[r, c, 4]) == (r, c)
      rows, cols = zip(*cells)
      assert max(rows) - min(rows) == 2 and max(cols) - min(cols) == 2


def test_make_examples_picks_right_patches():
  orig = _grid_image(4, 5)
  dec = 255 - orig
  ex = patches.make_examples(orig, dec, patch=2)
  assert ex["q"].shape == (20, 9, 4) and ex["target"].shape == (20, 4)
  # Example (0, 0): its centre slot holds decoded patch (0, 0), target is original patch (0, 0).
  np.testing.assert_allclose(ex["q"][0, 4], (255 - 0) / 255.0)
  np.testing.assert_allclose(ex["target"][0], 0.0)
  # Example (2, 3) = index 13, interior: slot 0 is decoded patch (1, 2) with id 7.
  np.testing.assert_allclose(ex["q"][13, 0], (255 - 7) / 255.0)
  np.testing.assert_allclose(ex["target"][13], 13 / 255.0)


def test_too_small_image_is_rejected():
  with pytest.raises(DataError, match="3x3"):
    patches.make_examples(np.zeros((16, 40), np.uint8), np.zeros((16, 40), np.uint8), 8)


def test_identity_decoder_reproduces_codec_output_and_nonmultiple_sizes():
  """Decoding each patch as its centre input must stitch back to exactly the codec's decoded image."""
  rng = np.random.default_rng(1)
  dec = rng.integers(0, 256, (30, 37), dtype=np.uint8)  # not multiples of 8: edge padding + crop
  out = patches.reconstruct(lambda q: q[:, patches.CENTRE], dec, patch=8, batch_size=7)
  np.testing.assert_array_equal(out, dec)


@pytest.mark.parametrize("codec,patch", [("jpeg", 8), ("jpeg2000", 64)])
def test_build_examples_real_codec_rates(codec, patch):
  rng = np.random.default_rng(2)
  y, x = np.mgrid[0:192, 0:192]
  img = np.clip(128 + 60 * np.sin(x / 9.0) * np.cos(y / 13.0) + rng.normal(0, 8, x.shape), 0, 255).astype(np.uint8)
  ex = patches.build_examples([img, img[:, ::-1].copy()], codec=codec, patch=patch, bpp_range=(0.35, 1.02), seed=3)
  per_image = (192 // patch) ** 2
  assert ex["q"].shape == (2 * per_image, 9, patch * patch)
  assert ex["bpp"].max() <= 1.02 + 1e-6 and ex["bpp"].min() > 0.05
  # the decoded input differs from the original target (real lossy coding), but not wildly
  err = np.abs(ex["q"][:, 4] - ex["target"]).mean()
  assert 0.002 < err < 0.2


def test_evaluate_image_with_identity_decoder_equals_codec():
  rng = np.random.default_rng(4)
  y, x = np.mgrid[0:64, 0:64]
  img = np.clip(128 + 50 * np.sin(x / 5.0) + rng.normal(0, 5, x.shape), 0, 255).astype(np.uint8)
  m = patches.evaluate_image(lambda q: q[:, patches.CENTRE], img, codec="jpeg", bpp=0.8, patch=8)
  assert m["bpp"] <= 0.8
  assert m["psnr"] == pytest.approx(m["codec_psnr"]) and m["gain_psnr"] == pytest.approx(0.0, abs=1e-9)
  assert m["vs_codec_ssim"] == pytest.approx(1.0, abs=1e-5)  # the identity decoder returns the codec's image
  assert np.isnan(m["ms_ssim"])  # 64 px < MS-SSIM's minimum side
  assert 15 < m["psnr"] < 60


def test_evaluate_image_whole_image_metrics_against_independent_reference():
  """A decoder that brightens every pixel by 4/255: each figure recomputed from the stitched image with numpy
  (PSNR) and the shared metrics on images built here (SSIM, MS-SSIM on a 192x192 image, above its minimum side)."""
  from jaxcomp.data import transforms
  rng = np.random.default_rng(5)
  y, x = np.mgrid[0:192, 0:200]  # 200: not a multiple of 8 (edge padding and crop on the way)
  img = np.clip(120 + 60 * np.sin(x / 7.0) * np.cos(y / 11.0) + rng.normal(0, 6, x.shape), 0, 250).astype(np.uint8)
  m = patches.evaluate_image(lambda q: q[:, patches.CENTRE] + 4 / 255.0, img, codec="jpeg", bpp=0.5, patch=8)
  dec, nbytes = transforms.jpeg_at_bpp(img[..., None], 0.5)
  dec = dec[..., 0]
  recon = np.clip(dec.astype(np.int32) + 4, 0, 255)
  psnr = lambda a, b: 10 * np.log10(255.0 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))
  assert m["bpp"] == pytest.approx(8.0 * nbytes / img.size) and 0.3 < m["bpp"] <= 0.5
  assert m["psnr"] == pytest.approx(psnr(img, recon), abs=1e-3)
  assert m["codec_psnr"] == pytest.approx(psnr(img, dec), abs=1e-3)
  assert m["vs_codec_psnr"] == pytest.approx(psnr(dec, recon), abs=1e-3)
  assert m["gain_psnr"] == pytest.approx(m["psnr"] - m["codec_psnr"])
  ref = patches.image_metrics(img, recon.astype(np.uint8))
  assert m["ssim"] == pytest.approx(ref["ssim"]) and m["ms_ssim"] == pytest.approx(ref["ms_ssim"])
  assert np.isfinite(m["ms_ssim"]) and np.isfinite(m["codec_ms_ssim"]) and m["ms_ssim"] != m["codec_ms_ssim"]

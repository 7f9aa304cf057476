"""PSNR against skimage and Pillow's YCbCr conversion; batching, jit and gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.metrics
from PIL import Image

from jaxcomp import metrics


@pytest.fixture(scope="module")
def pair():
  x = skimage.data.astronaut()[:64, :96]
  rng = np.random.default_rng(1)
  y = np.clip(x + rng.normal(0, 12, x.shape), 0, 255).round().astype(np.uint8)
  return x, y


def test_psnr_matches_skimage(pair):
  x, y = pair
  ref = skimage.metrics.peak_signal_noise_ratio(x, y, data_range=255)
  np.testing.assert_allclose(metrics.psnr(x, y), ref, rtol=1e-5)
  xf, yf = x / 255.0, y / 255.0
  np.testing.assert_allclose(metrics.psnr(xf, yf, data_range=1.0), ref, rtol=1e-5)


def test_ycbcr_matches_pillow(pair):
  x, _ = pair
  ours = np.asarray(metrics.rgb_to_ycbcr(x))
  pil = np.asarray(Image.fromarray(x).convert("YCbCr"), np.float64)
  # Pillow works in fixed point and truncates to integers: the unrounded conversion is within one level.
  assert np.max(np.abs(ours - pil)) <= 1.0
  assert np.mean(np.abs(ours - pil)) < 0.5


def test_psnr_luma_and_yuv_against_numpy(pair):
  x, y = pair
  m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])  # T.871
  d = (x.astype(np.float64) - y) @ m.T
  p = [skimage.metrics.peak_signal_noise_ratio(np.zeros(d.shape[:2]), d[..., i], data_range=255) for i in range(3)]
  np.testing.assert_allclose(metrics.psnr_luma(x, y), p[0], rtol=1e-5)
  np.testing.assert_allclose(metrics.psnr_yuv(x, y), (4 * p[0] + p[1] + p[2]) / 6, rtol=1e-5)


def test_psnr_yuv_equals_rgb_psnr_for_gray_error():
  # An error equal in R, G and B is all luma (chroma rows sum to 0): PSNR_Y is the RGB PSNR, chroma is inf.
  x = np.full((8, 8, 3), 100.0)
  y = x + 3.0
  np.testing.assert_allclose(metrics.psnr_luma(x, y), metrics.psnr(x, y), rtol=1e-6)
  assert np.isinf(metrics.psnr_yuv(x, y))


def test_identical_is_inf_and_gradient_finite_elsewhere(pair):
  x, y = (jnp.asarray(a, jnp.float32) for a in pair)
  assert np.isinf(metrics.psnr(x, x))
  for fn in (metrics.psnr, metrics.psnr_luma, metrics.psnr_yuv):
    g = jax.grad(lambda a, fn=fn: fn(a, y))(x)
    assert np.all(np.isfinite(g))


def test_batch_shapes_jit_and_vmap(pair):
  x, y = pair
  xb = np.stack([x, y, x])[None].repeat(2, 0)  # [2, 3, H, W, C]
  yb = np.stack([y, y, x])[None].repeat(2, 0)
  for fn in (metrics.psnr, metrics.psnr_luma, metrics.psnr_yuv):
    out = jax.jit(fn)(xb, yb)
    chex.assert_shape(out, (2, 3))
    np.testing.assert_allclose(out[0, 0], fn(x, y), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(fn)(xb, yb), out, rtol=1e-6)


def test_bad_shapes_raise():
  with pytest.raises(metrics.MetricInputError, match="shapes differ"):
    metrics.psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
  with pytest.raises(ValueError, match="3 channels"):
    metrics.psnr_yuv(np.zeros((4, 4, 1)), np.zeros((4, 4, 1)))


def test_bpp():
  assert metrics.bpp(768 * 512 // 8, 512, 768) == 1.0
  np.testing.assert_allclose(metrics.bpp(np.array([100, 200]), 10, 20), [4.0, 8.0])

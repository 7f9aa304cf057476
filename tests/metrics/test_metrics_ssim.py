"""SSIM against skimage, MS-SSIM against pytorch_msssim values stored in ms_ssim_reference.py; gradients."""

import os
import pathlib
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data
import skimage.metrics

from jaxcomp import metrics

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import ms_ssim_reference  # noqa: E402


def _skimage_ssim(x, y, data_range):
  return skimage.metrics.structural_similarity(
      np.asarray(x, np.float64), np.asarray(y, np.float64), gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=data_range, channel_axis=-1)


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_matches_skimage_random(seed):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, (24, 31, 3))
  y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
  np.testing.assert_allclose(metrics.ssim(x, y, data_range=1.0), _skimage_ssim(x, y, 1.0), atol=1e-4)


@pytest.mark.parametrize("name", ["astronaut_noise", "astronaut_blur", "camera_gray_noise", "coffee_quantized"])
def test_ssim_matches_skimage_real(name):
  x, y = ms_ssim_reference.reference_pairs()[name]
  np.testing.assert_allclose(metrics.ssim(x, y, data_range=255), _skimage_ssim(x, y, 255), atol=1e-4)


@pytest.mark.parametrize("name", sorted(ms_ssim_reference.REFERENCE))
def test_ms_ssim_matches_pytorch_msssim(name, request):
  kodak = None
  if name.startswith("kodim"):
    kodak = request.getfixturevalue("kodak_dir")
  x, y = ms_ssim_reference.reference_pairs(kodak)[name]
  np.testing.assert_allclose(metrics.ms_ssim(x, y, data_range=255), ms_ssim_reference.REFERENCE[name], atol=2e-5)


def test_ms_ssim_data_range_invariance_and_identity():
  x, y = ms_ssim_reference.reference_pairs()["astronaut_blur"]
  np.testing.assert_allclose(metrics.ms_ssim(x / 255.0, y / 255.0, data_range=1.0), metrics.ms_ssim(x, y), atol=1e-5)
  np.testing.assert_allclose(metrics.ms_ssim(x, x), 1.0, atol=1e-6)
  np.testing.assert_allclose(metrics.ssim(x, x), 1.0, atol=1e-6)


def test_ms_ssim_too_small_names_size():
  with pytest.raises(ValueError, match=r"160x200 px.*>= 161"):
    metrics.ms_ssim(np.zeros((160, 200, 3)), np.zeros((160, 200, 3)))
  assert metrics.ms_ssim_min_side() == 161
  with pytest.raises(metrics.MetricInputError, match="10x12"):
    metrics.ssim(np.zeros((10, 12, 1)), np.zeros((10, 12, 1)))


def test_odd_sizes_pool_with_edge_repeat():
  # Odd sides: the pooled image must equal pooling the image extended by its last row/column.
  rng = np.random.default_rng(3)
  x = rng.uniform(0, 255, (165, 171, 1))
  y = np.clip(x + rng.normal(0, 30, x.shape), 0, 255)
  xe = np.pad(x, ((0, 1), (0, 1), (0, 0)), mode="edge")
  ye = np.pad(y, ((0, 1), (0, 1), (0, 0)), mode="edge")
  # The first scale differs (extra row/column), so compare the coarse structure only loosely...
  assert abs(float(metrics.ms_ssim(x, y)) - float(metrics.ms_ssim(xe, ye))) < 0.02
  # ...and the pooling itself exactly.
  from jaxcomp.metrics.structural import _pool2
  pooled = np.asarray(_pool2(jnp.asarray(x[None])))[0]
  np.testing.assert_allclose(pooled, xe.reshape(83, 2, 86, 2, 1).mean(axis=(1, 3)), rtol=1e-5)


# Small windows (3x3, sigma 0.5) exercise the same code on images small enough for fast tests: MS-SSIM then needs
# only (3 - 1) * 16 + 1 = 33 px per side.
SMALL = dict(win_size=3, sigma=0.5)


def test_batch_shapes_jit_and_vmap():
  rng = np.random.default_rng(2)
  xb = rng.uniform(0, 255, (2, 3, 36, 40, 3))
  yb = np.clip(xb + rng.normal(0, 25, xb.shape), 0, 255)
  for fn in (metrics.ssim, metrics.ms_ssim):
    f = lambda a, b, fn=fn: fn(a, b, data_range=255.0, **SMALL)
    out = jax.jit(f)(xb, yb)
    chex.assert_shape(out, (2, 3))
    chex.assert_tree_all_finite(out)
    np.testing.assert_allclose(out[1, 2], f(xb[1, 2], yb[1, 2]), atol=1e-6)
    np.testing.assert_allclose(jax.vmap(f)(xb, yb), out, atol=1e-6)


def test_gradients_finite_identical_constant_and_anticorrelated():
  x = jnp.asarray(np.random.default_rng(4).uniform(0, 1, (2, 33, 35, 3)), jnp.float32)
  const = jnp.full_like(x, 0.5)
  for f in (metrics.ssim, metrics.ms_ssim):
    g = jax.jit(jax.grad(lambda a, b, f=f: jnp.sum(1.0 - f(a, b, data_range=1.0, **SMALL))))
    for a, b in ((x, x), (const, const), (const, x), (x, 1.0 - x)):
      chex.assert_tree_all_finite(g(a, b))
  # Anticorrelated inputs clip every factor to 0: value 0 and a zero (not NaN) gradient.
  np.testing.assert_allclose(metrics.ms_ssim(x, 1.0 - x, data_range=1.0, **SMALL), 0.0)
  chex.assert_trees_all_equal(jax.grad(lambda a: jnp.sum(metrics.ms_ssim(a, 1.0 - x, data_range=1.0, **SMALL)))(x),
                              jnp.zeros_like(x))


def test_default_window_gradient_finite_for_identical_images():
  x = jnp.asarray(np.random.default_rng(6).uniform(0, 1, (161, 161, 1)), jnp.float32)
  chex.assert_tree_all_finite(jax.grad(lambda a: metrics.ms_ssim(a, x, data_range=1.0))(x))


_X64_SCRIPT = textwrap.dedent("""
  import jax, jax.numpy as jnp, numpy as np
  from jax.test_util import check_grads
  from jaxcomp import metrics
  assert jnp.zeros(1).dtype == jnp.float64
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.uniform(0, 1, (13, 14, 2)))
  y = jnp.asarray(np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1))
  for f in (metrics.ssim, metrics.psnr):
    check_grads(lambda a, f=f: f(a, y, data_range=1.0), (x,), order=1, modes=["rev"], atol=1e-6, rtol=1e-5)
  x3 = jnp.asarray(rng.uniform(0, 1, (6, 7, 3)))
  y3 = jnp.asarray(np.clip(x3 + rng.normal(0, 0.1, x3.shape), 0, 1))
  for f in (metrics.psnr_luma, metrics.psnr_yuv):
    check_grads(lambda a, f=f: f(a, y3, data_range=1.0), (x3,), order=1, modes=["rev"], atol=1e-6, rtol=1e-5)
  xm = jnp.asarray(rng.uniform(0, 1, (33, 34, 1)))
  ym = jnp.asarray(np.clip(xm + rng.normal(0, 0.1, xm.shape), 0, 1))
  check_grads(lambda a: metrics.ms_ssim(a, ym, data_range=1.0, win_size=3, sigma=0.5), (xm,), order=1,
              modes=["rev"], atol=1e-6, rtol=1e-5, eps=1e-6)
  print("ok")
""")


def test_gradients_match_finite_differences_float64():
  env = dict(os.environ, JAX_ENABLE_X64="1", XLA_FLAGS="", JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", _X64_SCRIPT], env=env, capture_output=True, text=True, timeout=600,
                     cwd=pathlib.Path(__file__).resolve().parents[2])
  assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_ssim_and_ms_ssim_in_one_pass_equals_separate_calls():
  rng = np.random.default_rng(7)
  x = rng.uniform(0, 255, (2, 40, 36, 3))
  y = np.clip(x + rng.normal(0, 30, x.shape), 0, 255)
  s, ms = metrics.ssim_and_ms_ssim(x, y, **SMALL)
  chex.assert_shape([s, ms], (2,))
  np.testing.assert_allclose(s, metrics.ssim(x, y, **SMALL), atol=1e-6)
  np.testing.assert_allclose(ms, metrics.ms_ssim(x, y, **SMALL), atol=1e-6)
  with pytest.raises(TypeError, match="window"):
    metrics.ssim_and_ms_ssim(x, y, window=3)

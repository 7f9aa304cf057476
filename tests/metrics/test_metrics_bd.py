"""Bjøntegaard deltas on curves with a known answer, for both interpolation methods."""

import numpy as np
import pytest

from jaxcomp import metrics

RATE = np.array([0.12, 0.25, 0.5, 0.9, 1.6])
PSNR = np.array([26.1, 28.9, 31.7, 34.2, 37.0])
METHODS = ["cubic", "pchip"]

# Kodak means published in CompressAI's results/image/kodak/{jpeg,compressai-bmshj2018-factorized_mse_cpu}.json
# (JPEG: its first 14 points, 0.22-1.37 bpp), rounded to 4 digits: realistic curves for the reference comparison.
JPEG_BPP = [0.2212, 0.3266, 0.4231, 0.5084, 0.5879, 0.6601, 0.7289, 0.7860, 0.8497, 0.9060, 0.9644, 1.0372, 1.1274,
            1.2398]
JPEG_PSNR = [23.7799, 26.5772, 28.0422, 29.0418, 29.7847, 30.3783, 30.9032, 31.3078, 31.7048, 32.0587, 32.3993,
             32.7899, 33.2347, 33.7926]
JPEG_MSSSIM = [0.8031, 0.8899, 0.9236, 0.9427, 0.9533, 0.9606, 0.9661, 0.9697, 0.9726, 0.9753, 0.9773, 0.9793,
               0.9814, 0.9837]
BMSHJ_BPP = [0.1226, 0.1885, 0.2878, 0.4404, 0.6481, 0.9670, 1.3512, 1.8333]
BMSHJ_PSNR = [26.9088, 28.2179, 29.6169, 31.2771, 32.9561, 35.3810, 37.3969, 39.6213]
BMSHJ_MSSSIM = [0.9100, 0.9360, 0.9555, 0.9704, 0.9806, 0.9879, 0.9922, 0.9951]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("factor", [0.8, 1.0, 1.37])
def test_bd_rate_of_rate_scaled_curve_is_the_factor(method, factor):
  got = metrics.bd_rate(RATE, PSNR, RATE * factor, PSNR, method=method)
  np.testing.assert_allclose(got, (factor - 1) * 100, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("offset", [-0.7, 0.0, 1.25])
def test_bd_psnr_of_shifted_curve_is_the_offset(method, offset):
  np.testing.assert_allclose(metrics.bd_psnr(RATE, PSNR, RATE, PSNR + offset, method=method), offset, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_log_linear_curves_closed_form(method):
  # D = a + b ln R is exact for both fits; a test curve D' = D + c  <=>  R' = R exp(-c / b): BD-rate closed form.
  a, b, c = 30.0, 4.0, 0.8
  r = np.geomspace(0.1, 2.0, 6)
  r_t = np.geomspace(0.15, 2.5, 5)
  got_rate = metrics.bd_rate(r, a + b * np.log(r), r_t, a + c + b * np.log(r_t), method=method)
  np.testing.assert_allclose(got_rate, (np.exp(-c / b) - 1) * 100, atol=1e-9)
  np.testing.assert_allclose(metrics.bd_psnr(r, a + b * np.log(r), r_t, a + c + b * np.log(r_t), method=method), c,
                             atol=1e-9)


def test_order_of_points_does_not_matter():
  p = np.random.default_rng(0).permutation(len(RATE))
  for method in METHODS:
    np.testing.assert_allclose(metrics.bd_rate(RATE, PSNR, RATE[p] * 1.1, PSNR[p], method=method), 10.0, atol=1e-9)


def test_methods_differ_on_a_bent_curve():
  # Sanity that the two methods are distinct computations (they agree only on curves both represent exactly).
  bent = PSNR + np.array([0.0, 0.6, -0.4, 0.5, 0.0])
  c = metrics.bd_rate(RATE, PSNR, RATE, bent, method="cubic")
  p = metrics.bd_rate(RATE, PSNR, RATE, bent, method="pchip")
  assert abs(c - p) > 1e-3


def test_errors():
  with pytest.raises(ValueError, match="at least 4"):
    metrics.bd_rate(RATE[:3], PSNR[:3], RATE[:3], PSNR[:3], method="cubic")
  metrics.bd_rate(RATE[:2], PSNR[:2], RATE[:2], PSNR[:2], method="pchip")
  with pytest.raises(metrics.MetricInputError, match="do not overlap"):
    metrics.bd_rate(RATE, PSNR, RATE, PSNR + 20)
  with pytest.raises(metrics.MetricInputError, match="unknown method"):
    metrics.bd_psnr(RATE, PSNR, RATE, PSNR, method="linear")
  with pytest.raises(metrics.MetricInputError, match="non-positive"):
    metrics.bd_psnr(RATE - 1, PSNR, RATE, PSNR)


# Computed once with the `bjontegaard` package (v1.3.0, another implementation of both methods), by:
#   pip install --no-deps bjontegaard==1.3.0
#   bjontegaard.bd_rate(JPEG_BPP, JPEG_PSNR, BMSHJ_BPP, BMSHJ_PSNR, method=m, require_matching_points=False,
#                       min_overlap=0)   (and likewise with the MS-SSIM lists, and bd_psnr)
BJONTEGAARD_1_3_0 = {
    "cubic": {"rate-psnr": -49.01510609489623, "rate-msssim": -54.79131704614204, "psnr": 3.2119452025512842},
    "pchip": {"rate-psnr": -48.932281219219284, "rate-msssim": -55.893594077431416, "psnr": 3.2118068372819524},
}


@pytest.mark.parametrize("method", METHODS)
def test_matches_bjontegaard_package_on_published_curves(method):
  ref = BJONTEGAARD_1_3_0[method]
  np.testing.assert_allclose(metrics.bd_rate(JPEG_BPP, JPEG_PSNR, BMSHJ_BPP, BMSHJ_PSNR, method=method),
                             ref["rate-psnr"], rtol=1e-9)
  np.testing.assert_allclose(metrics.bd_rate(JPEG_BPP, JPEG_MSSSIM, BMSHJ_BPP, BMSHJ_MSSSIM, method=method),
                             ref["rate-msssim"], rtol=1e-9)
  np.testing.assert_allclose(metrics.bd_psnr(JPEG_BPP, JPEG_PSNR, BMSHJ_BPP, BMSHJ_PSNR, method=method), ref["psnr"],
                             rtol=1e-9)

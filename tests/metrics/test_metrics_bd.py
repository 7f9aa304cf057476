"""Bjøntegaard deltas on curves with a known answer, for both interpolation methods."""

import numpy as np
import pytest

from jaxcomp import metrics

RATE = np.array([0.12, 0.25, 0.5, 0.9, 1.6])
PSNR = np.array([26.1, 28.9, 31.7, 34.2, 37.0])
METHODS = ["cubic", "pchip"]


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

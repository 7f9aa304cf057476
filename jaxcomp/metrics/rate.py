"""Rate in bits per pixel, and Bjøntegaard deltas between rate-distortion curves.

Two ways to interpolate a curve, both in the log-rate domain:
- `"cubic"`: Bjøntegaard's VCEG-M33 (2001): a least-squares cubic polynomial through the points, integrated over
  the overlapping interval. Needs >= 4 points per curve.
- `"pchip"`: piecewise cubic Hermite interpolation (scipy's `PchipInterpolator`, Fritsch-Carlson monotone slopes),
  the later JVET common-test-conditions practice (VCEG-AL22 / JVET CTC spreadsheets) that CompressAI-era papers
  report; it passes through every point and does not overshoot. Needs >= 2 points per curve.

BD-rate fits log(rate) as a function of distortion and returns the mean rate difference over the common distortion
range, in percent (negative: the test codec needs fewer bits). BD-PSNR (BD-distortion) fits distortion as a function
of log(rate) and returns the mean distortion difference over the common log-rate range, in the distortion's unit.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import interpolate

from jaxcomp.metrics.common import MetricInputError

Method = Literal["cubic", "pchip"]


def bpp(num_bytes, height, width):
  """Bits per pixel of `num_bytes` bytes coding a `height` x `width` image (scalars or broadcasting arrays)."""
  return 8.0 * np.asarray(num_bytes, np.float64) / (np.asarray(height, np.float64) * np.asarray(width, np.float64))


def _prepare(rate, dist, which: str, min_points: int) -> tuple[np.ndarray, np.ndarray]:
  rate = np.asarray(rate, np.float64).ravel()
  dist = np.asarray(dist, np.float64).ravel()
  if rate.shape != dist.shape:
    raise MetricInputError(f"bd: {which} curve has {rate.size} rates but {dist.size} distortions")
  if rate.size < min_points:
    raise MetricInputError(f"bd: {which} curve has {rate.size} points; this method needs at least {min_points}")
  if not (np.all(np.isfinite(rate)) and np.all(np.isfinite(dist))) or np.any(rate <= 0):
    raise MetricInputError(f"bd: {which} curve has non-finite values or non-positive rates: rate={rate.tolist()}")
  return np.log(rate), dist


def _mean_over_overlap(xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, yb: np.ndarray, method: str,
                       what: str) -> float:
  """Mean of (fit_b - fit_a) over the overlap of the two x ranges, each fit being y as a function of x."""
  lo = max(xa.min(), xb.min())
  hi = min(xa.max(), xb.max())
  if not hi > lo:
    raise MetricInputError(f"bd: the two curves' {what} ranges do not overlap "
                           f"([{xa.min():.4g}, {xa.max():.4g}] vs [{xb.min():.4g}, {xb.max():.4g}])")
  integrals = []
  for x, y in ((xa, ya), (xb, yb)):
    if method == "cubic":
      antider = np.polyint(np.polyfit(x, y, 3))
      integrals.append(np.polyval(antider, hi) - np.polyval(antider, lo))
    elif method == "pchip":
      order = np.argsort(x)
      x, y = x[order], y[order]
      if np.any(np.diff(x) <= 0):
        raise MetricInputError(f"bd: a curve has repeated {what} values {x.tolist()}; pchip needs distinct ones")
      integrals.append(float(interpolate.PchipInterpolator(x, y).integrate(lo, hi)))
    else:
      raise MetricInputError(f"bd: unknown method {method!r}; use 'cubic' or 'pchip'")
  return float((integrals[1] - integrals[0]) / (hi - lo))


def _min_points(method: str) -> int:
  if method not in ("cubic", "pchip"):
    raise MetricInputError(f"bd: unknown method {method!r}; use 'cubic' or 'pchip'")
  return 4 if method == "cubic" else 2


def bd_rate(rate_anchor, dist_anchor, rate_test, dist_test, method: Method = "cubic") -> float:
  """Bjøntegaard delta rate of the test curve against the anchor, in percent (negative is better).

  Rates may be in any unit (bpp, kbit/s) as long as both curves use the same one; distortions are quality values
  where higher is better (PSNR in dB, MS-SSIM, or MS-SSIM in dB).
  """
  k = _min_points(method)
  la, da = _prepare(rate_anchor, dist_anchor, "anchor", k)
  lt, dt = _prepare(rate_test, dist_test, "test", k)
  mean_log_ratio = _mean_over_overlap(da, la, dt, lt, method, "distortion")
  return float((np.exp(mean_log_ratio) - 1.0) * 100.0)


def bd_psnr(rate_anchor, dist_anchor, rate_test, dist_test, method: Method = "cubic") -> float:
  """Bjøntegaard delta distortion (BD-PSNR for PSNR curves) of the test curve against the anchor.

  The mean quality gain at equal rate, in the distortion's own unit (dB for PSNR); positive is better.
  """
  k = _min_points(method)
  la, da = _prepare(rate_anchor, dist_anchor, "anchor", k)
  lt, dt = _prepare(rate_test, dist_test, "test", k)
  return _mean_over_overlap(la, da, lt, dt, method, "log-rate")

"""Table 1 statistics of the CAE-ADMM report (docs/cae_admm/report.py): t intervals against hand-computed values, the
paired interval, the bootstrap against the t interval on normal data, and the table's pairing checks."""

import importlib.util
import pathlib

import numpy as np
import pytest

from jaxcomp import errors

# A reproduction script in docs/, not a library module: loaded from its file.
_spec = importlib.util.spec_from_file_location(
    "cae_admm_report", pathlib.Path(__file__).resolve().parents[3] / "docs" / "cae_admm" / "report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def test_t_interval_matches_hand_computation():
  x = [1.0, 2.0, 4.0, 7.0]
  # mean 3.5, sample sd sqrt(7), t(0.975, 3 dof) = 3.182446305 (statistical tables).
  mean, half = report.t_interval(x)
  assert mean == pytest.approx(3.5)
  assert half == pytest.approx(3.182446305 * np.sqrt(7.0) / 2.0, rel=1e-8)
  # 24 images, the Kodak case: t(0.975, 23 dof) = 2.068657610.
  y = np.arange(24.0)
  assert report.t_interval(y)[1] == pytest.approx(2.068657610 * np.std(y, ddof=1) / np.sqrt(24), rel=1e-8)
  with pytest.raises(errors.DataError, match="at least 2 values"):
    report.t_interval([1.0])


def test_paired_interval_removes_the_shared_spread():
  rng = np.random.default_rng(0)
  base = rng.uniform(0.2, 2.0, 24)  # large between-image spread
  a, b = base - 0.05 + rng.normal(0, 0.01, 24), base
  diff, half = report.paired_interval(a, b)
  assert diff == pytest.approx(np.mean(a - b))
  assert half < 0.01 < report.t_interval(a)[1]  # the paired interval sees the shift, the unpaired ones cannot
  assert diff + half < 0
  with pytest.raises(errors.DataError, match="not pairs"):
    report.paired_interval(a, b[:5])


def test_bootstrap_agrees_with_t_on_normal_data():
  x = np.random.default_rng(1).normal(3.0, 1.0, 200)
  mean, half = report.t_interval(x)
  lo, hi = report.bootstrap_interval(x, samples=4000)
  assert lo < mean < hi
  assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)


def test_table1_rows_and_pairing():
  rows_a = [{"image": f"k{i}", "bpp": 0.3 + 0.01 * i, "zeros": 0.5, "psnr-rgb": 21.0 + i, "ssim-rgb": 0.6,
             "ms-ssim-rgb": float("nan") if i == 0 else 0.8} for i in range(5)]
  rows_b = [{**r, "bpp": r["bpp"] + 0.05 + 0.001 * i, "zeros": 0.3 + 0.01 * i} for i, r in enumerate(rows_a)]
  t = {r["metric"]: r for r in report.table1(rows_a, rows_b)}
  assert set(t) == {"bpp", "zeros", "psnr-rgb", "ssim-rgb"}  # MS-SSIM skipped: an image had none
  assert t["bpp"]["diff"] == pytest.approx(-0.052)
  assert t["bpp"]["admm_higher"] == 0 and t["zeros"]["admm_higher"] == 5
  assert t["bpp"]["diff_boot_lo"] <= t["bpp"]["diff"] <= t["bpp"]["diff_boot_hi"]
  assert "| bpp |" in report.table1_markdown(list(t.values()))
  with pytest.raises(errors.DataError, match="same images"):
    report.table1(rows_a, rows_b[::-1])

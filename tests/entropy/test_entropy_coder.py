"""Integer CDF tables and range coding: exact round trips (hypothesis), tails through the escape path."""

import chex
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcomp import errors
from jaxcomp.entropy.coder import RangeCoder
from jaxcomp.entropy.models import GaussianConditional
from jaxcomp.entropy.tables import (check_tables, gaussian_tables, load_tables, make_tables, quantize_pmfs,
                                    save_tables)


def _random_tables(rng, T=4, precision=16):
  lengths = rng.integers(1, 40, size=T)
  pmf = rng.random((T, lengths.max())) ** 3
  return make_tables(pmf, lengths, rng.integers(-50, 50, size=T), rng.random(T) * 1e-3, precision)


def test_quantized_pmfs_are_valid_and_close():
  rng = np.random.default_rng(0)
  pmf = rng.dirichlet(np.ones(20), size=3)
  lengths = np.array([20, 12, 5])
  pmf[1, 12:] = pmf[2, 5:] = 0
  tails = np.array([1e-9, 1e-3, 0.0])
  cdf = quantize_pmfs(pmf, lengths, tails, precision=16)
  chex.assert_shape(cdf, (3, 22))
  freqs = np.diff(cdf, axis=1)
  for t, L in enumerate(lengths):
    assert cdf[t, 0] == 0 and cdf[t, L + 1] == 1 << 16 and np.all(freqs[t, : L + 1] >= 1)
    assert np.all(cdf[t, L + 1:] == 1 << 16)
    p = pmf[t, :L] / (pmf[t, :L].sum() + tails[t])
    np.testing.assert_allclose(freqs[t, :L] / 65536, p, atol=3e-4)


def test_gaussian_tables_match_scipy():
  t = gaussian_tables(GaussianConditional())
  check_tables(t)
  assert t["cdf"].shape[0] == 64
  for i in (0, 20, 63):
    L, off = t["cdf_length"][i] - 2, t["offset"][i]
    s = t["scale_table"][i]
    k = np.arange(L) + off
    ref = scipy.stats.norm.cdf(k + 0.5, scale=s) - scipy.stats.norm.cdf(k - 0.5, scale=s)
    np.testing.assert_allclose(np.diff(t["cdf"][i, : L + 1]) / 65536, ref, atol=2e-4)
    assert off == -(L - 1) // 2  # symmetric support


def test_check_tables_rejects_malformed():
  rng = np.random.default_rng(1)
  t = _random_tables(rng)
  bad = dict(t, cdf=t["cdf"].copy())
  bad["cdf"][0, 1] = bad["cdf"][0, 2] + 1  # decreasing
  with pytest.raises(errors.CheckpointError, match="malformed"):
    check_tables(bad)
  with pytest.raises(errors.CheckpointError, match="missing"):
    check_tables({"cdf": t["cdf"]})


def test_save_load_tables(tmp_path):
  rng = np.random.default_rng(2)
  tables = {"entropy_bottleneck": dict(_random_tables(rng), medians=np.float32([0.5, -1, 2, 3])),
            "gaussian_conditional": _random_tables(rng, T=3)}
  save_tables(tmp_path / "t.npz", tables)
  back = load_tables(tmp_path / "t.npz")
  chex.assert_trees_all_equal(back, tables)
  with pytest.raises(errors.CheckpointError, match="cannot read"):
    load_tables(tmp_path / "missing.npz")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 300), tail_frac=st.floats(0, 1),
       tail_scale=st.sampled_from([10, 1000, 2**20, 2**30]))
def test_round_trip_is_exact_including_far_tails(seed, n, tail_frac, tail_scale):
  rng = np.random.default_rng(seed)
  tables = _random_tables(rng, T=5)
  coder = RangeCoder(tables)
  idx = rng.integers(0, 5, size=n)
  lo = tables["offset"][idx]
  values = lo + rng.integers(0, tables["cdf_length"][idx] - 2 + 1)  # inside the table (or one past: escape)
  tails = rng.random(n) < tail_frac
  values[tails] = rng.integers(-tail_scale, tail_scale + 1, size=tails.sum())
  data = coder.encode(values, idx)
  np.testing.assert_array_equal(coder.decode(data, idx), values)


@settings(max_examples=20, deadline=None)
@given(values=hnp.arrays(np.int64, st.integers(1, 64), elements=st.integers(-2**30, 2**30)))
def test_round_trip_arbitrary_int_arrays(values):
  coder = RangeCoder(make_tables(np.array([[0.2, 0.5, 0.3]]), np.array([3]), np.array([-1]), np.array([1e-6])))
  idx = np.zeros(values.shape, np.int32)
  np.testing.assert_array_equal(coder.decode(coder.encode(values, idx), idx), values)


def test_round_trip_keeps_shape_and_unsorted_indexes():
  rng = np.random.default_rng(3)
  tables = _random_tables(rng, T=3)
  coder = RangeCoder(tables)
  idx = rng.integers(0, 3, size=(4, 5, 6))
  values = tables["offset"][idx] + 1
  out = coder.decode(coder.encode(values, idx), idx)
  chex.assert_shape(out, (4, 5, 6))
  np.testing.assert_array_equal(out, values)


def test_bits_match_information_content():
  """Coded length ~ sum of -log2 of the quantized table probabilities (range coding is near-optimal)."""
  rng = np.random.default_rng(4)
  pmf = np.exp(-np.abs(np.arange(31) - 15) / 2.0)[None]
  tables = make_tables(pmf, np.array([31]), np.array([-15]), np.array([1e-9]))
  coder = RangeCoder(tables)
  freqs = np.diff(tables["cdf"][0])[:31]
  values = rng.choice(31, size=50000, p=freqs / freqs.sum()) - 15
  idx = np.zeros_like(values)
  bits = 8 * len(coder.encode(values, idx))
  info = -np.log2(freqs[values + 15] / 65536).sum()
  assert info <= bits <= info * 1.001 + 64


def test_bad_inputs():
  coder = RangeCoder(make_tables(np.ones((2, 3)), np.array([3, 3]), np.array([0, 0]), np.array([0.1, 0.1])))
  with pytest.raises(ValueError, match="table indexes"):
    coder.encode(np.zeros(3), np.array([0, 1, 2]))
  with pytest.raises(ValueError, match="exceeds"):
    coder.encode(np.array([2**31]), np.array([0]))
  with pytest.raises(errors.BitstreamError, match="whole number of words"):
    coder.decode(b"abc", np.zeros(3, np.int32))

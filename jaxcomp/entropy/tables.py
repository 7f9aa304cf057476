"""Integer CDF tables built once from learned densities (the `finalize` step), stored with the checkpoint.

A table set is a plain dict of numpy arrays (a pytree orbax saves as is, or `save_tables` writes as .npz):

- `cdf`: int32 [T, Lmax + 2]. Row t is the CDF of table t at `precision` bits: `cdf[t, 0] = 0`,
  `cdf[t, k + 1] - cdf[t, k] >= 1` is the frequency of symbol k for `k < L_t` (the integer value
  `offset[t] + k`) and of the escape symbol `k = L_t`; `cdf[t, L_t + 1] = 2**precision`; padded with
  `2**precision` beyond.
- `cdf_length`: int32 [T], `L_t + 2` (number of meaningful CDF entries, CompressAI's convention).
- `offset`: int32 [T], the integer value of symbol 0 of table t.
- `precision`: int32 scalar.
- `medians`: float32 [C] (EntropyBottleneck tables only): values are coded as `round(y - medians)` and decoded as
  `symbols + medians`, so the decoder uses these stored floats, never recomputed ones.

Integer tables are what make a file decodable on any machine: the decoder never evaluates a learned density.
"""

from __future__ import annotations

import io
import os
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp import errors
from jaxcomp.entropy.models import EntropyBottleneck, GaussianConditional, gaussian_table_pmfs

DEFAULT_PRECISION = 16
Tables = dict  # {"cdf", "cdf_length", "offset", "precision"[, "medians"]} of numpy arrays


def quantize_pmfs(pmf_TL: np.ndarray, lengths_T: np.ndarray, tails_T: np.ndarray,
                  precision: int = DEFAULT_PRECISION) -> np.ndarray:
  """Float pmfs (+ tail mass for the escape symbol) -> integer CDFs [T, Lmax + 2] summing to `2**precision`.

  Every symbol (and the escape) gets a frequency >= 1, so any value can be coded; the other frequencies are
  proportional to the pmf (largest-remainder rounding). Deterministic (numpy float64, then integers).
  """
  total = 1 << precision
  T, Lmax = pmf_TL.shape
  if np.any(lengths_T + 1 > total // 2):
    raise ValueError(f"a table of {lengths_T.max()} symbols does not fit {precision}-bit frequencies")
  cols = np.arange(Lmax + 1)[None, :]
  body = np.concatenate([np.asarray(pmf_TL, np.float64), np.zeros((T, 1))], axis=1)
  body[np.arange(T), lengths_T] = np.asarray(tails_T, np.float64)
  body = np.where(cols <= lengths_T[:, None], np.nan_to_num(np.maximum(body, 0.0)), 0.0)
  body = body / np.maximum(body.sum(axis=1, keepdims=True), 1e-300)
  freqs = np.zeros((T, Lmax + 1), np.int64)
  for t in range(T):
    p = body[t, : lengths_T[t] + 1]
    # Largest-remainder quantization with a floor of 1: shrink the scale until the floored, clamped frequencies
    # fit, then hand the remainder to the largest fractional parts. Mass moves only to improbable symbols.
    scale = float(total)
    for _ in range(64):
      f = np.maximum(1.0, np.floor(p * scale))
      excess = f.sum() - total
      if excess <= 0:
        break
      scale -= excess
    else:  # always fits: sum(max(1, floor(p * s))) <= (L + 1) + s
      scale = float(total - p.size)
      f = np.maximum(1.0, np.floor(p * scale))
    frac = np.where(f > 1.0, p * scale - f, p * scale - 1.0)
    remainder = int(total - f.sum())
    order = np.argsort(-frac, kind="stable")
    while remainder > 0:
      take = order[: min(remainder, order.size)]
      f[take] += 1
      remainder -= take.size
    freqs[t, : lengths_T[t] + 1] = f.astype(np.int64)
  cdf = np.zeros((T, Lmax + 2), np.int64)
  cdf[:, 1:] = np.cumsum(freqs, axis=1)  # frequencies past the escape are 0, so the padding stays at `total`
  return cdf.astype(np.int32)


def make_tables(pmf_TL, lengths_T, offsets_T, tails_T, precision=DEFAULT_PRECISION, **extra) -> Tables:
  cdf = quantize_pmfs(np.asarray(pmf_TL), np.asarray(lengths_T, np.int64), np.asarray(tails_T), precision)
  tables = {"cdf": cdf, "cdf_length": (np.asarray(lengths_T) + 2).astype(np.int32),
            "offset": np.asarray(offsets_T, np.int32), "precision": np.array(precision, np.int32)}
  tables.update({k: np.asarray(v) for k, v in extra.items()})
  return tables


def bottleneck_tables(bottleneck: EntropyBottleneck, variables: Mapping, precision: int = DEFAULT_PRECISION,
                      max_symbols: int | None = None) -> Tables:
  """Tables of an `EntropyBottleneck` from its variables (`{"params": {...matrix0..., quantiles}}`).

  Table c covers the integers from `ceil(median - lower quantile)` below to `ceil(upper quantile - median)` above
  the median (CompressAI's `update()`); the learned tail mass outside becomes the escape frequency.
  `max_symbols` (odd is best) bounds each table to `(max_symbols - 1) // 2` values on each side of the median, so
  the `cdf` array never exceeds `max_symbols + 2` columns (a fixed-shape checkpoint item); values beyond take the
  escape path, so coding stays lossless.
  """
  bound = bottleneck.bind(variables)
  q = np.asarray(variables["params"]["quantiles"], np.float32)[:, 0, :]
  medians = q[:, 1]
  cap = (1 << (precision - 2)) // 2 - 1  # keeps every table well inside the frequency budget
  if max_symbols is not None:
    if max_symbols < 1:
      raise errors.ConfigError(f"max_symbols={max_symbols} must be >= 1")
    cap = min(cap, (int(max_symbols) - 1) // 2)
  minima = np.clip(np.ceil(medians - q[:, 0]), 0, cap).astype(np.int64)
  maxima = np.clip(np.ceil(q[:, 2] - medians), 0, cap).astype(np.int64)
  lengths = minima + maxima + 1
  start = medians - minima.astype(np.float32)
  samples = start[:, None] + np.arange(lengths.max(), dtype=np.float32)[None, :]
  pmf = np.asarray(jax.jit(bound.table_pmf)(jnp.asarray(samples)), np.float64)
  pmf = np.where(np.arange(lengths.max())[None, :] < lengths[:, None], pmf, 0.0)
  lo = np.asarray(bound._logits_cumulative(jnp.asarray(start - 0.5)[:, None, None]))[:, 0, 0]
  hi = np.asarray(bound._logits_cumulative(jnp.asarray(start + lengths - 0.5)[:, None, None]))[:, 0, 0]
  tails = 1.0 / (1.0 + np.exp(-lo.astype(np.float64))) + 1.0 / (1.0 + np.exp(hi.astype(np.float64)))
  return make_tables(pmf, lengths, -minima, tails, precision, medians=medians.astype(np.float32))


def gaussian_tables(gaussian: GaussianConditional, precision: int = DEFAULT_PRECISION) -> Tables:
  """Tables of a `GaussianConditional`: one per scale of its table (closed form, float64 scipy)."""
  pmf, lengths, offsets, tails = gaussian_table_pmfs(gaussian.scale_table, gaussian.tail_mass)
  return make_tables(pmf, lengths, offsets, tails, precision,
                     scale_table=np.asarray(gaussian.scale_table, np.float32))


def pad_tables(tables: Mapping, width: int, name: str = "tables") -> Tables:
  """`tables` with `cdf` padded (with `2**precision`, as `make_tables` pads) to `width` columns: the same coding
  tables in a fixed shape, e.g. for a checkpoint item whose shape must not change during training."""
  t = {k: np.asarray(v) for k, v in tables.items()}
  cdf = t["cdf"]
  if cdf.shape[1] > width:
    raise errors.CheckpointError(f"{name}: CDF tables are {cdf.shape[1]} columns wide, more than {width}")
  pad = np.full((cdf.shape[0], width - cdf.shape[1]), 1 << int(t["precision"]), cdf.dtype)
  t["cdf"] = np.concatenate([cdf, pad], axis=1)
  return t


def trim_tables(tables: Mapping) -> Tables:
  """`tables` with the `cdf` padding beyond the longest table removed: the canonical form of a table set."""
  t = {k: np.asarray(v) for k, v in tables.items()}
  t["cdf"] = t["cdf"][:, : int(np.max(t["cdf_length"]))]
  return t


def check_tables(tables: Mapping, name: str = "tables") -> None:
  """Raises `CheckpointError` unless `tables` is a well-formed table set."""
  try:
    cdf, length = np.asarray(tables["cdf"]), np.asarray(tables["cdf_length"])
    offset, precision = np.asarray(tables["offset"]), int(tables["precision"])
  except (KeyError, TypeError) as e:
    raise errors.CheckpointError(f"{name}: not a coding table set (missing {e})") from None
  ok = (cdf.ndim == 2 and length.shape == offset.shape == (cdf.shape[0],) and np.all(length >= 3)
        and np.all(length <= cdf.shape[1]) and 1 <= precision <= 24)
  if ok:
    freqs = np.diff(cdf.astype(np.int64), axis=1)
    valid = np.arange(1, cdf.shape[1])[None, :] < length[:, None]
    ok = (np.all(cdf[:, 0] == 0) and np.all(freqs[valid] >= 1)
          and np.all(cdf[np.arange(cdf.shape[0]), length - 1] == (1 << precision)))
  if not ok:
    raise errors.CheckpointError(f"{name}: malformed CDF tables (non-increasing, wrong total or wrong shapes)")


def save_tables(path: str | os.PathLike, tables: Mapping[str, Mapping[str, np.ndarray]]) -> None:
  """Writes `{"entropy_bottleneck": tables, ...}` as one .npz (keys `name/field`), atomically."""
  from jaxcomp.io_utils import atomic_write
  flat = {f"{name}/{k}": np.asarray(v) for name, t in tables.items() for k, v in t.items()}
  buf = io.BytesIO()
  np.savez(buf, **flat)
  with atomic_write(path, "wb") as f:
    f.write(buf.getvalue())


def load_tables(path: str | os.PathLike) -> dict[str, Tables]:
  """Reads what `save_tables` wrote."""
  try:
    with np.load(path, allow_pickle=False) as z:
      out: dict[str, Tables] = {}
      for key in z.files:
        name, field = key.split("/", 1)
        out.setdefault(name, {})[field] = z[key]
  except (OSError, ValueError) as e:
    raise errors.CheckpointError(f"{path}: cannot read coding tables ({e})") from None
  return out

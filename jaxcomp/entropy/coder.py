"""Range coding of integer symbols with per-element tables, through constriction's `RangeEncoder`/`RangeDecoder`.

`RangeCoder(tables)` turns a table set (see `jaxcomp.entropy.tables`) into one constriction `Categorical` model per
table, once. `encode(values, indexes)` codes `values[i]` with table `indexes[i]`:

1. Elements are grouped by table (a stable sort of the indexes; the decoder knows the indexes, so it regroups
   identically) and each group is coded with one vectorised constriction call.
2. A value outside its table's range is coded as the table's escape symbol, and after all regular symbols its
   overflow is appended losslessly: the zig-zag mapped overflow `v >= 0` is written as `n = floor(log2(v + 1))`
   under a uniform model over 0..31, then the `n` low bits of `v + 1` under uniform models (at most 16 bits per
   call) — an exp-Golomb code with a fixed 5-bit prefix, like CompressAI's bypass coding.

Both directions are vectorised over whole groups, so numpy glue is small next to constriction's own time.
The integer frequencies are passed to constriction as exact float64 ratios `freq / 2**precision`; constriction's
fixed-point model construction from them is deterministic code, identical on every machine.
"""

from __future__ import annotations

from typing import Mapping

import constriction
import numpy as np

from jaxcomp import errors
from jaxcomp.entropy.tables import check_tables

_LEN_BITS = 5          # the overflow's bit count n < 32 is coded uniformly over 32 values
_CHUNK = 16            # payload bits per uniform call (constriction's uniform sizes must be < 2**24)
MAX_ABS_VALUE = 1 << 30


def _uniform_family():
  return constriction.stream.model.Uniform()


class RangeCoder:
  """Per-table categorical models built once from integer CDF tables.

  Attributes:
    num_tables: T.
  """

  def __init__(self, tables: Mapping[str, np.ndarray], name: str = "tables"):
    check_tables(tables, name)
    cdf = np.asarray(tables["cdf"], np.int64)
    self._length = np.asarray(tables["cdf_length"], np.int64) - 2  # regular symbols per table; escape = length
    self._offset = np.asarray(tables["offset"], np.int64)
    self._length32, self._offset32 = self._length.astype(np.int32), self._offset.astype(np.int32)
    scale = float(1 << int(tables["precision"]))
    self._models = []
    for t in range(cdf.shape[0]):
      freqs = np.diff(cdf[t, : self._length[t] + 2])
      self._models.append(constriction.stream.model.Categorical(freqs / scale, perfect=False))
    self.num_tables = cdf.shape[0]

  def _group(self, indexes: np.ndarray):
    idx = np.asarray(indexes).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= self.num_tables):
      raise ValueError(f"table indexes must lie in [0, {self.num_tables}), got [{idx.min()}, {idx.max()}]")
    counts = np.bincount(idx, minlength=self.num_tables)
    if idx.size < 2 or np.all(idx[1:] >= idx[:-1]):
      return idx, None, counts  # already grouped (channel-major factorized latents): no permutation needed
    # A stable radix sort on 16-bit keys is fast; the decoder redoes the same grouping from the same indexes.
    key = idx.astype(np.uint16) if self.num_tables <= 1 << 16 else idx
    order = np.argsort(key, kind="stable")
    return idx, order, counts

  def _per_element(self, table_values: np.ndarray, idx_sorted: np.ndarray, order, counts) -> np.ndarray:
    """`table_values[idx]` for grouped indexes: a repeat when already grouped (cheaper than a gather)."""
    if order is None:
      present = np.flatnonzero(counts)
      return np.repeat(table_values[present], counts[present])
    return table_values[idx_sorted]

  def encode(self, values: np.ndarray, indexes: np.ndarray) -> bytes:
    """Codes int `values` with the tables `indexes` (same shape); returns the compressed bytes."""
    values = np.asarray(values).reshape(-1)
    idx, order, counts = self._group(indexes)
    if values.shape != idx.shape:
      raise ValueError(f"values {values.shape} and indexes {idx.shape} differ in size")
    if values.size and max(-int(values.min()), int(values.max())) > MAX_ABS_VALUE:
      raise ValueError(f"a value of magnitude {np.abs(values).max()} exceeds the coder's limit 2**30")
    values = values.astype(np.int32, copy=False)
    if order is not None:
      values, idx = values[order], idx[order]
    s = values - self._per_element(self._offset32, idx, order, counts)
    length = self._per_element(self._length32, idx, order, counts)
    # One unsigned compare finds both s < 0 (wraps to a huge value) and s >= length.
    escape = s.view(np.uint32) >= length.view(np.uint32)
    any_escape = bool(escape.any())
    syms = np.where(escape, length, s) if any_escape else s
    enc = constriction.stream.queue.RangeEncoder()
    start = 0
    for t in np.flatnonzero(counts):
      end = start + counts[t]
      enc.encode(syms[start:end], self._models[t])
      start = end
    if any_escape:
      s_esc, len_esc = s[escape].astype(np.int64), length[escape].astype(np.int64)
      v = np.where(s_esc < 0, -2 * s_esc - 1, 2 * (s_esc - len_esc))  # zig-zag overflow, >= 0
      _encode_overflow(enc, v)
    return enc.get_compressed().astype("<u4", copy=False).tobytes()

  def decode(self, data: bytes, indexes: np.ndarray) -> np.ndarray:
    """Inverse of `encode`: int32 values of `indexes`' shape. Raises `BitstreamError` on undecodable data."""
    shape = np.shape(indexes)
    idx, order, counts = self._group(indexes)
    if len(data) % 4:
      raise errors.BitstreamError(f"a range-coded stream of {len(data)} bytes is not a whole number of words")
    words = np.frombuffer(data, "<u4").astype(np.uint32)
    idx_sorted = idx if order is None else idx[order]
    try:
      dec = constriction.stream.queue.RangeDecoder(words)
      syms = np.empty(idx.size, np.int32)
      start = 0
      for t in np.flatnonzero(counts):
        end = start + counts[t]
        syms[start:end] = dec.decode(self._models[t], int(counts[t]))
        start = end
      length = self._per_element(self._length32, idx_sorted, order, counts)
      escape = syms == length
      if escape.any():
        v = _decode_overflow(dec, int(escape.sum()))
        len_esc = length[escape].astype(np.int64)
        s_esc = np.where(v % 2 == 1, -(v + 1) // 2, v // 2 + len_esc)
        if np.abs(s_esc).max() > 2 * MAX_ABS_VALUE:
          raise ValueError("overflow values out of range")
        syms[escape] = s_esc
    except BaseException as e:  # constriction reports corrupt input as a Rust panic (a BaseException)
      if isinstance(e, (KeyboardInterrupt, SystemExit)):
        raise
      raise errors.BitstreamError(f"range-coded stream cannot be decoded ({type(e).__name__}: {e})") from None
    values = syms + self._per_element(self._offset32, idx_sorted, order, counts)
    if order is not None:
      unsorted = np.empty_like(values)
      unsorted[order] = values
      values = unsorted
    return values.reshape(shape)


  def encode_rows(self, values_TN: np.ndarray) -> bytes:
    """Fast path when row t of `values_TN` [T, N] is coded with table t (factorized latents, channel-major).

    Same stream as `encode(values_TN, row indexes)`, without building per-element indexes.
    """
    values = np.asarray(values_TN)
    if values.ndim != 2 or values.shape[0] != self.num_tables:
      raise ValueError(f"encode_rows expects [{self.num_tables}, N] values, got {values.shape}")
    if values.size and max(-int(values.min()), int(values.max())) > MAX_ABS_VALUE:
      raise ValueError(f"a value of magnitude {np.abs(values).max()} exceeds the coder's limit 2**30")
    s = values.astype(np.int32, copy=False) - self._offset32[:, None]
    length = self._length32[:, None]
    escape = s.view(np.uint32) >= length.view(np.uint32)
    any_escape = bool(escape.any())
    syms = np.where(escape, length, s) if any_escape else s
    enc = constriction.stream.queue.RangeEncoder()
    if values.shape[1]:
      for t in range(self.num_tables):
        enc.encode(syms[t], self._models[t])
    if any_escape:
      s_esc = s[escape].astype(np.int64)
      len_esc = np.broadcast_to(length, s.shape)[escape].astype(np.int64)
      _encode_overflow(enc, np.where(s_esc < 0, -2 * s_esc - 1, 2 * (s_esc - len_esc)))
    return enc.get_compressed().astype("<u4", copy=False).tobytes()

  def decode_rows(self, data: bytes, n: int) -> np.ndarray:
    """Inverse of `encode_rows`: int32 [T, n]."""
    if len(data) % 4:
      raise errors.BitstreamError(f"a range-coded stream of {len(data)} bytes is not a whole number of words")
    syms = np.empty((self.num_tables, n), np.int32)
    length = self._length32[:, None]
    try:
      dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
      if n:
        for t in range(self.num_tables):
          syms[t] = dec.decode(self._models[t], n)
      escape = syms == length
      if escape.any():
        v = _decode_overflow(dec, int(escape.sum()))
        len_esc = np.broadcast_to(length, syms.shape)[escape].astype(np.int64)
        s_esc = np.where(v % 2 == 1, -(v + 1) // 2, v // 2 + len_esc)
        if np.abs(s_esc).max() > 2 * MAX_ABS_VALUE:
          raise ValueError("overflow values out of range")
        syms[escape] = s_esc
    except BaseException as e:  # constriction reports corrupt input as a Rust panic (a BaseException)
      if isinstance(e, (KeyboardInterrupt, SystemExit)):
        raise
      raise errors.BitstreamError(f"range-coded stream cannot be decoded ({type(e).__name__}: {e})") from None
    return syms + self._offset32[:, None]


def _encode_overflow(enc, v: np.ndarray) -> None:
  """Codes non-negative ints `v` (< 2**31 + 2**30) as a 5-bit length prefix then the bits below the top one."""
  v1 = v.astype(np.int64) + 1
  n = np.floor(np.log2(v1.astype(np.float64))).astype(np.int64)
  n = n - (np.left_shift(1, n) > v1) + (np.left_shift(1, n + 1) <= v1)  # exact despite float log2
  enc.encode(n.astype(np.int32), _uniform_family(), np.full(n.size, 1 << _LEN_BITS, np.int32))
  payload = v1 - np.left_shift(1, n)
  for lo in (_CHUNK, 0):  # high chunk (bits 16..30) first, then bits 0..15
    bits = np.clip(n - lo, 0, _CHUNK)
    use = bits > 0
    if use.any():
      chunk = np.right_shift(payload[use], lo) & ((1 << _CHUNK) - 1)
      enc.encode(chunk.astype(np.int32), _uniform_family(), np.left_shift(1, bits[use]).astype(np.int32))


def _decode_overflow(dec, count: int) -> np.ndarray:
  n = np.asarray(dec.decode(_uniform_family(), np.full(count, 1 << _LEN_BITS, np.int32)), np.int64)
  payload = np.zeros(count, np.int64)
  for lo in (_CHUNK, 0):
    bits = np.clip(n - lo, 0, _CHUNK)
    use = bits > 0
    if use.any():
      chunk = np.asarray(dec.decode(_uniform_family(), np.left_shift(1, bits[use]).astype(np.int32)), np.int64)
      payload[use] |= np.left_shift(chunk, lo)
  return np.left_shift(1, n) + payload - 1

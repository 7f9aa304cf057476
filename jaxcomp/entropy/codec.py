"""A generic image codec for any CompressAI-style flax model: `compress(image_uint8_HWC) -> bytes`, `decompress`.

Model contract (a flax linen module; submodules defined in `setup()` so the codec can reach them):

| needed | name on the model | called as | returns |
| --- | --- | --- | --- |
| always | method `analysis`, else submodule `g_a` | `(x_BHWC float32 in [0, 1])` | `y_BhwM` |
| always | method `synthesis`, else submodule `g_s` | `(y_hat_BhwM)` | `x_hat_BHWC` (clipped to [0, 1] here) |
| always | submodule `entropy_bottleneck` (`EntropyBottleneck`) | factorized: codes y; hyperprior: codes z | |
| hyperprior | method `hyper_analysis`, else submodule `h_a` | `(y_BhwM)` (e.g. `h_a(abs(y))` in a method) | `z` |
| hyperprior | method `hyper_synthesis`, else submodule `h_s` | `(z_hat)` | `scales` or `(scales, means)` |
| hyperprior | submodule `gaussian_conditional` (`GaussianConditional`) | codes y | |

The model's own test-time forward must quantize as the codec does (it does when it calls the entropy modules with
`training=False`): `z_hat = round(z - medians) + medians`, `y_hat = round(y - means) + means` (means = 0 without
them). Then `decompress(compress(x))` equals that forward's reconstruction.

Workflow: after training, `tables = finalize(model, variables)` once and store `tables` with the checkpoint
(e.g. `tables.save_tables(path, tables)` or as an orbax item); `Codec(model, variables, tables)` then codes.

Portability guarantees (see docs/entropy.md):
- Factorized prior: the decoder reads only integer tables and the stored float32 medians, so the decoded latent
  `y_hat` is bit-identical on every machine, whatever XLA backend or flags encoded the file.
- Scale hyperprior: `z_hat` is equally exact. The table index of each y element is computed by the decoder from
  `h_s(z_hat)` floats, which may differ in the last bits across backends (CPU/GPU/TPU, library versions). Both sides
  run `h_s` at `float32` matmul precision (no bfloat16 passes on TPU/GPU), and the encoder writes the CRC32 of its
  index map into the file: a decoder whose indices differ fails with a `BitstreamError` naming the cause instead of
  producing garbage. With `Codec(index_margin=m)` the encoder also writes the indexes of elements within `m` (in
  log-scale) of a table boundary, so decoders whose `log h_s` is off by less than `m` decode exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
import zlib
from typing import Any, Callable, Mapping, Optional

import constriction
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp import errors
from jaxcomp.entropy import bitstream
from jaxcomp.entropy.coder import RangeCoder, _decode_overflow, _encode_overflow
from jaxcomp.entropy.models import build_indexes
from jaxcomp.entropy.tables import DEFAULT_PRECISION, bottleneck_tables, check_tables, gaussian_tables, trim_tables

_PROBE = 1024  # input size used to measure the model's total downsampling with jax.eval_shape


def finalize(model: nn.Module, variables: Mapping, precision: int = DEFAULT_PRECISION,
             max_symbols: int | None = None) -> dict:
  """Builds the integer coding tables of `model` (CompressAI's `update()`): run once after training.

  Returns `{"entropy_bottleneck": tables[, "gaussian_conditional": tables]}` (dicts of numpy arrays).
  `max_symbols` bounds the bottleneck's tables (see `tables.bottleneck_tables`).
  """
  bound = model.bind(variables)
  if not hasattr(bound, "entropy_bottleneck"):
    raise errors.ConfigError(f"{type(model).__name__} has no `entropy_bottleneck` submodule defined in setup()")
  eb = bound.entropy_bottleneck
  eb_vars = {"params": variables["params"]["entropy_bottleneck"]}
  out = {"entropy_bottleneck": bottleneck_tables(eb.clone(parent=None), eb_vars, precision, max_symbols)}
  if hasattr(bound, "gaussian_conditional"):
    out["gaussian_conditional"] = gaussian_tables(bound.gaussian_conditional.clone(parent=None), precision)
  return out


def architecture(model: nn.Module, variables: Mapping, channels: int, hyperprior: bool) -> str:
  """A text description of the model's architecture for the model id: class, its scalar settings, image channels,
  kind, and every variable's path, dtype and shape (not values: the stored tables identify a checkpoint)."""
  settings = {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name not in ("parent", "name")}
  settings = {k: v for k, v in sorted(settings.items()) if isinstance(v, (bool, int, float, str, tuple, type(None)))}
  leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
  shapes = ";".join(f"{jax.tree_util.keystr(p)}:{np.dtype(getattr(v, 'dtype', np.asarray(v).dtype)).str}"
                    f"{tuple(np.shape(v))}" for p, v in leaves)
  return (f"{type(model).__module__}.{type(model).__name__}{settings}|channels={channels}|hyperprior={hyperprior}"
          f"|{shapes}")


def _resolve(model: nn.Module, method: str, submodule: str) -> Callable:
  """`model.<method>` if the class defines it, else a call of the submodule `model.<submodule>`."""
  if callable(getattr(type(model), method, None)):
    return lambda m, *a: getattr(m, method)(*a)
  return lambda m, *a: getattr(m, submodule)(*a)


class Codec:
  """Compresses uint8 images [H, W, C] to bytes and back with a CompressAI-style model and its stored tables.

  Args:
    model: the flax module (contract in the module docstring).
    variables: its variables (`{"params": ...}`), as restored from the checkpoint.
    tables: `finalize(model, variables)`'s output, as restored from the checkpoint.
    channels: image channels the model codes (3 or 1). A 1-channel image given to a 3-channel model is coded as
      gray RGB and decoded back to 1 channel.
    pad_multiple: pad height and width to a multiple of this (edge replication; cropped on decode). Default: the
      model's total downsampling, measured with `jax.eval_shape`.
    index_margin: hyperprior only, encoder side. Elements whose predicted log-scale lies within this distance of
      a table boundary get their table index written explicitly into the file, so a decoder whose `h_s` floats
      differ by less than the margin (in log-scale) still decodes exactly. 0 (default) writes none and relies
      on the checksum alone. Cost: about `2 * margin / 0.1227` of the y elements, ~20 bits each.
  """

  def __init__(self, model: nn.Module, variables: Mapping, tables: Mapping[str, Mapping[str, np.ndarray]], *,
               channels: int = 3, pad_multiple: Optional[int] = None, index_margin: float = 0.0):
    if index_margin < 0:
      raise errors.ConfigError(f"Codec index_margin must be >= 0, got {index_margin}")
    self.index_margin = float(index_margin)
    if channels not in (1, 3):
      raise errors.ConfigError(f"Codec channels must be 1 or 3, got {channels}")
    if "entropy_bottleneck" not in tables:
      raise errors.CheckpointError("coding tables lack 'entropy_bottleneck'; run jaxcomp.entropy.codec.finalize")
    self.model, self.variables, self.channels = model, variables, channels
    self.hyperprior = "gaussian_conditional" in tables
    for name, t in tables.items():
      check_tables(t, name)
    # Canonical (unpadded) form, so the model id does not depend on how a checkpoint padded its tables.
    self.tables = {k: trim_tables(t) for k, t in tables.items()}
    self._medians = self.tables["entropy_bottleneck"]["medians"].astype(np.float32)
    self._eb_coder = RangeCoder(self.tables["entropy_bottleneck"], "entropy_bottleneck")
    self._analysis = jax.jit(functools.partial(model.apply, method=_resolve(model, "analysis", "g_a")))
    self._synthesis = jax.jit(functools.partial(model.apply, method=_resolve(model, "synthesis", "g_s")))
    if self.hyperprior:
      self._gc_coder = RangeCoder(self.tables["gaussian_conditional"], "gaussian_conditional")
      self._scale_table = self.tables["gaussian_conditional"]["scale_table"].astype(np.float32)
      self._hyper_analysis = jax.jit(functools.partial(
          model.apply, method=_resolve(model, "hyper_analysis", "h_a")))
      hs = functools.partial(model.apply, method=_resolve(model, "hyper_synthesis", "h_s"))
      self._hyper_synthesis = jax.jit(hs)
    # The id hashes integer data only (the stored tables, medians and scale table included) and the architecture
    # (class, its settings, every variable's path/shape/dtype): identical wherever the checkpoint is read.
    table_leaves = [(f"{k}/{f}", v) for k, t in sorted(self.tables.items()) for f, v in sorted(t.items())]
    self.model_id = bitstream.model_id(architecture(model, variables, channels, self.hyperprior), table_leaves)
    eb_lik = lambda m, y: m.entropy_bottleneck.likelihood(y)
    self._eb_likelihood = jax.jit(functools.partial(model.apply, method=eb_lik))
    if self.hyperprior:
      gc_lik = lambda m, y, s, mu: m.gaussian_conditional.likelihood(y, s, mu)
      self._gc_likelihood = jax.jit(functools.partial(model.apply, method=gc_lik))
    self._shape_cache: dict = {}
    self.pad_multiple = pad_multiple or self._measure_stride()
    # A model with a learned density (`entropy_bottleneck` parameters) has an estimate to compare files with; one
    # coded with static tables only (CAE-ADMM) has none.
    self.has_estimate = "entropy_bottleneck" in variables.get("params", {})

  # -- shapes -------------------------------------------------------------------------------------------------
  def _latent_shapes(self, hp: int, wp: int):
    """Latent shapes for a padded input size; cached, as tracing the transforms costs a noticeable time."""
    if (hp, wp) not in self._shape_cache:
      x = jax.ShapeDtypeStruct((1, hp, wp, self.channels), jnp.float32)
      y = jax.eval_shape(self._analysis, self.variables, x)
      z = jax.eval_shape(self._hyper_analysis, self.variables, y) if self.hyperprior else None
      self._shape_cache[(hp, wp)] = (y, z)
    return self._shape_cache[(hp, wp)]

  def _measure_stride(self) -> int:
    y, z = self._latent_shapes(_PROBE, _PROBE)
    stride = _PROBE // (z if self.hyperprior else y).shape[1]
    return max(1, stride)

  # -- image <-> model input -------------------------------------------------------------------------------------
  def _prepare(self, image: Any) -> tuple[np.ndarray, tuple[int, int, int]]:
    image = np.asarray(image)
    if image.ndim == 2:
      image = image[..., None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3) or 0 in image.shape:
      raise errors.DataError(f"compress expects a uint8 image [H, W, 1 or 3], got {image.dtype} {image.shape}")
    h, w, c = image.shape
    if c != self.channels:
      if c == 1:
        image = np.repeat(image, 3, axis=-1)
      else:
        raise errors.DataError(f"this model codes {self.channels}-channel images; the image has {c} channels")
    m = self.pad_multiple
    image = np.pad(image, ((0, -h % m), (0, -w % m), (0, 0)), mode="edge")
    return (image.astype(np.float32) / 255.0)[None], (h, w, c)

  def _finish(self, x_hat: jax.Array, h: int, w: int, c: int) -> np.ndarray:
    x = np.asarray(x_hat)[0, :h, :w]
    x = np.clip(np.rint(np.clip(x, 0.0, 1.0) * 255.0), 0, 255)
    if c == 1 and x.shape[-1] == 3:
      x = np.rint(x.mean(axis=-1, keepdims=True))
    return x.astype(np.uint8)

  def _scales_and_means(self, z_hat: np.ndarray):
    with jax.default_matmul_precision("float32"):
      out = self._hyper_synthesis(self.variables, jnp.asarray(z_hat))
    scales, means = (out if isinstance(out, (tuple, list)) else (out, None))
    scales = np.asarray(scales, np.float32)
    means = None if means is None else np.asarray(means, np.float32)
    return scales, means

  def _fragile(self, scales: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Flat positions whose log-scale lies within `index_margin` of a boundary of their table interval."""
    log_t = np.log(self._scale_table.astype(np.float64))
    log_s = np.log(np.maximum(scales.reshape(-1).astype(np.float64), 1e-30))
    i = idx.reshape(-1)
    last = log_t.size - 1
    below = np.where(i > 0, log_s - log_t[np.maximum(i - 1, 0)], np.inf)   # distance to the lower boundary
    above = np.where(i < last, log_t[np.minimum(i, last - 1)] - log_s, np.inf)  # to the upper boundary
    return np.flatnonzero(np.minimum(below, above) < self.index_margin)

  # -- latents ----------------------------------------------------------------------------------------------------
  def quantized_latents(self, image: Any) -> dict[str, np.ndarray]:
    """The quantized latents `compress` codes: `{"y_hat": [1, h, w, M] float32[, "z_hat": ...]}`."""
    x, _ = self._prepare(image)
    return self._encode_latents(x)[1]

  def _encode_latents(self, x: np.ndarray):
    y = np.asarray(self._analysis(self.variables, jnp.asarray(x)), np.float32)
    if not self.hyperprior:
      y_sym = np.rint(y - self._medians)
      return {"y": y_sym}, {"y_hat": (y_sym + self._medians).astype(np.float32)}
    z = np.asarray(self._hyper_analysis(self.variables, jnp.asarray(y)), np.float32)
    z_sym = np.rint(z - self._medians)
    z_hat = (z_sym + self._medians).astype(np.float32)
    scales, means = self._scales_and_means(z_hat)
    idx = build_indexes(scales, self._scale_table)
    fragile = self._fragile(scales, idx) if self.index_margin > 0 else np.zeros(0, np.int64)
    y_sym = np.rint(y - means) if means is not None else np.rint(y)
    y_hat = (y_sym + means).astype(np.float32) if means is not None else y_sym.astype(np.float32)
    return {"z": z_sym, "y": y_sym, "idx": idx, "fragile": fragile}, {"y_hat": y_hat, "z_hat": z_hat}

  def estimated_bits(self, image: Any) -> dict[str, float]:
    """The entropy model's estimate of what `compress` writes for `image`: `-sum log2 p` of the quantized latents
    under the learned densities (the rate term training minimises; for the hyperprior, at the predicted scales, not
    the table's), per latent: `{"y": bits[, "z": bits]}`. Compare with `8 * len(compress(image))` minus
    `bitstream.overhead_bytes`."""
    x, _ = self._prepare(image)
    _, lat = self._encode_latents(x)
    bits = lambda lik: float(-np.sum(np.log2(np.asarray(lik, np.float64))))
    if not self.hyperprior:
      return {"y": bits(self._eb_likelihood(self.variables, jnp.asarray(lat["y_hat"])))}
    scales, means = self._scales_and_means(lat["z_hat"])
    mu = None if means is None else jnp.asarray(means)
    return {"y": bits(self._gc_likelihood(self.variables, jnp.asarray(lat["y_hat"]), jnp.asarray(scales), mu)),
            "z": bits(self._eb_likelihood(self.variables, jnp.asarray(lat["z_hat"])))}

  # -- public API -------------------------------------------------------------------------------------------------
  def compress(self, image: Any) -> bytes:
    """uint8 image [H, W, C] (or [H, W]) -> bytes of a jaxcomp bitstream."""
    x, (h, w, c) = self._prepare(image)
    sym, _ = self._encode_latents(x)
    if not self.hyperprior:
      streams = [self._code_factorized(sym["y"])]
    else:
      idx = sym["idx"]
      streams = [self._code_factorized(sym["z"]),
                 self._gc_coder.encode(sym["y"].astype(np.int64), idx),
                 struct.pack("<I", _index_checksum(idx)) + _encode_fixes(sym["fragile"], idx.reshape(-1))]
    return bitstream.pack(streams, model_id=self.model_id, height=h, width=w, channels=c)

  def decompress(self, data: bytes) -> np.ndarray:
    """Bytes of a jaxcomp bitstream -> uint8 image [H, W, C]. Raises `BitstreamError` on bad input."""
    header, streams = bitstream.unpack(data, expected_model_id=self.model_id)
    h, w, c = header.height, header.width, header.channels
    if c != self.channels and not (c == 1 and self.channels == 3):
      raise errors.BitstreamError(f"bitstream holds a {c}-channel image; this model codes {self.channels}")
    want = 3 if self.hyperprior else 1
    if len(streams) != want:
      raise errors.BitstreamError(f"bitstream has {len(streams)} streams; this model writes {want}")
    m = self.pad_multiple
    y_s, z_s = self._latent_shapes(h + (-h % m), w + (-w % m))
    if not self.hyperprior:
      y_hat = self._decode_factorized(streams[0], y_s.shape)
    else:
      z_sym = self._decode_factorized(streams[0], z_s.shape, symbols_only=True)
      z_hat = (z_sym + self._medians).astype(np.float32)
      scales, means = self._scales_and_means(z_hat)
      idx = build_indexes(scales, self._scale_table)
      if len(streams[2]) < 4:
        raise errors.BitstreamError("bitstream lacks the hyperprior index checksum")
      if len(streams[2]) > 4:  # the encoder's indexes of near-boundary elements override ours
        positions, values = _decode_fixes(streams[2][4:], idx.size, self._scale_table.size)
        idx = idx.reshape(-1)
        idx[positions] = values
        idx = idx.reshape(scales.shape)
      if struct.pack("<I", _index_checksum(idx)) != streams[2][:4]:
        raise errors.BitstreamError(
            "hyperprior table indexes computed here differ from the encoder's (checksum mismatch): h_s gives "
            "different floats on this platform; decode on the kind of machine that encoded the file, or encode "
            "with a larger Codec(index_margin=...)")
      y_sym = self._gc_coder.decode(streams[1], idx).astype(np.float32)
      y_hat = (y_sym + means).astype(np.float32) if means is not None else y_sym
    x_hat = self._synthesis(self.variables, jnp.asarray(y_hat))
    return self._finish(x_hat, h, w, c)

  # -- factorized coding, channel-major so the per-channel groups are already contiguous --------------------------
  def _code_factorized(self, sym_1hwC: np.ndarray) -> bytes:
    C = sym_1hwC.shape[-1]
    return self._eb_coder.encode_rows(np.ascontiguousarray(sym_1hwC.reshape(-1, C).T).astype(np.int64))

  def _decode_factorized(self, data: bytes, shape, symbols_only: bool = False) -> np.ndarray:
    C = shape[-1]
    n = int(np.prod(shape[:-1]))
    sym = self._eb_coder.decode_rows(data, n).T.reshape(shape).astype(np.float32)
    return sym if symbols_only else (sym + self._medians).astype(np.float32)


def _encode_fixes(positions: np.ndarray, values: np.ndarray) -> bytes:
  """Range-codes (count, position gaps, table indexes) of the near-boundary elements; b"" when there are none."""
  if positions.size == 0:
    return b""
  enc = constriction.stream.queue.RangeEncoder()
  gaps = np.diff(positions, prepend=-1) - 1  # >= 0
  _encode_overflow(enc, np.array([positions.size], np.int64))  # separate call: the decoder needs it first
  _encode_overflow(enc, gaps.astype(np.int64))
  enc.encode(values[positions].astype(np.int32), constriction.stream.model.Uniform(256))
  return enc.get_compressed().astype("<u4").tobytes()


def _decode_fixes(data: bytes, size: int, num_tables: int) -> tuple[np.ndarray, np.ndarray]:
  try:
    if len(data) % 4:
      raise ValueError("not whole words")
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
    count = int(_decode_overflow(dec, 1)[0])
    if not 0 < count <= size:
      raise ValueError(f"{count} index fixes for {size} elements")
    positions = np.cumsum(_decode_overflow(dec, count) + 1) - 1
    values = np.asarray(dec.decode(constriction.stream.model.Uniform(256), count), np.int32)
    if positions[-1] >= size or values.max() >= num_tables:
      raise ValueError("index fixes out of range")
  except BaseException as e:  # constriction panics are BaseExceptions
    if isinstance(e, (KeyboardInterrupt, SystemExit)):
      raise
    raise errors.BitstreamError(f"hyperprior index fixes cannot be decoded ({e})") from None
  return positions, values


def _index_checksum(idx: np.ndarray) -> int:
  return zlib.crc32(np.ascontiguousarray(idx, dtype=np.uint8).tobytes())

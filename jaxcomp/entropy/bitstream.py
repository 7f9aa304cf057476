"""The jaxcomp bitstream container: one compressed image per file.

Layout (all integers little-endian):

| offset | size | field |
| --- | --- | --- |
| 0 | 4 | magic `b"JXCB"` |
| 4 | 1 | format version (`FORMAT_VERSION`) |
| 5 | 1 | number of streams S |
| 6 | 8 | model id (`model_id`: hash of the coding tables, the architecture and the parameters) |
| 14 | 4 | image height |
| 18 | 4 | image width |
| 22 | 1 | image channels (1 or 3) |
| 23 | 4 S | byte length of each stream |
| 23 + 4 S | sum | the streams, concatenated |
| end - 4 | 4 | CRC32 of every byte before it |

The fixed overhead is `HEADER_BYTES + 4 S` bytes. Every malformed input raises `jaxcomp.errors.BitstreamError`
with a one-line message: truncated, trailing bytes, wrong magic, newer (or unknown) version, CRC mismatch
(flipped bits), or a model id that is not the decoding model's.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Iterable, NamedTuple, Optional, Sequence

import numpy as np

from jaxcomp.errors import BitstreamError

MAGIC = b"JXCB"
FORMAT_VERSION = 1
MODEL_ID_BYTES = 8
_FIXED = struct.Struct("<4sBB8sIIB")
HEADER_BYTES = _FIXED.size + 4  # fixed fields + CRC32; add 4 bytes per stream


class Header(NamedTuple):
  version: int
  model_id: bytes
  height: int
  width: int
  channels: int


def overhead_bytes(num_streams: int) -> int:
  """Container bytes that are not stream payload."""
  return HEADER_BYTES + 4 * num_streams


def model_id(*parts: Iterable) -> bytes:
  """An 8-byte id (BLAKE2b) of named numpy arrays and strings: `model_id([("cdf", arr), ...], "arch")`.

  Arrays are hashed by name, dtype, shape and raw bytes, so the id is identical on every machine that holds the
  same stored tables and parameters.
  """
  h = hashlib.blake2b(digest_size=MODEL_ID_BYTES)
  for part in parts:
    if isinstance(part, str):
      h.update(b"s" + part.encode() + b"\0")
      continue
    for name, arr in part:
      arr = np.ascontiguousarray(np.asarray(arr))
      h.update(f"a{name}|{arr.dtype.str}|{arr.shape}\0".encode())
      h.update(arr.tobytes())
  return h.digest()


def pack(streams: Sequence[bytes], *, model_id: bytes, height: int, width: int, channels: int) -> bytes:
  """Builds a file from its streams and image size."""
  if len(model_id) != MODEL_ID_BYTES:
    raise ValueError(f"model_id must be {MODEL_ID_BYTES} bytes, got {len(model_id)}")
  if not (0 < height < 2**32 and 0 < width < 2**32 and channels in (1, 3) and len(streams) < 256):
    raise ValueError(f"cannot store an image of shape {(height, width, channels)} with {len(streams)} streams")
  head = _FIXED.pack(MAGIC, FORMAT_VERSION, len(streams), model_id, height, width, channels)
  body = head + struct.pack(f"<{len(streams)}I", *(len(s) for s in streams)) + b"".join(streams)
  return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes, *, expected_model_id: Optional[bytes] = None) -> tuple[Header, list[bytes]]:
  """Parses and checks a file; returns its header and streams. Raises `BitstreamError` on any problem."""
  data = bytes(data)
  n = len(data)
  if data[:4] != MAGIC[: min(n, 4)] or n == 0:
    if n == 0:
      raise BitstreamError("empty file: not a jaxcomp bitstream")
    raise BitstreamError(f"not a jaxcomp bitstream (starts with {data[:4]!r}, expected {MAGIC!r})")
  if n < _FIXED.size:
    raise BitstreamError(f"truncated bitstream: {n} bytes, shorter than the {HEADER_BYTES}-byte header")
  _, version, num_streams, mid, height, width, channels = _FIXED.unpack_from(data)
  if version > FORMAT_VERSION:
    raise BitstreamError(f"bitstream format version {version} is newer than this jaxcomp reads "
                         f"(up to {FORMAT_VERSION}); upgrade jaxcomp")
  if version < 1:
    raise BitstreamError(f"unknown bitstream format version {version}")
  lengths_end = _FIXED.size + 4 * num_streams
  if n < lengths_end + 4:
    raise BitstreamError(f"truncated bitstream: {n} bytes, the header alone needs {lengths_end + 4}")
  lengths = struct.unpack_from(f"<{num_streams}I", data, _FIXED.size)
  total = lengths_end + sum(lengths) + 4
  if n < total:
    raise BitstreamError(f"truncated bitstream: {n} bytes of the {total} its header announces")
  if n > total:
    raise BitstreamError(f"{n - total} unexpected trailing bytes after the {total}-byte bitstream")
  (crc,) = struct.unpack_from("<I", data, n - 4)
  if zlib.crc32(data[: n - 4]) != crc:
    raise BitstreamError("corrupt bitstream: CRC32 mismatch (the file was damaged after it was written)")
  if channels not in (1, 3) or height == 0 or width == 0:
    raise BitstreamError(f"bitstream declares an impossible image shape {(height, width, channels)}")
  if expected_model_id is not None and mid != expected_model_id:
    raise BitstreamError(f"bitstream was made by a different model (id {mid.hex()}, this model is "
                         f"{expected_model_id.hex()}); decode it with the checkpoint that wrote it")
  streams, pos = [], lengths_end
  for length in lengths:
    streams.append(data[pos: pos + length])
    pos += length
  return Header(version, mid, height, width, channels), streams

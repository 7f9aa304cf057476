"""The container format: round trip and every error path raises BitstreamError with a clear message."""

import struct
import zlib

import pytest

from jaxcomp.entropy import bitstream
from jaxcomp.errors import BitstreamError

MID = bitstream.model_id("arch", [("w", [1, 2, 3])])


def _file(streams=(b"abcd", b"", b"0123456789ab")):
  return bitstream.pack(list(streams), model_id=MID, height=37, width=45, channels=3)


def _recrc(data: bytes) -> bytes:
  return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def test_round_trip_and_overhead():
  data = _file()
  header, streams = bitstream.unpack(data, expected_model_id=MID)
  assert header == bitstream.Header(bitstream.FORMAT_VERSION, MID, 37, 45, 3)
  assert streams == [b"abcd", b"", b"0123456789ab"]
  assert len(data) == bitstream.overhead_bytes(3) + 16
  assert data[:4] == b"JXCB"


def test_model_id_is_content_hash():
  assert len(MID) == bitstream.MODEL_ID_BYTES
  assert bitstream.model_id("arch", [("w", [1, 2, 3])]) == MID
  assert bitstream.model_id("arch", [("w", [1, 2, 4])]) != MID
  assert bitstream.model_id("arch2", [("w", [1, 2, 3])]) != MID


@pytest.mark.parametrize("cut", [0, 3, 10, 30, -1, -5])
def test_truncated(cut):
  data = _file()
  with pytest.raises(BitstreamError, match="truncated|empty"):
    bitstream.unpack(data[:cut])


def test_flipped_byte_anywhere_after_magic_is_detected():
  data = _file()
  for pos in range(4, len(data)):
    bad = bytearray(data)
    bad[pos] ^= 0x10
    with pytest.raises(BitstreamError):
      bitstream.unpack(bytes(bad), expected_model_id=MID)
  bad = bytearray(data)
  bad[40] ^= 1  # inside a stream: only the CRC can tell
  with pytest.raises(BitstreamError, match="CRC32 mismatch"):
    bitstream.unpack(bytes(bad))


def test_wrong_magic():
  with pytest.raises(BitstreamError, match="not a jaxcomp bitstream"):
    bitstream.unpack(b"\x89PNG\r\n\x1a\n" + _file()[8:])


def test_newer_version():
  data = bytearray(_file())
  data[4] = bitstream.FORMAT_VERSION + 1
  with pytest.raises(BitstreamError, match="newer than this jaxcomp reads"):
    bitstream.unpack(_recrc(bytes(data)))


def test_different_model():
  other = bitstream.model_id("other")
  with pytest.raises(BitstreamError, match="different model"):
    bitstream.unpack(_file(), expected_model_id=other)


def test_trailing_bytes():
  with pytest.raises(BitstreamError, match="trailing"):
    bitstream.unpack(_file() + b"\0")


def test_pack_rejects_bad_shapes():
  with pytest.raises(ValueError):
    bitstream.pack([b""], model_id=MID, height=0, width=4, channels=3)
  with pytest.raises(ValueError):
    bitstream.pack([b""], model_id=MID, height=4, width=4, channels=2)

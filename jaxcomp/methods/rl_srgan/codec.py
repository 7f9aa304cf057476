"""RL-SRGAN's codec (Savioli, Sec. 2.1): JPEG of a bicubic-downsampled image, restored by the trained generator.

Encode: the HR image `[H, W, C]` is edge-padded to a multiple of r, downsampled by r (Pillow bicubic with
antialiasing, `jaxcomp.data.transforms.resize`), and JPEG-coded at `config.jpeg_quality` (4:2:0 chroma for colour).
The file is that JPEG inside the jaxcomp container (`jaxcomp.entropy.bitstream`: magic, version, model id, the HR
size, CRC32), so bpp = file bytes x 8 / (H x W) and odd sizes come back exactly. Decode: JPEG decode (Pillow), the
generator H in eval mode (BatchNorm running statistics), clip, round, crop to H x W.

The model id hashes the generator's parameters, r, the JPEG settings and the architecture, so a file is decoded
only by the checkpoint that wrote it. The JPEG bytes are exact on every machine; the generator's float output can
differ in the last bit between XLA builds, like any neural post-filter (the ProxIQA / CAE codecs, whose latents
are integers, do not have this freedom; here the bitstream itself is plain JPEG).
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from jaxcomp.data import transforms
from jaxcomp.entropy import bitstream
from jaxcomp.entropy.codec import architecture
from jaxcomp.errors import BitstreamError, CheckpointError, DataError
from jaxcomp.methods.rl_srgan import models


def build_generator(config: ml_collections.ConfigDict, axis_name: str | None = None) -> models.Generator:
  g = config.generator
  return models.Generator(features=g.features, num_res_blocks=g.num_res_blocks, scale=config.scale,
                          channels=3, bn_axis_name=axis_name, residual=bool(g.get("residual", False)))


def downsample(image_HWC: np.ndarray, scale: int) -> np.ndarray:
  """The LR image: edge-pad to a multiple of `scale`, then bicubic (antialiased) by 1 / `scale`."""
  h, w = image_HWC.shape[:2]
  padded = np.pad(image_HWC, ((0, -h % scale), (0, -w % scale), (0, 0)), mode="edge")
  return transforms.resize(padded, 1.0 / scale, "bicubic")


def lanczos_upsample(lr_HWC: np.ndarray, scale: int, height: int, width: int) -> np.ndarray:
  """The paper's baseline decoder: Lanczos upsampling of the decoded LR image, cropped to the HR size."""
  up = transforms.resize(lr_HWC, float(scale), "lanczos")
  return up[:height, :width]


def decode_jpeg(data: bytes, channels: int) -> np.ndarray:
  try:
    with Image.open(io.BytesIO(data)) as img:
      if img.format != "JPEG":
        raise BitstreamError(f"RL-SRGAN stream is {img.format}, not a JPEG")
      img.load()
      a = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
  except (OSError, SyntaxError, ValueError) as e:
    raise BitstreamError(f"RL-SRGAN stream is not a decodable JPEG ({e})") from None
  return a[..., None] if a.ndim == 2 else a


class SRCodec:
  """`compress(uint8 [H, W, 3]) -> bytes`, `decompress(bytes) -> uint8 [H, W, 3]` with a trained generator."""

  def __init__(self, config: ml_collections.ConfigDict, variables: Mapping[str, Any]):
    self.config = config
    self.scale = int(config.scale)
    self.quality = int(config.jpeg_quality)
    self.model = build_generator(config)
    self.variables = jax.tree.map(jnp.asarray, dict(variables))
    self._apply = jax.jit(lambda v, x: self.model.apply(v, x, train=False)["x_hat"])
    settings = f"rl_srgan|scale={self.scale}|jpeg={self.quality}|4:2:0"
    leaves = [(jax.tree_util.keystr(p), np.asarray(v))
              for p, v in jax.tree_util.tree_flatten_with_path(self.variables)[0]]
    self.model_id = bitstream.model_id(leaves, settings, architecture(self.model, self.variables, 3, False))

  def encode_lr(self, image_HWC: np.ndarray) -> bytes:
    """The JPEG of the downsampled image (the payload of the file)."""
    return transforms.jpeg_encode(downsample(image_HWC, self.scale), self.quality, "4:2:0")

  def compress(self, image_HWC: np.ndarray) -> bytes:
    image = np.asarray(image_HWC)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise DataError(f"RL-SRGAN codes uint8 RGB images [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    return bitstream.pack([self.encode_lr(image)], model_id=self.model_id, height=h, width=w, channels=3)

  def restore(self, lr_HWC: np.ndarray, height: int, width: int) -> np.ndarray:
    """The generator's HR image from a decoded LR image, cropped to `height x width`, uint8."""
    x = jnp.asarray(lr_HWC[None], jnp.float32) / 255.0
    y = np.asarray(self._apply(self.variables, x))[0, :height, :width]
    return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)

  def decompress(self, data: bytes) -> np.ndarray:
    header, streams = bitstream.unpack(data, expected_model_id=self.model_id)
    if len(streams) != 1 or header.channels != 3:
      raise BitstreamError(f"not an RL-SRGAN bitstream ({len(streams)} streams, {header.channels} channels)")
    lr = decode_jpeg(streams[0], 3)
    expect = (math.ceil(header.height / self.scale), math.ceil(header.width / self.scale))
    if lr.shape[:2] != expect:
      raise BitstreamError(f"RL-SRGAN stream holds a {lr.shape[0]}x{lr.shape[1]} image, the header's "
                           f"{header.height}x{header.width} at scale {self.scale} needs {expect[0]}x{expect[1]}")
    return self.restore(lr, header.height, header.width)


def build_codec(config: ml_collections.ConfigDict, state: Mapping[str, Any]) -> SRCodec:
  """The codec of a restored state (`jaxcomp.train.load_for_eval`): the generator's parameters and statistics."""
  try:
    gen = state["gen"]
    variables = {"params": gen["params"], **gen["mutable"]}
  except (KeyError, TypeError) as e:
    raise CheckpointError(f"not an rl_srgan checkpoint state (missing {e})") from None
  return SRCodec(config, variables)


def image_metrics(config: ml_collections.ConfigDict, codec: SRCodec) -> dict[str, Any]:
  """Per-image numbers `jaxcomp eval` adds: the paper's Lanczos baseline on the same JPEG (same file, same rate)."""
  from jaxcomp.evaluation.rd import image_quality

  # Both numbers come from one Lanczos decode: keep it for the image last asked about (held, so its identity is
  # not reused by another array while cached).
  last: dict[str, Any] = {"image": None, "quality": None}

  def lanczos(image: np.ndarray) -> dict[str, float]:
    if last["image"] is not image:
      h, w = image.shape[:2]
      lr = decode_jpeg(codec.encode_lr(image), 3)
      last.update(image=image, quality=image_quality(image, lanczos_upsample(lr, codec.scale, h, w)))
    return last["quality"]

  return {"lanczos_psnr": lambda image: lanczos(image)["psnr-rgb"],
          "lanczos_ms_ssim": lambda image: lanczos(image)["ms-ssim-rgb"]}

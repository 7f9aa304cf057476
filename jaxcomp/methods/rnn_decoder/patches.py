"""Patch data for the iterative decoder (Sec. 3.1) and whole-image reassembly.

Grayscale images are compressed by JPEG at a rate drawn from 0.35-1.02 bpp (or JPEG 2000 at that rate, with 64x64
tiles), both through `jaxcomp.data.transforms`, and cut into non-overlapping d x d patches. Each example is the
3x3 block of decoded (quantized) patches q_1..q_9 around a target patch plus the original target patch.

Boundary rule (Sec. 3.1): a patch on the image border is predicted from the nearest *full* 3x3 block, never from
zero padding. E.g. (0, 0) is predicted from the block of (0..2, 0..2), the same patches that predict (1, 1).
The paper does not say how the model then knows which of the nine patches to reconstruct; we put the target
patch in the centre slot (index 4) and the block's centre patch in the target's slot, the other seven keeping
their row-major places. Interior patches therefore see the plain row-major block, and a border patch's input
differs from its neighbour's.

Pixels inside a patch are flattened row-major (the paper writes column-major; the two differ by a fixed
permutation of W's rows and U's columns, so the model class is the same). Images whose sides are not multiples of
d are edge-padded up to the next multiple and cropped back after decoding (no zero padding anywhere).
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import jax.numpy as jnp
import numpy as np

from jaxcomp import metrics
from jaxcomp.data import transforms
from jaxcomp.errors import ConfigError, DataError

CENTRE = 4  # slot of the target patch within the 9
BPP_RANGE = (0.35, 1.02)  # training rates (Sec. 3.1)
CODECS = ("jpeg", "jpeg2000")


def _as_gray_HW(image: np.ndarray, name: str = "image") -> np.ndarray:
  """uint8 [H, W] from [H, W] or [H, W, 1] (RGB is converted to luma by the shared transform)."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 3:
    image = transforms.grayscale(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim != 2 or image.dtype != np.uint8:
    raise DataError(f"{name}: expected a uint8 grayscale image [H, W] or [H, W, 1|3], got {image.dtype} "
                    f"{image.shape}")
  return image


def pad_to_multiple(image_HW: np.ndarray, patch: int) -> np.ndarray:
  """Edge-replicates the bottom/right border up to multiples of `patch`."""
  h, w = image_HW.shape
  return np.pad(image_HW, ((0, -h % patch), (0, -w % patch)), mode="edge")


def to_patches(image_HW: np.ndarray, patch: int) -> np.ndarray:
  """[H, W] (multiples of patch) -> [R, C, patch*patch], patch (r, c) covering rows r*d.., columns c*d.."""
  h, w = image_HW.shape
  r, c = h // patch, w // patch
  return image_HW.reshape(r, patch, c, patch).transpose(0, 2, 1, 3).reshape(r, c, patch * patch)


def from_patches(patches_RCD: np.ndarray, patch: int) -> np.ndarray:
  """Inverse of `to_patches`: [R, C, patch*patch] -> [R*patch, C*patch]."""
  r, c, _ = patches_RCD.shape
  return patches_RCD.reshape(r, c, patch, patch).transpose(0, 2, 1, 3).reshape(r * patch, c * patch)


def neighbourhood_index(rows: int, cols: int) -> np.ndarray:
  """For every target patch (r, c), the (row, col) of its 9 input patches: int [R, C, 9, 2].

  The block is the nearest full 3x3 block (centre clipped into [1, R-2] x [1, C-2]); the target occupies slot 4.
  """
  if rows < 3 or cols < 3:
    raise DataError(f"an image of {rows}x{cols} patches has no full 3x3 block of patches; need at least 3x3")
  r = np.arange(rows)[:, None].repeat(cols, 1)
  c = np.arange(cols)[None, :].repeat(rows, 0)
  cr, cc = np.clip(r, 1, rows - 2), np.clip(c, 1, cols - 2)
  dr, dc = np.meshgrid(np.arange(-1, 2), np.arange(-1, 2), indexing="ij")
  idx = np.stack([cr[..., None] + dr.reshape(-1), cc[..., None] + dc.reshape(-1)], axis=-1)  # [R, C, 9, 2]
  # Swap the target into the centre slot: its slot in the block is (r - cr + 1) * 3 + (c - cc + 1).
  slot = (r - cr + 1) * 3 + (c - cc + 1)
  rr, cc_ = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
  target_rc = idx[rr, cc_, slot].copy()
  idx[rr, cc_, slot] = idx[rr, cc_, CENTRE]
  idx[:, :, CENTRE] = target_rc
  return idx


def make_examples(original: np.ndarray, decoded: np.ndarray, patch: int = 8) -> dict[str, np.ndarray]:
  """All examples of one image: {"q": float32 [P, 9, d*d], "target": float32 [P, d*d]} in [0, 1], P = R*C.

  `original` and `decoded` are uint8 grayscale images of one size; examples are ordered row-major by target.
  """
  original, decoded = _as_gray_HW(original, "original"), _as_gray_HW(decoded, "decoded")
  if original.shape != decoded.shape:
    raise DataError(f"original {original.shape} and decoded {decoded.shape} differ in size")
  q_RCD = to_patches(pad_to_multiple(decoded, patch), patch)
  t_RCD = to_patches(pad_to_multiple(original, patch), patch)
  rows, cols, d2 = q_RCD.shape
  idx = neighbourhood_index(rows, cols)
  q = q_RCD[idx[..., 0], idx[..., 1]].reshape(rows * cols, 9, d2)
  return {"q": q.astype(np.float32) / 255.0, "target": t_RCD.reshape(rows * cols, d2).astype(np.float32) / 255.0}


def compress(image: np.ndarray, codec: str, bpp: float) -> tuple[np.ndarray, int]:
  """Grayscale codec round trip through the shared transforms: (decoded uint8 [H, W], bytes)."""
  gray = _as_gray_HW(image)[..., None]
  if codec == "jpeg":
    dec, nbytes = transforms.jpeg_at_bpp(gray, bpp)
  elif codec == "jpeg2000":
    dec, nbytes = transforms.jpeg2000(gray, bpp)
  else:
    raise ConfigError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
  return dec[..., 0], nbytes


def build_examples(images: Iterable[np.ndarray], *, codec: str = "jpeg", patch: int = 8,
                   bpp_range: Sequence[float] = BPP_RANGE, seed: int = 0) -> dict[str, np.ndarray]:
  """Compresses each image at a rate drawn uniformly from `bpp_range` and pools all their examples.

  Returns {"q", "target"} as in `make_examples` plus "bpp" [P] (each example's image's real rate).
  """
  lo, hi = float(bpp_range[0]), float(bpp_range[1])
  if not 0 < lo <= hi:
    raise ConfigError(f"bpp_range={tuple(bpp_range)}: need 0 < low <= high")
  rng = np.random.default_rng(seed)
  qs, ts, rates = [], [], []
  for i, image in enumerate(images):
    gray = _as_gray_HW(image, f"image {i}")
    dec, nbytes = compress(gray, codec, float(rng.uniform(lo, hi)))
    ex = make_examples(gray, dec, patch)
    qs.append(ex["q"]); ts.append(ex["target"])
    rates.append(np.full(len(ex["target"]), 8.0 * nbytes / gray.size, np.float32))
  if not qs:
    raise DataError("no images to build patch examples from")
  return {"q": np.concatenate(qs), "target": np.concatenate(ts), "bpp": np.concatenate(rates)}


def reconstruct(decode_fn: Callable[[np.ndarray], np.ndarray], decoded: np.ndarray, patch: int = 8,
                batch_size: int = 4096) -> np.ndarray:
  """Decodes every patch of an image and stitches them: uint8 [H, W].

  `decode_fn(q_BNd float32) -> p_BD` in [0, 1] (e.g. a jitted `models.decode`); the original is not needed, only
  the codec's decoded image. The last chunk is padded to `batch_size` so a jitted decode_fn compiles once.
  """
  decoded = _as_gray_HW(decoded, "decoded")
  q = make_examples(decoded, decoded, patch)["q"]
  n = len(q)
  out = []
  for start in range(0, n, batch_size):
    chunk = q[start:start + batch_size]
    pad = batch_size - len(chunk) if n > batch_size else 0
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    out.append(np.asarray(decode_fn(chunk))[:len(chunk) - pad])
  p = np.concatenate(out)
  h, w = decoded.shape
  rows, cols = -(-h // patch), -(-w // patch)
  image = from_patches(p.reshape(rows, cols, patch * patch), patch)[:h, :w]
  return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def image_metrics(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
  """PSNR / SSIM / MS-SSIM (data range 255) of uint8 grayscale `test` against `reference`.

  MS-SSIM is NaN for images smaller than `metrics.ms_ssim_min_side()` (its coarsest scale needs one window).
  """
  x = jnp.asarray(_as_gray_HW(reference)[..., None], jnp.float32)
  y = jnp.asarray(_as_gray_HW(test)[..., None], jnp.float32)
  out = {"psnr": float(metrics.psnr(y, x, 255.0)), "ssim": float(metrics.ssim(y, x, 255.0))}
  out["ms_ssim"] = (float(metrics.ms_ssim(y, x, 255.0)) if min(x.shape[:2]) >= metrics.ms_ssim_min_side()
                    else float("nan"))
  return out


def evaluate_image(decode_fn: Callable[[np.ndarray], np.ndarray], original: np.ndarray, *, codec: str = "jpeg",
                   bpp: float = 0.37, patch: int = 8, batch_size: int = 4096) -> dict[str, float]:
  """Compresses `original`, decodes it with the network and with the plain codec, and scores both.

  Returns {"bpp": the real rate of the codec file the network decodes, "psnr"/"ssim"/"ms_ssim": network vs
  original, "codec_psnr"/...: plain codec decode vs original, "vs_codec_psnr"/...: network vs the plain codec
  decode (how far the refinement moved the image), "gain_psnr": network minus codec against the original}.
  """
  gray = _as_gray_HW(original, "original")
  dec, nbytes = compress(gray, codec, bpp)
  recon = reconstruct(decode_fn, dec, patch, batch_size)
  net, base, moved = image_metrics(gray, recon), image_metrics(gray, dec), image_metrics(dec, recon)
  out = {"bpp": 8.0 * nbytes / gray.size, **net, **{f"codec_{k}": v for k, v in base.items()},
         **{f"vs_codec_{k}": v for k, v in moved.items()}}
  out["gain_psnr"] = out["psnr"] - out["codec_psnr"]
  return out

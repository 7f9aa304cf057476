"""VMAF (Netflix; libvmaf's default model vmaf_v0.6.1) through `ffmpeg -lavfi libvmaf`, computed on the host.

Not differentiable and not JAX: ProxIQA trains a proxy of it (`vmaf_p`), and evaluation reports it when an ffmpeg
with libvmaf is found: the one on PATH if it has the filter, else the static build the `imageio-ffmpeg` package
ships (`pip install 'jaxcomp[vmaf]'`). Identical images score about 97.4, not 100. libvmaf needs at least
`VMAF_MIN_SIDE` pixels a side (below that it crashes): `vmaf_scores` refuses such images, `vmaf_image` gives NaN
for them (reported as n/a, like MS-SSIM below 161 px).
"""

from __future__ import annotations

import functools
import json
import math
import os
import pathlib
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from jaxcomp.errors import ConfigError, DataError

VMAF_MIN_SIDE = 17  # libvmaf (vmaf_v0.6.1 in imageio-ffmpeg's build) segfaults on 16 px
VMAF_HINT = "put one on PATH, or `pip install 'jaxcomp[vmaf]'` (imageio-ffmpeg's static ffmpeg has libvmaf)"


def _has_libvmaf(exe: str) -> bool:
  try:
    out = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=60).stdout
  except (OSError, subprocess.SubprocessError):
    return False
  return "libvmaf" in out


@functools.cache
def ffmpeg_with_vmaf() -> str | None:
  """An ffmpeg with the libvmaf filter: `ffmpeg` on PATH if it has it, else imageio-ffmpeg's, else None."""
  candidates = [shutil.which("ffmpeg")]
  try:
    import imageio_ffmpeg
    candidates.append(imageio_ffmpeg.get_ffmpeg_exe())
  except (ImportError, RuntimeError):  # not installed, or no binary for this platform
    pass
  return next((exe for exe in candidates if exe and _has_libvmaf(exe)), None)


def vmaf_available() -> bool:
  """True when an ffmpeg with libvmaf is available (what `vmaf_scores` needs)."""
  return ffmpeg_with_vmaf() is not None


def vmaf_scores(x_BHW3: np.ndarray, x_hat_BHW3: np.ndarray) -> np.ndarray:
  """VMAF of each pair of [0, 1] float images (reference, distorted), [B], via 8-bit PNGs (RGB, or grayscale for
  [B, H, W, 1]).

  One ffmpeg per pair, as the ProxIQA authors did (a sequence would couple the pairs through VMAF's motion
  feature); the pairs run concurrently.
  """
  exe = ffmpeg_with_vmaf()
  if exe is None:
    raise ConfigError(f"VMAF needs an ffmpeg built with libvmaf: {VMAF_HINT}")
  h, w = np.shape(x_BHW3)[1:3]
  if min(h, w) < VMAF_MIN_SIDE:
    raise DataError(f"VMAF needs images of at least {VMAF_MIN_SIDE} px a side, got {h}x{w}")
  from PIL import Image

  def one(tmp, i, a, b):
    ref, dis, log = (pathlib.Path(tmp) / f"{name}{i}{ext}" for name, ext in
                     (("ref", ".png"), ("dis", ".png"), ("log", ".json")))
    for v, path in ((a, ref), (b, dis)):
      u8 = np.rint(np.clip(v, 0, 1) * 255).astype(np.uint8)
      Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8).save(path)  # [H, W, 1]: a grayscale PNG
    r = subprocess.run([exe, "-loglevel", "error", "-i", str(dis), "-i", str(ref), "-lavfi",
                        f"libvmaf=log_fmt=json:log_path={log}", "-f", "null", "-"], capture_output=True, text=True)
    if r.returncode != 0:
      why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
      raise DataError(f"VMAF of a {a.shape[0]}x{a.shape[1]} image pair failed in {exe}: {why}")
    return json.loads(log.read_text())["frames"][0]["metrics"]["vmaf"]

  with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
    scores = list(pool.map(lambda args: one(tmp, *args),
                           [(i, a, b) for i, (a, b) in enumerate(zip(x_BHW3, x_hat_BHW3))]))
  return np.asarray(scores, np.float32)


def vmaf_image(original_HWC: np.ndarray, decoded_HWC: np.ndarray) -> float:
  """VMAF of one decoded uint8 image (RGB or 1-channel) against its original (an `extra_metrics` entry of the RD
  code); NaN (n/a) for images under `VMAF_MIN_SIDE` px a side."""
  if min(np.shape(original_HWC)[:2]) < VMAF_MIN_SIDE:
    return math.nan
  return float(vmaf_scores(np.asarray(original_HWC)[None] / 255.0, np.asarray(decoded_HWC)[None] / 255.0)[0])


def extra_metrics() -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
  """`{"vmaf": vmaf_image}` when an ffmpeg with libvmaf is available, else {}: the `extra_metrics` argument of
  `jaxcomp.evaluation`'s curve and evaluation functions, so VMAF is reported wherever it can be computed."""
  return {"vmaf": vmaf_image} if vmaf_available() else {}

"""Image pairs for the MS-SSIM reference test, and the script that computed their reference values.

The values in `REFERENCE` were computed once, offline, by the widely used PyTorch implementation `pytorch_msssim`
(v1.0.0, `ms_ssim(X, Y, data_range=255, size_average=False)`: 5 scales, 11x11 Gaussian sigma 1.5, K = (0.01, 0.03),
valid convolution, relu on cs / ssim) with this exact command from the repository root:

  python -m venv --system-site-packages /tmp/msssim_venv
  /tmp/msssim_venv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
  /tmp/msssim_venv/bin/pip install --no-deps pytorch-msssim==1.0.0
  /tmp/msssim_venv/bin/python tests/metrics/ms_ssim_reference.py ../shared/data/kodak

torch is never a dependency of jaxcomp: only this script imports it. All sides are even at every scale, because
`pytorch_msssim` zero-pads odd sides before pooling where jaxcomp repeats the edge (as TensorFlow does).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np


def _box_blur(x: np.ndarray, r: int) -> np.ndarray:
  p = np.pad(x.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="edge")
  h, w = x.shape[:2]
  acc = sum(p[i:i + h, j:j + w] for i in range(2 * r + 1) for j in range(2 * r + 1))
  return np.round(acc / (2 * r + 1) ** 2).astype(np.uint8)


def reference_pairs(kodak_dir: str | pathlib.Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Deterministic uint8 pairs [H, W, C]; the Kodak pair only when `kodak_dir` is given."""
  import skimage.data

  rng = np.random.default_rng(0)
  astro = skimage.data.astronaut()  # 512x512x3
  pairs = {
      "astronaut_noise": (astro, np.clip(astro + rng.normal(0.0, 20.0, astro.shape), 0, 255).round().astype(np.uint8)),
      "astronaut_blur": (astro[:320, :480], _box_blur(astro[:320, :480], 2)),
      "coffee_quantized": (skimage.data.coffee()[:, :576], (skimage.data.coffee()[:, :576] // 32 * 32 + 16)),
      "camera_gray_noise": (skimage.data.camera()[..., None],
                            np.clip(skimage.data.camera()[..., None] + rng.normal(0.0, 8.0, (512, 512, 1)), 0,
                                    255).round().astype(np.uint8)),
  }
  u = rng.integers(0, 256, (176, 208, 3), dtype=np.uint8)
  pairs["random_anticorrelated"] = (u, 255 - u)  # negative cs at every scale: relu gives 0
  if kodak_dir is not None:
    from PIL import Image

    k = np.asarray(Image.open(pathlib.Path(kodak_dir) / "kodim23.png").convert("RGB"))
    pairs["kodim23_quantized"] = (k, (k // 24 * 24 + 12).astype(np.uint8))
  return pairs


# name -> MS-SSIM per pytorch_msssim 1.0.0 (command above).
REFERENCE: dict[str, float] = {
    'astronaut_noise': 0.8755227853,
    'astronaut_blur': 0.9737607481,
    'coffee_quantized': 0.9375472685,
    'camera_gray_noise': 0.9417814476,
    'random_anticorrelated': 0.0000000000,
    'kodim23_quantized': 0.9297440755,
}


def main() -> None:
  import torch
  from pytorch_msssim import ms_ssim

  kodak = sys.argv[1] if len(sys.argv) > 1 else None
  for name, (x, y) in reference_pairs(kodak).items():
    tx = torch.from_numpy(x.astype(np.float64)).permute(2, 0, 1)[None]
    ty = torch.from_numpy(y.astype(np.float64)).permute(2, 0, 1)[None]
    print(f"    {name!r}: {float(ms_ssim(tx, ty, data_range=255, size_average=False)[0]):.10f},")


if __name__ == "__main__":
  main()

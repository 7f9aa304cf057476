"""Paired comparison of the stage-2 fine-tunes (docs/proxiqa.md, "Paired fine-tuning"): at each lambda, the
perceptual model (LOSS = ssim_p or msssim_p) minus its MSE control on the same images, mean and 95% confidence
interval (t, df = images - 1).

  python docs/proxiqa/paired.py RUNS_DIR LOSS OUT.md LAMBDA [LAMBDA ...]

Reads the per-point caches `RUNS_DIR/<loss>_<lambda>.kodak_eval.pkl` written by eval_rd.py (bpp from real files).
"""
import pathlib
import pickle
import sys

import numpy as np
from scipy import stats

from jaxcomp.io_utils import write_text_atomic

runs_dir, loss, out, lambdas = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3]), sys.argv[4:]
label = {"ssim_p": "SSIM_p", "msssim_p": "MS-SSIM_p"}[loss]
KEYS = (("bpp", "bpp", 4), ("psnr-rgb", "PSNR RGB dB", 3), ("psnr-yuv", "PSNR YUV dB", 3), ("ssim-rgb", "SSIM", 4),
        ("ms-ssim-rgb", "MS-SSIM", 4))


def per_image(loss, lam):
  with open(runs_dir / f"{loss}_{lam}.kodak_eval.pkl", "rb") as f:
    curve, _ = pickle.load(f)
  return {r["image"]: r for r in curve.per_image[0]}


lines = ["| lambda | " + " | ".join(f"MSE {t} | {label} - MSE {t} (95% CI)" for _, t, _ in KEYS) + " |",
         "|---" * (1 + 2 * len(KEYS)) + "|"]
for lam in lambdas:
  a, b = per_image("mse", lam), per_image(loss, lam)
  names = sorted(a)
  assert names == sorted(b), "the two models were evaluated on different images"
  cells = []
  for key, _, digits in KEYS:
    x = np.array([a[n][key] for n in names], float)
    d = np.array([b[n][key] for n in names], float) - x
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    cells += [f"{x.mean():.{digits}f}", f"{d.mean():+.{digits}f} ({d.mean() - half:+.{digits}f}, {d.mean() + half:+.{digits}f})"]
  lines.append(f"| {lam} | " + " | ".join(cells) + " |")
text = f"Paired per image over {len(names)} images: {label} fine-tune minus MSE fine-tune of the same base model.\n\n"
write_text_atomic(out, text + "\n".join(lines) + "\n")
print(text + "\n".join(lines))

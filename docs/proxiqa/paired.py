"""Paired comparison of the stage-2 fine-tunes (docs/proxiqa.md, "Paired fine-tuning"): at each lambda, the
perceptual model (LOSS = ssim_p, msssim_p or vmaf_p) minus its MSE control on the same images, mean and 95%
confidence interval (t, df = images - 1).

  python docs/proxiqa/paired.py RUNS_DIR LOSS OUT.md LAMBDA [LAMBDA ...]
  python docs/proxiqa/paired.py RUNS_DIR LOSS OUT.md LAMBDA [LAMBDA ...] --eval kodak

Reads the per-point caches `RUNS_DIR/<loss>_<lambda>.kodak_eval.pkl` written by eval_rd.py (bpp from real files),
or with `--eval NAME` the `jaxcomp eval` results `RUNS_DIR/<loss>_<lambda>/eval/NAME.json` (which add VMAF when
an ffmpeg with libvmaf is installed).
"""
import json
import pathlib
import pickle
import sys

import numpy as np
from scipy import stats

from jaxcomp.io_utils import write_text_atomic

args = sys.argv[1:]
eval_name = None
if "--eval" in args:
  i = args.index("--eval")
  eval_name, args = args[i + 1], args[:i] + args[i + 2:]
runs_dir, loss, out, lambdas = pathlib.Path(args[0]), args[1], pathlib.Path(args[2]), args[3:]
label = {"ssim_p": "SSIM_p", "msssim_p": "MS-SSIM_p", "vmaf_p": "VMAF_p"}[loss]
if eval_name is None:
  KEYS = (("bpp", "bpp", 4), ("psnr-rgb", "PSNR RGB dB", 3), ("psnr-yuv", "PSNR YUV dB", 3), ("ssim-rgb", "SSIM", 4),
          ("ms-ssim-rgb", "MS-SSIM", 4))
else:
  KEYS = (("bpp", "bpp", 4), ("psnr", "PSNR RGB dB", 3), ("psnr_yuv", "PSNR YUV dB", 3), ("ssim", "SSIM", 4),
          ("ms_ssim", "MS-SSIM", 4), ("vmaf", "VMAF", 2))


def per_image(loss, lam):
  if eval_name is not None:
    records = json.loads((runs_dir / f"{loss}_{lam}" / "eval" / f"{eval_name}.json").read_text())["images"]
    return {r["name"]: r for r in records}
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

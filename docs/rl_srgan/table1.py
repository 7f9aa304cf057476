"""Table 1 of RL-SRGAN in small, from `jaxcomp eval` reports (docs/rl_srgan.md).

  python docs/rl_srgan/table1.py RL_EVAL.json SRGAN_EVAL.json [RL_EVAL_2.json SRGAN_EVAL_2.json ...] [--out table.md]

Both reports must score the same images (same folder, same scale and JPEG quality, so the same files). Rows:
RL-SRGAN, SRGAN (RL term off), Lanczos upsampling of the same JPEG (the `lanczos_*` columns of the RL report) and
Pillow JPEG 4:2:0 of the full-size image at the largest quality not above each RL file's size (the `jpeg` record).
Means over images, and paired differences against RL-SRGAN with Student-t 95% intervals over images. With several
pairs (one per seed), one table per seed and a summary: per seed, RL-SRGAN minus SRGAN and minus Lanczos (PSNR),
and their mean over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

import numpy as np
from scipy import stats


def _records(path: pathlib.Path) -> dict[str, dict]:
  try:
    report = json.loads(path.read_text())
    return {r["name"]: r for r in report["images"]}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise SystemExit(f"table1.py: error: {path}: not a jaxcomp eval report ({type(e).__name__}: {e})") from None


def _paired(a: np.ndarray, b: np.ndarray) -> str:
  d = a - b
  half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
  return f"{d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}]"


def table(rl: dict[str, dict], srgan: dict[str, dict]) -> str:
  if set(rl) != set(srgan):
    raise SystemExit(f"table1.py: error: the reports score different images ({len(set(rl) ^ set(srgan))} unpaired)")
  names = sorted(rl)
  col = lambda recs, key: np.array([recs[n][key] for n in names], np.float64)  # noqa: E731
  jpeg = {n: rl[n]["jpeg"] for n in names}
  rows = {
      "RL-SRGAN": (col(rl, "bpp"), col(rl, "psnr"), col(rl, "ms_ssim")),
      "SRGAN (RL off)": (col(srgan, "bpp"), col(srgan, "psnr"), col(srgan, "ms_ssim")),
      "Lanczos (same JPEG)": (col(rl, "bpp"), col(rl, "lanczos_psnr"), col(rl, "lanczos_ms_ssim")),
      "JPEG 4:2:0 full size": (col(jpeg, "bpp"), col(jpeg, "psnr"), col(jpeg, "ms_ssim")),
  }
  ref = rows["RL-SRGAN"]
  lines = [f"{len(names)} images. Paired differences: RL-SRGAN minus the row, mean [95% CI over images].", "",
           "| method | bpp | PSNR (dB) | MS-SSIM | RL-SRGAN - row, PSNR | RL-SRGAN - row, MS-SSIM |",
           "| --- | --- | --- | --- | --- | --- |"]
  for name, (bpp, psnr, ms) in rows.items():
    diff = ("", "") if name == "RL-SRGAN" else (_paired(ref[1], psnr), _paired(ref[2], ms))
    lines.append(f"| {name} | {bpp.mean():.4f} | {psnr.mean():.2f} | {ms.mean():.4f} | {diff[0]} | {diff[1]} |")
  return "\n".join(lines) + "\n"


def seeds_summary(pairs: list[tuple[dict, dict]]) -> str:
  lines = ["| seed | RL-SRGAN PSNR | SRGAN PSNR | Lanczos PSNR | RL-SRGAN - SRGAN | RL-SRGAN - Lanczos |",
           "| --- | --- | --- | --- | --- | --- |"]
  d_s, d_l = [], []
  for i, (rl, srgan) in enumerate(pairs):
    names = sorted(rl)
    a = np.mean([rl[n]["psnr"] for n in names])
    b = np.mean([srgan[n]["psnr"] for n in names])
    c = np.mean([rl[n]["lanczos_psnr"] for n in names])
    d_s.append(a - b)
    d_l.append(a - c)
    lines.append(f"| {i} | {a:.2f} | {b:.2f} | {c:.2f} | {a - b:+.3f} | {a - c:+.3f} |")
  lines.append(f"| mean of {len(pairs)} | | | | {np.mean(d_s):+.3f} | {np.mean(d_l):+.3f} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("reports", type=pathlib.Path, nargs="+", help="RL_EVAL.json SRGAN_EVAL.json, one pair per seed")
  p.add_argument("--out", type=pathlib.Path)
  a = p.parse_args(argv)
  if len(a.reports) % 2:
    p.error("give the reports in pairs: RL_EVAL.json SRGAN_EVAL.json per seed")
  pairs = [(_records(a.reports[i]), _records(a.reports[i + 1])) for i in range(0, len(a.reports), 2)]
  parts = [(f"Seed {i}: " if len(pairs) > 1 else "") + table(rl, srgan) for i, (rl, srgan) in enumerate(pairs)]
  if len(pairs) > 1:
    parts.append("Over seeds (PSNR in dB, means over the images):\n\n" + seeds_summary(pairs))
  text = "\n".join(parts)
  print(text, end="")
  if a.out:
    from jaxcomp.io_utils import write_text_atomic
    write_text_atomic(a.out, text)
  return 0


if __name__ == "__main__":
  sys.exit(main())

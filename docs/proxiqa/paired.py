"""Paired comparison of the stage-2 fine-tunes (docs/proxiqa.md, "Paired fine-tuning"): at each lambda, the
perceptual model (LOSS = ssim_p, msssim_p or vmaf_p) minus its MSE control on the same images, mean and 95%
confidence interval (t, df = images - 1).

  python docs/proxiqa/paired.py RUNS_DIR LOSS OUT.md LAMBDA [LAMBDA ...]
  python docs/proxiqa/paired.py RUNS_DIR LOSS OUT.md LAMBDA [LAMBDA ...] --eval kodak

Reads each point's RD cache `RUNS_DIR/<loss>_<lambda>/eval/rd_<data>.json` written by eval_rd.py / `jaxcomp rd`
(bpp from real files; older runs: the pickle `RUNS_DIR/<loss>_<lambda>.kodak_eval.pkl` earlier versions wrote),
or with `--eval NAME` the `jaxcomp eval` results `RUNS_DIR/<loss>_<lambda>/eval/NAME.json` (which add VMAF when
an ffmpeg with libvmaf is installed). Images are paired by name; files written before image names kept their
extension ("kodim01", now "kodim01.png") pair with newer ones by the name without it. A missing or unpaired file
ends the script with one line (`paired.py: error: ...`, exit code 2).
"""
import argparse
import json
import pathlib
import pickle
import sys

import numpy as np
from scipy import stats

from jaxcomp import errors
from jaxcomp.io_utils import write_text_atomic

LABELS = {"ssim_p": "SSIM_p", "msssim_p": "MS-SSIM_p", "vmaf_p": "VMAF_p"}
CACHE_KEYS = (("bpp", "bpp", 4), ("psnr-rgb", "PSNR RGB dB", 3), ("psnr-yuv", "PSNR YUV dB", 3),
              ("ssim-rgb", "SSIM", 4), ("ms-ssim-rgb", "MS-SSIM", 4))
EVAL_KEYS = (("bpp", "bpp", 4), ("psnr", "PSNR RGB dB", 3), ("psnr_yuv", "PSNR YUV dB", 3), ("ssim", "SSIM", 4),
             ("ms_ssim", "MS-SSIM", 4), ("vmaf", "VMAF", 2))


def per_image(runs_dir, eval_name, loss, lam):
  """Image name -> the record of that image, of the `<loss>_<lam>` model."""
  if eval_name is not None:
    path = runs_dir / f"{loss}_{lam}" / "eval" / f"{eval_name}.json"
    if not path.is_file():
      raise errors.DataError(f"{path}: no such file (run `jaxcomp eval` on that workdir first)")
    return {r["name"]: r for r in json.loads(path.read_text())["images"]}
  # The RD cache `jaxcomp rd` / eval_rd.py keep in the workdir (WORKDIR/eval/rd_<data>.json), else the pickle
  # eval_rd.py wrote beside it before the two shared one driver.
  caches = sorted((runs_dir / f"{loss}_{lam}" / "eval").glob("rd_*.json"))
  if len(caches) > 1:
    raise errors.DataError(f"{runs_dir / f'{loss}_{lam}'}: several RD caches ({', '.join(c.name for c in caches)}); "
                           "keep the one of the images to pair")
  if caches:
    return {r["image"]: r for r in json.loads(caches[0].read_text())["records"]}
  path = runs_dir / f"{loss}_{lam}.kodak_eval.pkl"
  if not path.is_file():
    raise errors.DataError(f"{path}: no such file, and no WORKDIR/eval/rd_*.json (eval_rd.py or `jaxcomp rd` write "
                           "it; --eval NAME reads `jaxcomp eval` results)")
  with open(path, "rb") as f:
    curve, _ = pickle.load(f)
  return {r["image"]: r for r in curve.per_image[0]}


def _by_stem(records, where):
  out = {}
  for name, r in records.items():
    stem = str(pathlib.PurePosixPath(name).with_suffix(""))
    if stem in out:
      raise errors.DataError(f"{where}: images {name!r} and another share the name {stem!r} without extension")
    out[stem] = r
  return out


def pair(a, b, where):
  """`(names, a, b)` with the two models' records keyed alike: by name, or by name without extension when the two
  files were written by loaders that named images differently (before and after names kept their extension)."""
  if set(a) != set(b):
    a, b = _by_stem(a, where), _by_stem(b, where)
    if set(a) != set(b):
      only = sorted(set(a) ^ set(b))
      raise errors.DataError(f"{where}: the two models were evaluated on different images ({len(only)} unpaired, "
                             f"e.g. {only[0]!r})")
  return sorted(a), a, b


def run(a):
  if a.loss not in LABELS:
    raise errors.ConfigError(f"LOSS {a.loss!r}: expected one of {', '.join(LABELS)}")
  runs_dir, label = pathlib.Path(a.runs_dir), LABELS[a.loss]
  keys = CACHE_KEYS if a.eval is None else EVAL_KEYS
  lines = ["| lambda | " + " | ".join(f"MSE {t} | {label} - MSE {t} (95% CI)" for _, t, _ in keys) + " |",
           "|---" * (1 + 2 * len(keys)) + "|"]
  for lam in a.lambdas:
    names, x_rec, y_rec = pair(per_image(runs_dir, a.eval, "mse", lam), per_image(runs_dir, a.eval, a.loss, lam),
                               f"lambda {lam}")
    cells = []
    for key, _, digits in keys:
      missing = [n for n in names if key not in x_rec[n] or key not in y_rec[n]]
      if missing:
        raise errors.DataError(f"lambda {lam}: no {key!r} for image {missing[0]!r} (VMAF needs ffmpeg with libvmaf)")
      x = np.array([x_rec[n][key] for n in names], float)
      d = np.array([y_rec[n][key] for n in names], float) - x
      half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
      cells += [f"{x.mean():.{digits}f}",
                f"{d.mean():+.{digits}f} ({d.mean() - half:+.{digits}f}, {d.mean() + half:+.{digits}f})"]
    lines.append(f"| {lam} | " + " | ".join(cells) + " |")
  text = (f"Paired per image over {len(names)} images: {label} fine-tune minus MSE fine-tune of the same base "
          "model.\n\n")
  write_text_atomic(pathlib.Path(a.out), text + "\n".join(lines) + "\n")
  print(text + "\n".join(lines))


def main(argv=None):
  p = argparse.ArgumentParser(prog="paired.py", description=__doc__.splitlines()[0])
  p.add_argument("runs_dir")
  p.add_argument("loss", help=", ".join(LABELS))
  p.add_argument("out")
  p.add_argument("lambdas", nargs="+")
  p.add_argument("--eval", default=None, help="read RUNS_DIR/<loss>_<lambda>/eval/NAME.json instead of the caches")
  a = p.parse_args(argv)
  return errors.run_script(p.prog, run, a)  # bad input: one line, exit 2


if __name__ == "__main__":
  sys.exit(main())

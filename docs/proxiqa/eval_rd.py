"""Kodak evaluation of the small-scale ProxIQA reproduction (docs/proxiqa.md, "Reproduction at small scale").

  python docs/proxiqa/eval_rd.py RUNS_DIR KODAK_DIR OUT_DIR LAMBDA [LAMBDA ...] [--baselines CACHE.pkl]
  python docs/proxiqa/eval_rd.py RUNS_DIR KODAK_DIR OUT_DIR --only ssim_p_0.0130   # one point, cached
  ... --label ssim_p="BLS SSIM (eq. 13)"   # name a curve (runs trained with --config.use_proxy=False)

RUNS_DIR holds one workdir per (loss, lambda), `mse_<lambda>`, `ssim_p_<lambda>` and optionally `msssim_p_<lambda>`
(train_rd.sh, or stage 2 of finetune_rd.sh). `--baselines none` leaves the Pillow curves out. Does what
`jaxcomp rd --workdir ... --data KODAK_DIR --out OUT_DIR --baselines jpeg420,jpeg2000` does (real files, RD curves,
BD-rates, plots), with one curve per loss and BD-rates against the MSE curve (also with the classic cubic fit,
`bd_rate_cubic.md`), plus two things `jaxcomp rd` has not: each point is cached next to its workdir
(`<loss>_<lambda>.kodak_eval.pkl`, so finished runs can be evaluated while others train), and per model the entropy
model's estimate (-sum log2 p of the quantized latents, `Codec.estimated_bits`) is set against the bytes actually
written (`estimate_vs_file.md`). The baseline curves can come from a pickle cache (they do not depend on the runs),
written when missing. A missing workdir, a bad folder or argument ends the script with one line
(`eval_rd.py: error: ...`, exit code 2).
"""
import argparse
import csv
import os
import pathlib
import pickle
import sys
import time

from jaxcomp import errors, evaluation, train as harness
from jaxcomp.entropy import bitstream
from jaxcomp.evaluation import rd, report
from jaxcomp.io_utils import write_text_atomic
from jaxcomp.methods.proxiqa import codec as proxiqa_codec

CURVE_NAMES = (("BLS MSE", "mse"), ("BLS SSIM_p", "ssim_p"), ("BLS MS-SSIM_p", "msssim_p"))


def point(runs_dir, imgs, pixels, name, loss, lam):
  """One rate point: its one-point RD curve and estimate row, cached in the workdir's folder (pickle)."""
  wd = runs_dir / f"{loss}_{lam}"
  cache = runs_dir / f"{loss}_{lam}.kodak_eval.pkl"
  if cache.is_file():
    with open(cache, "rb") as f:
      return pickle.load(f)
  config, state = harness.load_for_eval(wd)
  if config.get("method") != "proxiqa":
    raise errors.CheckpointError(f"{wd}: a {config.get('method')!r} run, not proxiqa")
  codec = proxiqa_codec.build_codec(config, state)
  lmbda = float(config.lmbda)
  curve = evaluation.learned_rd_curve(imgs, {lmbda: codec}, name, description=f"ProxIQA {name}", progress=print)
  est = sum(sum(codec.estimated_bits(img).values()) for _, img in imgs)
  file_bits = 8 * sum(r["num_bytes"] for r in curve.per_image[0])
  payload = file_bits - 8 * bitstream.overhead_bytes(1) * len(imgs)
  row = {"name": name, "lambda": lmbda, "images": len(imgs), "estimate_bpp": est / sum(pixels),
         "file_bpp": file_bits / sum(pixels), "payload_bpp": payload / sum(pixels),
         "payload_vs_estimate_%": 100.0 * (payload / est - 1.0), "file_vs_estimate_%": 100.0 * (file_bits / est - 1.0)}
  print(row, flush=True)
  with open(cache.with_suffix(".tmp"), "wb") as f:
    pickle.dump((curve, row), f)
  os.replace(cache.with_suffix(".tmp"), cache)
  return curve, row


def run(a):
  """Everything `main` does once the arguments are parsed; raises `JaxcompError` on bad input."""
  bad = [item for item in a.label if "=" not in item]
  if bad:
    raise errors.ConfigError(f"--label {bad[0]!r}: expected LOSS=NAME, e.g. ssim_p='BLS SSIM (eq. 13)'")
  labels = dict(item.split("=", 1) for item in a.label)
  curve_names = tuple((labels.get(loss, name), loss) for name, loss in CURVE_NAMES)
  name_of = {loss: name for name, loss in curve_names}
  if a.only:
    loss, _, lam = a.only.rpartition("_")
    if loss not in name_of or not lam:
      raise errors.ConfigError(f"--only {a.only!r}: expected <loss>_<lambda> with loss one of {', '.join(name_of)}")
  elif not a.lambdas:
    raise errors.ConfigError("give the LAMBDAs of the runs to evaluate (or --only <loss>_<lambda>)")
  runs_dir, out = pathlib.Path(a.runs_dir), pathlib.Path(a.out)
  if not runs_dir.is_dir():
    raise errors.DataError(f"RUNS_DIR {runs_dir}: not a folder")
  t0 = time.time()
  print("load", os.getloadavg(), flush=True)
  imgs = evaluation.load_images(a.kodak)
  pixels = [img.shape[0] * img.shape[1] for _, img in imgs]
  if a.only:  # one point, cached for the final call (lets finished runs be evaluated while others train)
    point(runs_dir, imgs, pixels, name_of[loss], loss, lam)
    return
  curves, est_rows = [], []
  for name, loss in curve_names:
    if loss != "mse" and not all((runs_dir / f"{loss}_{lam}").is_dir() for lam in a.lambdas):
      continue  # a curve that was not trained (MS-SSIM_p in train_rd.sh)
    pts = [point(runs_dir, imgs, pixels, name, loss, lam) for lam in a.lambdas]
    est_rows += [r for _, r in pts]
    cs = [c for c, _ in pts]
    keys = set.intersection(*(set(c.results) for c in cs))
    curves.append(rd.RDCurve(name, cs[0].description, {k: tuple(c.results[k][0] for c in cs) for k in sorted(keys)},
                             tuple(c.params[0] for c in cs), tuple(c.per_image[0] for c in cs)))
  print(f"learned curves {time.time() - t0:.0f} s", flush=True)

  cache = pathlib.Path(a.baselines) if a.baselines not in ("", "none") else None
  if a.baselines == "none":
    base = []
  elif cache and cache.is_file():
    with open(cache, "rb") as f:
      base = pickle.load(f)
  else:
    base = [evaluation.codec_rd_curve(imgs, b) for b in ("jpeg420", "jpeg2000")]
    if cache:
      with open(cache, "wb") as f:
        pickle.dump(base, f)
  curves += base

  anchor = name_of["mse"]
  report.write_results(curves, out, anchor=anchor)  # pchip, as `jaxcomp rd`
  rows = rd.rd_table(curves, anchor, method="cubic")
  with open(out / "bd_rate_cubic.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  write_text_atomic(out / "bd_rate_cubic.md", f"BD against `{anchor}` (cubic); BD-rate in %, BD-PSNR in dB.\n\n"
                    + report.format_table(rows) + "\n")
  with open(out / "estimate_vs_file.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(est_rows[0]))
    w.writeheader()
    w.writerows(est_rows)
  write_text_atomic(out / "estimate_vs_file.md", report.format_table(est_rows, digits=4) + "\n")
  print(f"total {time.time() - t0:.0f} s, load {os.getloadavg()}", flush=True)


def main(argv=None):
  p = argparse.ArgumentParser(prog="eval_rd.py")
  p.add_argument("runs_dir")
  p.add_argument("kodak")
  p.add_argument("out")
  p.add_argument("lambdas", nargs="*")
  p.add_argument("--baselines", default="")
  p.add_argument("--only", default="", help="evaluate and cache one point, e.g. ssim_p_0.0130")
  p.add_argument("--label", action="append", default=[],
                 help="LOSS=NAME, the curve name of LOSS's runs, e.g. msssim_p='BLS MS-SSIM (eq. 13)'")
  a = p.parse_args(argv)
  return errors.run_script(p.prog, run, a)  # bad input: one line, exit 2


if __name__ == "__main__":
  sys.exit(main())

"""Kodak evaluation of the small-scale ProxIQA reproduction (docs/proxiqa.md, "Reproduction at small scale").

  python docs/proxiqa/eval_rd.py RUNS_DIR KODAK_DIR OUT_DIR LAMBDA [LAMBDA ...] [--baselines CACHE.pkl]
  python docs/proxiqa/eval_rd.py RUNS_DIR KODAK_DIR OUT_DIR --only ssim_p_0.0130   # one point, cached
  ... --label ssim_p="BLS SSIM (eq. 13)"   # name a curve (runs trained with --config.use_proxy=False)

RUNS_DIR holds one workdir per (loss, lambda), `mse_<lambda>`, `ssim_p_<lambda>` and optionally `msssim_p_<lambda>`
(train_rd.sh, or stage 2 of finetune_rd.sh). `--baselines none` leaves the Pillow curves out. It is `jaxcomp rd`
on those workdirs, through the same driver (`jaxcomp.evaluation.rd_run`), with one curve per loss named as in the
docs, BD-rates against the MSE curve with both interpolations (`bd_rate.md` pchip, `bd_rate_cubic.md` cubic) and
`estimate_vs_file.md` (per model, the entropy model's estimate against the bytes written); each point is cached in
its workdir (`eval/rd_<data>.json`, so finished runs can be measured with `--only` while others train), and the
baseline curves can come from a pickle cache (they do not depend on the runs), written when missing. A missing
workdir, a bad folder or argument ends the script with one line (`eval_rd.py: error: ...`, exit code 2).
"""
import argparse
import os
import pathlib
import pickle
import sys
import time

from jaxcomp import data, errors, evaluation, train as harness

CURVE_NAMES = (("BLS MSE", "mse"), ("BLS SSIM_p", "ssim_p"), ("BLS MS-SSIM_p", "msssim_p"))


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
  imgs = data.load_eval_images(a.kodak)
  if a.only:  # one point, cached in its workdir (lets finished runs be evaluated while others train)
    evaluation.learned_point(runs_dir / a.only, imgs, progress=print)
    return
  workdirs, curve_labels = [], {}
  for name, loss in curve_names:
    if loss != "mse" and not all((runs_dir / f"{loss}_{lam}").is_dir() for lam in a.lambdas):
      continue  # a curve that was not trained (MS-SSIM_p in train_rd.sh)
    workdirs += [runs_dir / f"{loss}_{lam}" for lam in a.lambdas]
    curve_labels[f"proxiqa bls_{loss}"] = name
  for wd in workdirs:
    config = harness.load_config(wd)
    if config.get("method") != "proxiqa":
      raise errors.CheckpointError(f"{wd}: a {config.get('method')!r} run, not proxiqa")

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
  # The one RD driver of the package, as `jaxcomp rd --bd pchip,cubic --label ...`: curves, BD tables (pchip in
  # bd_rate.md, cubic in bd_rate_cubic.md), estimate_vs_file.md, plots.
  evaluation.rd_run(workdirs, imgs, out, baselines=(), extra_curves=base, anchor=name_of["mse"],
                    labels=curve_labels,
                    bd_methods=("pchip", "cubic"), progress=print)
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

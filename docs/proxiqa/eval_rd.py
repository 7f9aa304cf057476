"""Kodak evaluation of the small-scale ProxIQA reproduction (docs/proxiqa.md, "Reproduction at small scale").

  python docs/proxiqa/eval_rd.py RUNS_DIR KODAK_DIR OUT_DIR LAMBDA [LAMBDA ...] [--baselines CACHE.pkl]
  python docs/proxiqa/eval_rd.py RUNS_DIR KODAK_DIR OUT_DIR --only ssim_p_0.0130   # one point, cached
  ... --label ssim_p="BLS SSIM (eq. 13)"   # name a curve (runs trained with --config.use_proxy=False)

RUNS_DIR holds one workdir per (loss, lambda), `mse_<lambda>`, `ssim_p_<lambda>` and optionally `msssim_p_<lambda>`
(train_rd.sh, or stage 2 of finetune_rd.sh). `--baselines none` leaves the Pillow curves out. Does what
`jaxcomp.methods.proxiqa.train.rd_report(runs, kodak, out, baselines=("jpeg420", "jpeg2000"), anchor="BLS MSE")`
does (real files, BD-rates against the MSE curve, plots), keeping the codecs to also write, per model, the entropy
model's estimate (-sum log2 p of the quantized latents, `Codec.estimated_bits`) against the bytes actually written.
Each point is cached next to its workdir (`<loss>_<lambda>.kodak_eval.pkl`, so finished runs can be evaluated while
others train); the baseline curves can come from a pickle cache (they do not depend on the runs), written when missing.
"""
import argparse
import csv
import os
import pathlib
import pickle
import time

from jaxcomp import evaluation, train as harness
from jaxcomp.entropy import bitstream
from jaxcomp.evaluation import rd, report
from jaxcomp.io_utils import write_text_atomic
from jaxcomp.methods.proxiqa import train as proxiqa

p = argparse.ArgumentParser()
p.add_argument("runs_dir")
p.add_argument("kodak")
p.add_argument("out")
p.add_argument("lambdas", nargs="*")
p.add_argument("--baselines", default="")
p.add_argument("--only", default="", help="evaluate and cache one point, e.g. ssim_p_0.0130")
p.add_argument("--label", action="append", default=[],
               help="LOSS=NAME, the curve name of LOSS's runs, e.g. msssim_p='BLS MS-SSIM (eq. 13)'")
a = p.parse_args()
runs_dir, out = pathlib.Path(a.runs_dir), pathlib.Path(a.out)
t0 = time.time()
print("load", os.getloadavg(), flush=True)
imgs = evaluation.load_images(a.kodak)
pixels = [img.shape[0] * img.shape[1] for _, img in imgs]


def point(name, loss, lam):
  """One rate point: its one-point RD curve and estimate row, cached in the workdir's folder (pickle)."""
  wd = runs_dir / f"{loss}_{lam}"
  cache = runs_dir / f"{loss}_{lam}.kodak_eval.pkl"
  if cache.is_file():
    with open(cache, "rb") as f:
      return pickle.load(f)
  config, state = harness.load_for_eval(wd)
  codec = proxiqa.build_codec(config, state)
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


LABELS = dict(item.split("=", 1) for item in a.label)
CURVES = tuple((LABELS.get(loss, name), loss)
               for name, loss in (("BLS MSE", "mse"), ("BLS SSIM_p", "ssim_p"), ("BLS MS-SSIM_p", "msssim_p")))
if a.only:  # one point, cached for the final call (lets finished runs be evaluated while others train)
  loss, lam = a.only.rsplit("_", 1)
  point(dict((l, n) for n, l in CURVES)[loss], loss, lam)
  raise SystemExit(0)
curves, est_rows = [], []
for name, loss in CURVES:
  if loss != "mse" and not all((runs_dir / f"{loss}_{lam}").is_dir() for lam in a.lambdas):
    continue  # a curve that was not trained (MS-SSIM_p in train_rd.sh)
  pts = [point(name, loss, lam) for lam in a.lambdas]
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

report.write_results(curves, out, anchor="BLS MSE")  # pchip, as rd_report
rows = rd.rd_table(curves, "BLS MSE", method="cubic")
with open(out / "bd_rate_cubic.csv", "w", newline="") as f:
  w = csv.DictWriter(f, fieldnames=list(rows[0]))
  w.writeheader()
  w.writerows(rows)
write_text_atomic(out / "bd_rate_cubic.md", "BD against `BLS MSE` (cubic); BD-rate in %, BD-PSNR in dB.\n\n"
                  + report.format_table(rows) + "\n")
with open(out / "estimate_vs_file.csv", "w", newline="") as f:
  w = csv.DictWriter(f, fieldnames=list(est_rows[0]))
  w.writeheader()
  w.writerows(est_rows)
write_text_atomic(out / "estimate_vs_file.md", report.format_table(est_rows, digits=4) + "\n")
print(f"total {time.time() - t0:.0f} s, load {os.getloadavg()}", flush=True)

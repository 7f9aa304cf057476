"""CAE-ADMM reproduction on an image folder (Kodak): the Table 1 ablation with 95% confidence intervals, and the
RD plots (SSIM, MS-SSIM vs bpp) against JPEG and JPEG 2000 through `jaxcomp.evaluation` (docs/cae_admm.md).

  python docs/cae_admm/report.py --data ../shared/data/kodak --out docs/cae_admm --baselines-only
  python docs/cae_admm/report.py --data ../shared/data/kodak --out docs/cae_admm \\
      --admm runs/cae_demo/demo_c4 runs/cae_demo/demo_admm runs/cae_demo/demo_c16 \\
      --no-admm runs/cae_demo/demo_noadmm runs/cae_demo/demo_c16_noadmm

Every CAE number comes from real files, measured by the package's one RD driver (`jaxcomp.evaluation.rd_run`, what
`jaxcomp rd` runs, each point cached in its workdir): each workdir's codec compresses and decompresses every image,
so bpp is 8 x file bytes / pixels and the quality is that of the decoded image. The zero ratio is that of the
integer latent the file codes (cae_admm's `image_metrics`). Each run is one RD point (one latent width); runs with and without ADMM at the same
width form a Table 1 pair (`table1_c<C>.md`). The baseline curves are measured once (`--baselines-only`) and reused
from `OUT/baselines`. A bad folder, workdir or workdir list ends the script with one line (`report.py: error: ...`,
exit code 2).

Table 1 statistics (the paper gives 95% intervals over its 233 test crops): per model, the mean over images with a
Student-t interval; and, because both models code the same images, the paired interval of the per-image difference
(ADMM minus no ADMM), which removes the between-image spread that dominates the unpaired intervals. A
percentile bootstrap of the paired mean difference is given beside it as a check that does not assume normality.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

from jaxcomp import data, errors, evaluation, io_utils
from jaxcomp import train as harness

TABLE_KEYS = ("bpp", "zeros", "psnr-rgb", "ssim-rgb", "ms-ssim-rgb")
# The default sweeps without their top points (beyond 1.5 bpp, far above these CAE models' rates).
BASELINE_SWEEPS = {"jpeg420": (5, 10, 15, 20, 30, 40, 50, 60, 70, 80),
                   "jpeg2000": (0.06, 0.1, 0.15, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5)}


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
  """(mean, half-width) of the Student-t confidence interval of the mean of `values` (n >= 2)."""
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or len(x) < 2:
    raise errors.DataError(f"t_interval needs at least 2 values, got shape {x.shape}")
  half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
  return float(x.mean()), float(half)


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float]:
  """(mean, half-width) of the t interval of the per-item difference a - b (the same items measured twice)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise errors.DataError(f"paired_interval: {a.shape} and {b.shape} values are not pairs")
  return t_interval(a - b, level)


def bootstrap_interval(values: Sequence[float], level: float = 0.95, samples: int = 10000,
                       seed: int = 0) -> tuple[float, float]:
  """(low, high) percentile-bootstrap interval of the mean of `values`."""
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or len(x) < 2:
    raise errors.DataError(f"bootstrap_interval needs at least 2 values, got shape {x.shape}")
  rng = np.random.default_rng(seed)
  means = x[rng.integers(0, len(x), (samples, len(x)))].mean(1)
  lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
  return float(lo), float(hi)


def check_run(workdir: str | pathlib.Path):
  """The saved config of a trained cae_admm workdir."""
  config = harness.load_config(workdir)
  if config.get("method") != "cae_admm":
    raise errors.CheckpointError(f"{workdir}: a {config.get('method')!r} run, not cae_admm")
  return config


def table1(admm_rows: Sequence[Mapping[str, Any]], plain_rows: Sequence[Mapping[str, Any]],
           level: float = 0.95) -> list[dict[str, Any]]:
  """Table 1 rows: per key, both models' means with t intervals, and the paired difference (t and bootstrap)."""
  names = [r["image"] for r in admm_rows]
  if names != [r["image"] for r in plain_rows]:
    raise errors.DataError("table1: the two models were not measured on the same images in the same order")
  out = []
  for key in TABLE_KEYS:
    a = np.asarray([r[key] for r in admm_rows], np.float64)
    b = np.asarray([r[key] for r in plain_rows], np.float64)
    if np.isnan(a).any() or np.isnan(b).any():
      continue  # MS-SSIM on images below its minimum size
    ma, ha = t_interval(a, level)
    mb, hb = t_interval(b, level)
    md, hd = paired_interval(a, b, level)
    lo, hi = bootstrap_interval(a - b, level)
    out.append({"metric": key, "admm": ma, "admm_ci": ha, "no_admm": mb, "no_admm_ci": hb, "diff": md,
                "diff_ci": hd, "diff_boot_lo": lo, "diff_boot_hi": hi, "images": len(a),
                "admm_higher": int(np.sum(a > b))})
  return out


def table1_markdown(rows: Sequence[Mapping[str, Any]], level: float = 0.95) -> str:
  pct = {"zeros"}
  fmt = lambda k, v: f"{100 * v:.2f} %" if k in pct else (f"{v:.3f}" if k != "psnr-rgb" else f"{v:.2f}")  # noqa
  pm = lambda k, m, h: f"{fmt(k, m)} ± {fmt(k, h).rstrip(' %')}{' %' if k in pct else ''}"  # noqa: E731
  n = rows[0]["images"]
  lines = [f"| metric ({n} images) | ADMM | no ADMM | paired difference ADMM - no ADMM (t) | bootstrap "
           f"{int(100 * level)}% of the difference | images where ADMM is higher |",
           "| --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    k = r["metric"]
    lines.append(f"| {k} | {pm(k, r['admm'], r['admm_ci'])} | {pm(k, r['no_admm'], r['no_admm_ci'])} | "
                 f"{pm(k, r['diff'], r['diff_ci'])} | [{fmt(k, r['diff_boot_lo'])}, {fmt(k, r['diff_boot_hi'])}] | "
                 f"{r['admm_higher']} / {n} |")
  return "\n".join(lines)


def _csv(rows: Sequence[Mapping[str, Any]]) -> str:
  cols = list(rows[0].keys())
  body = [",".join(cols)] + [",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in cols)
                             for r in rows]
  return "\n".join(body) + "\n"


def baseline_curves(images, out: pathlib.Path, log) -> list[evaluation.RDCurve]:
  """JPEG 4:2:0 and JPEG 2000 on `images`, kept in `out/baselines` (per-image CSV there) and reused when present."""
  folder = out / "baselines"
  files = [folder / f"{evaluation.report.slug(c)}.json" for c in BASELINE_SWEEPS]
  if all(f.exists() for f in files):
    log(f"reusing the baseline curves in {folder}")
    return [evaluation.load_results(f) for f in files]
  curves = [evaluation.codec_rd_curve(images, c, params, progress=log) for c, params in BASELINE_SWEEPS.items()]
  evaluation.write_results(curves, folder, anchor=None, plots=False)
  return curves


def load_models(admm: Sequence[str], no_admm: Sequence[str], log) -> dict:
  """(ADMM?, latent channels) -> (label, workdir) of the runs, checked before any image is coded."""
  models = {}
  for enabled, dirs in ((True, admm), (False, no_admm)):
    for w in dirs:
      config = check_run(w)
      key = (enabled, config.model.latent_channels)
      if bool(config.admm.enabled) != enabled:
        raise errors.ConfigError(f"{w}: a run with admm.enabled={config.admm.enabled}, listed under "
                                 f"{'--admm' if enabled else '--no-admm'}")
      if key in models:
        raise errors.ConfigError(f"{w}: a second {'--admm' if enabled else '--no-admm'} run with latent_channels="
                                 f"{key[1]} (one run per latent width and list)")
      log(f"loaded {w} (admm={enabled}, latent_channels={key[1]})")
      models[key] = (f"C={key[1]} {pathlib.Path(w).name}", pathlib.Path(w))
  return models


def make_report(args: argparse.Namespace, log) -> None:
  """Everything `main` does once the arguments are checked; raises `JaxcompError` on bad input."""
  images = data.load_eval_images(args.data)
  # The runs are loaded before the (slow, on Kodak) baselines, so a wrong workdir fails before any image is coded.
  models = {} if args.baselines_only else load_models(args.admm, args.no_admm, log)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  baselines = baseline_curves(images, out, log)
  if args.baselines_only:
    return

  # The package's one RD driver (what `jaxcomp rd` runs): real files, per-image records with the zero ratio of the
  # coded latent (cae_admm's image_metrics), each point cached in its workdir.
  names = {True: "CAE-ADMM", False: "CAE no ADMM"}
  learned, _ = evaluation.rd_run({names[e]: [w for (e2, _), (_, w) in sorted(models.items()) if e2 == e]
                                  for e in (True, False)}, images, None, baselines=(), progress=log)
  curves = {e: next(c for c in learned if c.name == names[e]) for e in (True, False)}

  per_image = []
  for (enabled, c), (label, workdir) in sorted(models.items()):
    curve = curves[enabled]
    rows = curve.per_image[curve.params.index(workdir.name)]
    per_image += [{"model": label, "admm": int(enabled), "latent_channels": c,
                   **{k: r[k] for k in ("image", "num_bytes", *TABLE_KEYS)}} for r in rows]
  io_utils.write_text_atomic(out / "table1_per_image.csv", _csv(per_image))
  for (enabled, c) in sorted(models):
    if not enabled or (False, c) not in models:
      continue
    pick = lambda e: [r for r in per_image if r["admm"] == e and r["latent_channels"] == c]  # noqa: E731
    t1 = table1(pick(1), pick(0), args.level)
    io_utils.write_text_atomic(out / f"table1_c{c}.csv", _csv(t1))
    md = table1_markdown(t1, args.level)
    io_utils.write_text_atomic(out / f"table1_c{c}.md", md + "\n")
    log(f"latent channels {c}: {models[(True, c)][0]} against {models[(False, c)][0]}\n{md}")

  written = evaluation.write_results([*baselines, curves[True], curves[False]], out, anchor="jpeg420")
  log(f"wrote {', '.join(sorted(str(v) for v in written.values()))}")
  log(evaluation.format_table(evaluation.points_rows([curves[True], curves[False]]), digits=3))


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="report.py", description=__doc__.splitlines()[0])
  p.add_argument("--data", required=True, help="image folder (Kodak)")
  p.add_argument("--out", required=True, help="folder for the CSV / PNG / markdown outputs")
  p.add_argument("--admm", nargs="*", default=(), help="workdirs of runs with ADMM, one RD point each")
  p.add_argument("--no-admm", nargs="*", default=(), help="workdirs of the same runs without ADMM")
  p.add_argument("--level", type=float, default=0.95)
  p.add_argument("--baselines-only", action="store_true", help="measure JPEG / JPEG 2000 into OUT/baselines, stop")
  args = p.parse_args(argv)
  if not args.baselines_only and (not args.admm or not args.no_admm):
    p.error("--admm and --no-admm each need at least one workdir (unless --baselines-only)")
  if not 0.0 < args.level < 1.0:
    p.error(f"--level {args.level:g} must be in (0, 1)")
  return errors.run_script(p.prog, make_report, args, lambda s: print(s, flush=True))  # bad input: one line, exit 2


if __name__ == "__main__":
  sys.exit(main())

"""The one RD driver: RD curves of trained workdirs next to the Pillow baselines (`jaxcomp rd`).

    curves, written = evaluation.rd_run(["runs/mse_1", "runs/mse_2", "runs/ssim_2"], "/data/kodak", "results/rd",
                                        baselines=("jpeg420", "jpeg2000"), bd_methods=("pchip", "cubic"))

Workdirs whose saved configs share a method and variant form one curve (one point per workdir, labelled by its
lambda, else its folder name; `labels` renames curves). Each learned point is measured through real files
(`measure`: bytes, PSNR RGB / YUV, SSIM, MS-SSIM, VMAF when available, times, and the entropy model's estimate
where the codec has one) and cached in `WORKDIR/eval/rd_<data>.json`, keyed by the checkpoint step and the images:
a later call reuses it, so runs can be measured as they finish while others train, and a curve is assembled
without recoding. `out_dir` receives `write_results`' files (JSON per curve in CompressAI's layout, CSVs, BD-rate
tables against `anchor`, plots), `bd_rate_<method>.md/.csv` for every further BD method, and
`estimate_vs_file.md/.csv` (per learned point: the estimate against the bytes written, with and without the
container header).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Mapping, Sequence

from jaxcomp import data
from jaxcomp.errors import ConfigError
from jaxcomp.evaluation import codecs as baseline_codecs
from jaxcomp.evaluation import rd, report
from jaxcomp.io_utils import write_text_atomic

CACHE_VERSION = 1


def point_param(config, workdir: pathlib.Path) -> Any:
  """A learned point's label on its curve: the lambda of a rate-distortion method, else the folder name."""
  return float(config.lmbda) if "lmbda" in config else workdir.name


def curve_name(config) -> str:
  return f"{config.method} {config.get('variant', '')}".strip()


def _cache_path(workdir: pathlib.Path, label: str) -> pathlib.Path:
  from jaxcomp.evaluation.run import file_label
  return workdir / "eval" / f"rd_{file_label(label)}.json"


def learned_point(workdir: str | pathlib.Path, images: data.EvalImages, *, cache: bool = True,
                  extra_metrics: Mapping[str, rd.ExtraMetric] | None = None,
                  progress: Callable[[str], None] | None = None) -> tuple[Any, list[dict[str, Any]]]:
  """`(config, per-image records)` of a workdir's latest checkpoint on `images` (cached, see the module docstring)."""
  from jaxcomp.evaluation.codec_eval import has_estimate, warm_up
  from jaxcomp.evaluation.run import image_metrics, is_codec
  from jaxcomp.train import restore
  workdir = pathlib.Path(workdir)
  step = restore.latest_step(workdir)
  config = restore.load_config(workdir, step)  # the saved config decides a cache hit; parameters only on a miss
  if not is_codec(config):
    raise ConfigError(f"workdir {workdir}: method {config.method!r} writes no bitstream of its own; rd takes codecs")
  key = {"version": CACHE_VERSION, "method": config.method, "step": int(step), "data": images.label, "images": images.names,
         "extra": sorted(extra_metrics or {})}
  path = _cache_path(workdir, images.label)
  if cache and path.is_file():
    try:
      saved = json.loads(path.read_text())
    except ValueError:
      saved = {}
    if saved.get("key") == key:
      return config, saved["records"]
  from jaxcomp import methods
  method = methods.get_method(config.method)
  _, state = restore.load_for_eval(workdir, step)
  codec = method.build_codec(config, state)
  estimate = has_estimate(codec)
  own = image_metrics(method, config, codec)
  records, warmed = [], set()
  for name, image in images:
    warm_up(codec, image, warmed)
    rec = rd.measure(name, image, codec.compress, codec.decompress, extra_metrics)
    if estimate:
      rec["estimated_bits"] = float(sum(codec.estimated_bits(image).values()))
    rec.update({k: float(f(image)) for k, f in own.items()})  # e.g. CAE-ADMM's zero ratio
    records.append(rec)
  if progress:
    progress(f"{workdir}: {sum(r['bpp'] for r in records) / len(records):.4f} bpp")
  if cache:
    write_text_atomic(path, json.dumps({"key": key, "records": records}, default=float) + "\n")
  return config, records


def _estimate_rows(curves: Sequence[rd.RDCurve]) -> list[dict[str, Any]]:
  from jaxcomp.entropy import bitstream
  rows = []
  for c in curves:
    for param, recs in zip(c.params, c.per_image):
      if not recs or "estimated_bits" not in recs[0]:
        continue
      pixels = sum(r["num_bytes"] * 8 / r["bpp"] for r in recs)
      est = sum(r["estimated_bits"] for r in recs)
      file_bits = 8 * sum(r["num_bytes"] for r in recs)
      payload = file_bits - 8 * bitstream.overhead_bytes(1) * len(recs)
      rows.append({"name": c.name, "param": param, "images": len(recs), "estimate_bpp": est / pixels,
                   "file_bpp": file_bits / pixels, "payload_bpp": payload / pixels,
                   "payload_vs_estimate_%": 100.0 * (payload / est - 1.0),
                   "file_vs_estimate_%": 100.0 * (file_bits / est - 1.0)})
  return rows


def rd_run(workdirs: Sequence[str | pathlib.Path] | Mapping[str, Sequence[str | pathlib.Path]], images, out_dir: str | pathlib.Path | None, *,
           baselines: Sequence[str] = ("jpeg420", "jpeg2000", "webp"), anchor: str | None = None,
           labels: Mapping[str, str] | None = None, bd_methods: Sequence[str] = ("pchip",), max_images: int = 0,
           cache: bool = True, progress: Callable[[str], None] | None = None,
           extra_curves: Sequence[rd.RDCurve] = ()) -> tuple[list[rd.RDCurve], dict[str, pathlib.Path]]:
  """RD curves of `workdirs` and of `baselines` on `images`; see the module docstring.

  `workdirs`: a list (curves = groups of the same method and variant) or `{curve name: [workdirs]}` (curves given).

  `images`: a data spec (folder, `sample`, tfds name) or an `EvalImages`. `anchor`: the curve BD-rates are measured
  against (default: the first workdir's). `out_dir=None` measures (and caches) without writing results.
  `extra_curves`: curves measured elsewhere to put beside them (cached baselines, a published CompressAI JSON via
  `load_results`).
  """
  from jaxcomp.metrics import vmaf
  for b in baselines:
    baseline_codecs.get_baseline(b)  # unknown names fail before any work
  for m in bd_methods:
    if m not in ("pchip", "cubic"):
      raise ConfigError(f"BD method {m!r}: one of pchip, cubic")
  if not workdirs:
    raise ConfigError("rd needs at least one workdir")
  imgs = images if isinstance(images, data.EvalImages) else data.load_eval_images(images, max_images=max_images)
  extra = vmaf.extra_metrics()  # VMAF curves when an ffmpeg with libvmaf is found
  labels = dict(labels or {})
  if isinstance(workdirs, Mapping):
    given = {str(pathlib.Path(wd)): name for name, wds in workdirs.items() for wd in wds}
    workdirs = [wd for wds in workdirs.values() for wd in wds]
  else:
    given = {}
  unknown = sorted(set(labels) - {curve_name(_saved_config(wd)) for wd in workdirs}) if labels else []
  if unknown:  # before any image is coded
    raise ConfigError(f"label {unknown[0]!r} names no curve of these workdirs (curves are '<method> <variant>')")
  groups: dict[str, dict[Any, tuple[pathlib.Path, list]]] = {}
  descriptions: dict[str, str] = {}
  for wd in map(pathlib.Path, workdirs):
    config, records = learned_point(wd, imgs, cache=cache, extra_metrics=extra, progress=progress)
    curve = given.get(str(wd)) or labels.get(curve_name(config), curve_name(config))
    param = point_param(config, wd)
    if param in groups.setdefault(curve, {}):
      raise ConfigError(f"workdirs {groups[curve][param][0]} and {wd} are the same point ({param}) of curve "
                        f"{curve!r}; give one workdir per rate point")
    groups[curve][param] = (wd, records)
    descriptions[curve] = f"jaxcomp {curve_name(config)}, one point per workdir"
  curves = []
  for curve, points in groups.items():
    params = list(points)
    per_point = tuple(tuple({"param": p, **r} for r in points[p][1]) for p in params)
    curves.append(rd.RDCurve(curve, descriptions[curve], rd._mean_results(per_point), tuple(params), per_point))
  curves += [rd.codec_rd_curve(imgs, b, progress=progress, extra_metrics=extra) for b in baselines]
  curves += list(extra_curves)
  if out_dir is None:
    return curves, {}
  anchor = anchor if anchor is not None else curves[0].name
  written = report.write_results(curves, out_dir, anchor=anchor, method=bd_methods[0] if bd_methods else "pchip")
  out = pathlib.Path(out_dir)
  for m in bd_methods[1:]:
    rows = rd.rd_table(curves, anchor, method=m)
    write_text_atomic(out / f"bd_rate_{m}.csv", report._csv_text(rows, list(rows[0])))
    write_text_atomic(out / f"bd_rate_{m}.md", f"BD against `{anchor}` ({m}); BD-rate in %, BD-PSNR in dB.\n\n"
                      + report.format_table(rows) + "\n")
    written[f"bd_rate_{m}"] = out / f"bd_rate_{m}.csv"
  est = _estimate_rows(curves)
  if est:
    write_text_atomic(out / "estimate_vs_file.csv", report._csv_text(est, list(est[0])))
    write_text_atomic(out / "estimate_vs_file.md", report.format_table(est, digits=4) + "\n")
    written["estimate_vs_file"] = out / "estimate_vs_file.csv"
  return curves, written


def _saved_config(workdir):
  from jaxcomp.train import restore
  return restore.load_config(workdir)

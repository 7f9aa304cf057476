"""Writing RD results: CompressAI-layout JSON per curve, CSV tables, BD-rate table, and one RD plot per metric.

Every file goes through `jaxcomp.io_utils.atomic_write`, so an interrupted run leaves old results or none, never a
half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pathlib
import re
from typing import Any, Mapping, Sequence


from jaxcomp.errors import DataError
from jaxcomp.evaluation.rd import RDCurve, curve_from_results, present_distortion_keys, rd_table
from jaxcomp.io_utils import write_bytes_atomic, write_text_atomic

_LABELS = {"bpp": "bits per pixel", "psnr-rgb": "PSNR RGB [dB]", "psnr-yuv": "PSNR YUV (4Y+U+V)/6 [dB]",
           "ssim-rgb": "SSIM", "ms-ssim-rgb": "MS-SSIM", "ms-ssim-db": "MS-SSIM [dB]", "vmaf": "VMAF"}


def slug(name: str) -> str:
  """A file-name-safe form of a curve name."""
  s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
  return s or "curve"


def _finite(x: float) -> float | None:
  return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def curve_to_json(curve: RDCurve) -> dict[str, Any]:
  """CompressAI's results layout: {"name", "description", "results": {key: [per-point means]}} (+ "params").

  NaN (no value) is written as null, since JSON has no NaN.
  """
  return {"name": curve.name, "description": curve.description,
          "results": {k: [_finite(float(x)) for x in v] for k, v in curve.results.items()},
          "params": [p if isinstance(p, (int, float, str)) else str(p) for p in curve.params]}


def load_results(path: str | os.PathLike) -> RDCurve:
  """Reads a results JSON in CompressAI's layout (ours, or one of CompressAI's `results/image/kodak/*.json`).

  Older key names ("psnr", "ms-ssim") are mapped to "psnr-rgb" / "ms-ssim-rgb"; nulls become NaN.
  """
  path = pathlib.Path(path)
  try:
    d = json.loads(path.read_text())
    res = {k: [math.nan if x is None else x for x in v] for k, v in d["results"].items()}
    return curve_from_results(d.get("name", path.stem), res, d.get("description", ""), d.get("params", ()))
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise DataError(f"{path}: not a results JSON in CompressAI's layout ({e})") from e


def _csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
  w.writeheader()
  for r in rows:
    w.writerow({k: ("" if isinstance(r.get(k), float) and math.isnan(r[k]) else r.get(k, "")) for k in columns})
  return buf.getvalue()


def points_rows(curves: Sequence[RDCurve]) -> list[dict[str, Any]]:
  """One row per curve and point: name, param and every mean result."""
  rows = []
  for c in curves:
    for i in range(len(c)):
      rows.append({"name": c.name, "param": c.params[i] if c.params else "",
                   **{k: v[i] for k, v in c.results.items()}})
  return rows


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, digits: int = 2) -> str:
  """A markdown table of `rows` (e.g. from `rd_table`); NaN prints as "n/a"."""
  columns = list(columns or rows[0].keys())
  fmt = lambda v: ("n/a" if math.isnan(v) else f"{v:.{digits}f}") if isinstance(v, float) else str(v)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(fmt(r.get(k, math.nan)) for k in columns) + " |" for r in rows]
  return "\n".join(lines)


def plot_rd(curves: Sequence[RDCurve], key: str, title: str = "") -> bytes:
  """PNG bytes of `key` against bpp for every curve that has `key` (Agg backend: no display needed)."""
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib.figure import Figure  # a bare Figure: no pyplot global state shared across threads

  fig = Figure(figsize=(6.4, 4.8), dpi=100)
  ax = fig.add_subplot()
  for c in curves:
    if key not in c.results:
      continue
    s = c.sorted_by_rate()
    ax.plot(s.metric("bpp"), s.metric(key), marker="o", markersize=3, label=c.name)
  ax.set_xlabel(_LABELS["bpp"])
  ax.set_ylabel(_LABELS.get(key, key))
  ax.set_title(title or _LABELS.get(key, key))
  ax.grid(True, alpha=0.3)
  ax.legend(loc="lower right", fontsize="small")
  buf = io.BytesIO()
  fig.savefig(buf, format="png", bbox_inches="tight")
  return buf.getvalue()


def write_results(curves: Sequence[RDCurve], out_dir: str | os.PathLike, *, anchor: str | int | None = 0,
                  method: str = "pchip", plots: bool = True) -> dict[str, pathlib.Path]:
  """Writes everything about `curves` into `out_dir`; returns what was written, by kind.

  - `<slug(name)>.json`: each curve in CompressAI's results layout (overlay with CompressAI's own curves);
  - `rd_points.csv`: per-point means; `rd_per_image.csv`: per-image values where the curve has them;
  - `bd_rate.csv` and `bd_rate.md`: `rd_table(curves, anchor, method=method)` (skipped when `anchor` is None);
  - `rd_<metric>.png`: one RD plot per distortion metric present.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  names = [c.name for c in curves]
  if len(set(map(slug, names))) != len(names):
    raise DataError(f"curve names {names} are not distinct as file names; rename the curves")
  written: dict[str, pathlib.Path] = {}
  for c in curves:
    p = out / f"{slug(c.name)}.json"
    write_text_atomic(p, json.dumps(curve_to_json(c), indent=2) + "\n")
    written[f"json:{c.name}"] = p
  distortion_keys = present_distortion_keys(curves)
  keys = ["bpp", *distortion_keys, "encoding_time", "decoding_time"]
  present = [k for k in keys if any(k in c.results for c in curves)]
  write_text_atomic(out / "rd_points.csv", _csv_text(points_rows(curves), ["name", "param", *present]))
  written["rd_points"] = out / "rd_points.csv"
  per_image = [{"name": c.name, **r} for c in curves for recs in c.per_image for r in recs]
  if per_image:
    write_text_atomic(out / "rd_per_image.csv",
                      _csv_text(per_image, ["name", "param", "image", "num_bytes", *present]))
    written["rd_per_image"] = out / "rd_per_image.csv"
  if anchor is not None:
    rows = rd_table(curves, anchor, method=method)
    write_text_atomic(out / "bd_rate.csv", _csv_text(rows, list(rows[0].keys())))
    ref = curves[anchor] if isinstance(anchor, int) else next(c for c in curves if c.name == anchor)
    write_text_atomic(out / "bd_rate.md", f"BD against `{ref.name}` ({method}); BD-rate in %, BD-PSNR in dB.\n\n"
                      + format_table(rows) + "\n")
    written["bd_rate"] = out / "bd_rate.csv"
    written["bd_rate_md"] = out / "bd_rate.md"
  if plots:
    for key in distortion_keys:
      if any(key in c.results for c in curves):
        p = out / f"rd_{key}.png"
        write_bytes_atomic(p, plot_rd(curves, key))
        written[f"plot:{key}"] = p
  return written

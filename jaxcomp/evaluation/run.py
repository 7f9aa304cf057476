"""One evaluation for every method: what `jaxcomp eval` prints and what `jaxcomp train` runs at the end.

    report = evaluation.evaluate_run("runs/demo", "/data/kodak", step=600, max_images=0)

Codec methods (a method package with `build_codec`) are measured by `evaluate_codec`: real files, the entropy
model's estimate, PSNR / SSIM / MS-SSIM (+ VMAF when ffmpeg has libvmaf), timings, JPEG 4:2:0 at the same rate,
per-image records, plus the method's own per-image numbers (`image_metrics(config, codec)`, e.g. CAE-ADMM's zero
ratio of the latent). Other methods (the iterative decoder) provide `evaluate(config, state, images, progress=)`
returning the same layout (means at the top level, per-image records in `images`). Images come from the one loader,
`jaxcomp.data.load_eval_images` (a folder is read directly, never built into a dataset).
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
from typing import Any, Callable

from jaxcomp import data
from jaxcomp.evaluation.codec_eval import evaluate_codec
from jaxcomp.io_utils import write_text_atomic


def _method(config):
  from jaxcomp import methods  # methods import the harness, which imports evaluation: resolve at call time
  return methods.get_method(config.method)


def is_codec(config) -> bool:
  """Whether the workdir's method writes its own bitstreams (`build_codec`)."""
  return callable(getattr(_method(config), "build_codec", None))


def grayscale(config) -> bool:
  """Whether the method works on 1-channel images (its package's `GRAYSCALE`, or `config.grayscale`)."""
  return bool(getattr(_method(config), "GRAYSCALE", False) or config.get("grayscale", False))


def image_metrics(method, config, codec) -> dict[str, Callable]:
  """The method's own per-image numbers (`image_metrics(config, codec)` of its package), or none."""
  fn = getattr(method, "image_metrics", None)
  return fn(config, codec) if callable(fn) else {}


def file_label(label: str) -> str:
  """`label` (a folder name, a dataset name) made safe as a file name."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", label) or "data"


class _Progress:
  """A tqdm bar over the images on stderr (the callback `evaluate_codec` calls once per image)."""

  def __init__(self, total: int, label: str):
    from tqdm import tqdm
    self.bar = tqdm(total=total, desc=f"eval {label}", unit="image", file=sys.stderr, dynamic_ncols=True,
                    leave=False)

  def __call__(self, message: str) -> None:
    self.bar.update(1)
    self.bar.set_postfix_str(message, refresh=False)

  def close(self) -> None:
    self.bar.close()


def evaluate_state(config, state, images: data.EvalImages, *, jpeg: bool = True,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
  """The method's report on `images` for a restored `state` (see the module docstring)."""
  method = _method(config)
  if callable(getattr(method, "build_codec", None)):
    from jaxcomp.metrics import vmaf
    codec = method.build_codec(config, state)
    report = evaluate_codec(codec, list(images), jpeg=jpeg, extra_metrics=vmaf.extra_metrics(),
                            image_metrics=image_metrics(method, config, codec), progress=progress)
  else:
    report = method.evaluate(config, state, list(images), progress=progress)
  report.update(data=images.label, num_images=len(images), total_images=images.total)
  return report


def evaluate_run(workdir: str | pathlib.Path, data_spec: str, *, step: int | None = None, max_images: int = 0,
                 jpeg: bool = True, progress: bool = True) -> dict[str, Any]:
  """Scores step `step` (default: the latest) of `workdir` on `data_spec` (a folder, `sample` or a tfds name).

  Every image is scored unless `max_images` > 0; the report says how many of how many (`num_images`,
  `total_images`) and which step (`step`).
  """
  from jaxcomp.train import restore
  config, state = restore.load_for_eval(workdir, step)
  images = data.load_eval_images(data_spec, grayscale=grayscale(config), max_images=max_images)
  bar = _Progress(len(images), images.label) if progress else None
  try:
    report = evaluate_state(config, state, images, jpeg=jpeg, progress=bar)
  finally:
    if bar is not None:
      bar.close()
  report["step"] = int(step if step is not None else restore.latest_step(workdir))
  return report


def report_path(workdir: str | pathlib.Path, label: str) -> pathlib.Path:
  """`WORKDIR/eval/<label>.json`, the label made file-name safe."""
  return pathlib.Path(workdir) / "eval" / f"{file_label(label)}.json"


def write_report(workdir: str | pathlib.Path, label: str, report: dict[str, Any]) -> pathlib.Path:
  path = report_path(workdir, label)
  write_text_atomic(path, json.dumps(report, indent=2, sort_keys=True, default=float) + "\n")
  return path


def scored_line(report: dict[str, Any]) -> str | None:
  """"scored N of M images" when the report covers fewer images than its data holds, else None."""
  n, total = report.get("num_images"), report.get("total_images")
  if n is not None and total is not None and n < total:
    return f"scored {n} of {total} images (--max_images / config.eval_max_images)"
  return None


def end_of_training(config, workdir: str | pathlib.Path) -> Callable[[], None] | None:
  """The evaluation `jaxcomp train` runs once a run reaches its last step: `config.eval_data`, at most
  `config.eval_max_images` images, written to `WORKDIR/eval/<data>.json`; None when `eval_data` is empty."""
  if not config.get("eval_data"):
    return None

  def run() -> None:
    from jaxcomp import parallel
    if not parallel.is_main_process():
      return
    report = evaluate_run(workdir, config.eval_data, max_images=int(config.eval_max_images))
    label = pathlib.Path(str(config.eval_data)).name or str(config.eval_data)
    path = write_report(workdir, label, report)
    line = scored_line(report)
    print(f"jaxcomp: evaluated step {report['step']} on {config.eval_data}: {path}" + (f" ({line})" if line else ""),
          file=sys.stderr)

  return run

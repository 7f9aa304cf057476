"""One learned codec on a set of images: real files, the entropy model's estimate, quality, speed, and JPEG beside it.

    report = evaluation.evaluate_codec(codec, evaluation.load_images("/data/kodak"))
    print(evaluation.eval_table(report))

Per image (and averaged over images in the top level of the returned dict):
  bytes, bpp            the real file (`8 * bytes / pixels`)
  estimated_bpp         the entropy model's `-sum log2 p` of the coded latents (`Codec.estimated_bits`), per pixel
  rate_gap              `(file bits - estimate) / estimate`: the whole file, container header included
  payload_gap           the same without the fixed container header (`bitstream.overhead_bytes`): the coder's loss
  psnr, psnr_yuv, ssim, ms_ssim   data range 255; PSNR YUV = (4 Y + U + V) / 6 (ProxIQA eq. 12); MS-SSIM None
                        below 161 px a side (so is any extra metric that returns NaN, e.g. VMAF below 17 px)
  encode_s, decode_s    wall clock of `compress` / `decompress`, XLA compilation excluded (one untimed warm-up per
                        image size)
  jpeg                  Pillow JPEG 4:2:0 at the largest quality whose file is not larger than the learned one
                        (`jaxcomp.data.transforms.jpeg_quality_for_bpp`): quality, bytes, bpp and the same metrics
plus one entry per `extra_metrics` (e.g. "vmaf"), for the learned and the JPEG image, and one per `image_metrics`
(numbers of the codec on the original image alone, e.g. CAE-ADMM's zero ratio of its latent). The top-level `rate_gap` and
`payload_gap` are of the summed bits (not a mean of ratios).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxcomp.data import transforms
from jaxcomp.entropy import bitstream
from jaxcomp.errors import BitstreamError, DataError
from jaxcomp.evaluation.rd import ExtraMetric, image_quality

QUALITY_KEYS = ("psnr", "psnr_yuv", "ssim", "ms_ssim")
_FROM_RD = {"psnr": "psnr-rgb", "psnr_yuv": "psnr-yuv", "ssim": "ssim-rgb", "ms_ssim": "ms-ssim-rgb"}


def _quality(original: np.ndarray, decoded: np.ndarray, extra: Mapping[str, ExtraMetric]) -> dict[str, Any]:
  q = image_quality(original, decoded)
  out: dict[str, Any] = {k: q[_FROM_RD[k]] for k in QUALITY_KEYS}
  for name, fn in extra.items():
    out[name] = float(fn(original, decoded))
  # n/a (None in the JSON) where a metric is undefined: MS-SSIM below 161 px, VMAF below 17 px
  return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in out.items()}


def _jpeg(image: np.ndarray, bpp: float, extra: Mapping[str, ExtraMetric]) -> dict[str, Any]:
  quality = transforms.jpeg_quality_for_bpp(image, bpp, "4:2:0")
  decoded, num_bytes = transforms.jpeg(image, quality, "4:2:0")
  h, w = image.shape[:2]
  return {"quality": quality, "bytes": num_bytes, "bpp": 8.0 * num_bytes / (h * w),
          **_quality(image, decoded, extra)}


def _mean(records: Sequence[Mapping[str, Any]], key: str) -> float | None:
  vals = [r[key] for r in records if r.get(key) is not None]
  return float(np.mean(vals)) if vals else None


def has_estimate(codec) -> bool:
  """Whether `codec` has an entropy model's estimate to set against its files (`Codec.estimated_bits`)."""
  return callable(getattr(codec, "estimated_bits", None)) and getattr(codec, "has_estimate", True)


def warm_up(codec, image: np.ndarray, warmed: set) -> None:
  """One untimed round trip per image size, so the timed calls exclude XLA compilation."""
  if image.shape not in warmed:
    codec.decompress(codec.compress(image))
    warmed.add(image.shape)


def evaluate_codec(codec, images: Sequence[tuple[str, np.ndarray]], *, jpeg: bool = True,
                   extra_metrics: Mapping[str, ExtraMetric] | None = None,
                   image_metrics: Mapping[str, Callable[[np.ndarray], float]] | None = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Codes every `(name, uint8 [H, W, C])` image to a real file and back; see the module docstring for the keys.

  `codec` is a `jaxcomp.entropy.codec.Codec` (anything with `compress` / `decompress`; the estimate columns need
  its `estimated_bits`). `extra_metrics` maps a name to `f(original, decoded) -> float` on uint8 images,
  `image_metrics` a name to `f(original) -> float`.
  """
  extra = dict(extra_metrics or {})
  own = dict(image_metrics or {})
  estimate = has_estimate(codec)
  warmed: set = set()
  per_image = []
  for name, image in images:
    warm_up(codec, image, warmed)
    t0 = time.perf_counter()
    data = codec.compress(image)
    t1 = time.perf_counter()
    decoded = np.asarray(codec.decompress(data))
    t2 = time.perf_counter()
    h, w = image.shape[:2]
    rec: dict[str, Any] = {"name": name, "height": h, "width": w, "bytes": len(data), "bpp": 8.0 * len(data) / (h * w)}
    if estimate:
      est = float(sum(codec.estimated_bits(image).values()))
      try:
        header_bits = 8 * bitstream.overhead_bytes(len(bitstream.unpack(data)[1]))
      except BitstreamError:  # not a jaxcomp container: no fixed header to set apart
        header_bits = 0
      rec.update(estimated_bits=est, header_bits=header_bits, estimated_bpp=est / (h * w),
                 rate_gap=(8 * len(data) - est) / est, payload_gap=(8 * len(data) - header_bits - est) / est)
    rec.update(_quality(image, decoded, extra))
    rec.update({k: (None if math.isnan(v := float(f(image))) else v) for k, f in own.items()})  # n/a: None
    rec.update(encode_s=t1 - t0, decode_s=t2 - t1)
    if jpeg:
      rec["jpeg"] = _jpeg(image, rec["bpp"], extra)
    per_image.append(rec)
    if progress:
      progress(f"{name}: {rec['bpp']:.4f} bpp, {rec['psnr']:.2f} dB")
  if not per_image:
    raise DataError("no images to evaluate")
  keys = ["bpp", "estimated_bpp", *QUALITY_KEYS, *extra, *own, "encode_s", "decode_s"]
  out: dict[str, Any] = {k: _mean(per_image, k) for k in keys if any(k in r for r in per_image)}
  if estimate:
    bits = sum(8 * r["bytes"] for r in per_image)
    est = sum(r["estimated_bits"] for r in per_image)
    header = sum(r["header_bits"] for r in per_image)
    out.update(rate_gap=(bits - est) / est, payload_gap=(bits - header - est) / est)
  if jpeg:
    recs = [r["jpeg"] for r in per_image]
    out["jpeg"] = {k: _mean(recs, k) for k in ("bpp", *QUALITY_KEYS, *extra)}
  out.update(num_images=len(per_image), images=per_image)
  return out


def _fmt(v: Any, digits: int) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "n/a"
  return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def eval_table(report: Mapping[str, Any]) -> str:
  """A short human-readable table of `evaluate_codec`'s report: one row per image and the mean, JPEG beside."""
  extra = [k for k in report.get("images", [{}])[0] if k not in _KNOWN]
  cols = [("image", "name", 0), ("bpp", "bpp", 4), ("est bpp", "estimated_bpp", 4), ("gap %", "rate_gap", 2),
          ("PSNR", "psnr", 2), ("PSNR-YUV", "psnr_yuv", 2), ("SSIM", "ssim", 4), ("MS-SSIM", "ms_ssim", 4),
          *[(k.upper(), k, 2) for k in extra], ("enc ms", "encode_s", 1), ("dec ms", "decode_s", 1)]
  jpeg_keys = report.get("jpeg") or {}  # per-method image_metrics describe the learned codec only
  jcols = [("JPEG bpp", "bpp", 4), ("JPEG PSNR", "psnr", 2), ("JPEG SSIM", "ssim", 4),
           ("JPEG MS-SSIM", "ms_ssim", 4), *[(f"JPEG {k.upper()}", k, 2) for k in extra if k in jpeg_keys]]

  def cells(rec: Mapping[str, Any], name: str) -> list[str]:
    row = []
    for _, key, d in cols:
      v = name if key == "name" else rec.get(key)
      if key == "rate_gap" and v is not None:
        v = 100.0 * v
      if key in ("encode_s", "decode_s") and v is not None:
        v = 1000.0 * v
      row.append(_fmt(v, d))
    if "jpeg" in rec:
      row += [_fmt(rec["jpeg"].get(key), d) for _, key, d in jcols]
    return row

  header = [c[0] for c in cols] + ([c[0] for c in jcols] if "jpeg" in report else [])
  rows = [cells(r, r["name"]) for r in report.get("images", [])] + [cells(report, "mean")]
  widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
  line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
  text = [line(header)] + [line(r) for r in rows[:-1]] + ["-" * len(line(header)), line(rows[-1])]
  if "payload_gap" in report:
    text.append(f"file bits vs the entropy model's estimate: {100 * report['rate_gap']:+.3f} % "
                f"({100 * report['payload_gap']:+.3f} % without the {report['images'][0]['header_bits'] // 8}-byte "
                "container header)")
  return "\n".join(text)


_KNOWN = {"name", "height", "width", "bytes", "bpp", "estimated_bits", "header_bits", "estimated_bpp", "rate_gap",
          "payload_gap", *QUALITY_KEYS, "encode_s", "decode_s", "jpeg"}

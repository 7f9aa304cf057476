"""Rate-distortion curves: measuring a codec on a set of images, and comparing curves by Bjøntegaard deltas.

An `RDCurve` is one codec (or one learned method over several lambdas) at several operating points. Its `results`
follow CompressAI's results-JSON layout so curves overlay with CompressAI's published ones: per point, the mean
over images of
  "bpp" (real: 8 * bytes / pixels), "psnr-rgb", "psnr-yuv" ((4 Y + Cb + Cr) / 6, BT.601 full range),
  "ssim-rgb", "ms-ssim-rgb" (both channel-averaged, data range 255), "encoding_time", "decoding_time" (seconds).
With `extra_metrics`, also "vmaf" (0-100). Per-image values are kept in `per_image` for CSV output. MS-SSIM needs
>= 161 px per side, VMAF >= 17; for smaller images they are NaN and the mean omits them (a key is dropped if no
image qualifies).
For 1-channel images "psnr-yuv" is the PSNR of the single (luma) channel.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp import metrics
from jaxcomp.data import decode_image, load_eval_images
from jaxcomp.errors import ConfigError, DataError
from jaxcomp.evaluation import codecs

DISTORTION_KEYS = ("psnr-rgb", "psnr-yuv", "ssim-rgb", "ms-ssim-rgb")
# Host metrics a caller may add through `extra_metrics` (e.g. {"vmaf": jaxcomp.metrics.vmaf.vmaf_image}); they are
# averaged, BD-rated and plotted like the others when present.
EXTRA_DISTORTION_KEYS = ("vmaf",)
ExtraMetric = Callable[[np.ndarray, np.ndarray], float]  # f(original uint8, decoded uint8) -> score
TIME_KEYS = ("encoding_time", "decoding_time")
RESULT_KEYS = ("bpp",) + DISTORTION_KEYS + TIME_KEYS
# Older CompressAI files (and other tools) use these names.
KEY_ALIASES = {"psnr": "psnr-rgb", "ms-ssim": "ms-ssim-rgb", "ssim": "ssim-rgb"}

class Codec(Protocol):
  """What a method's `build_codec(config, params)` returns (see docs/architecture.md)."""

  def compress(self, image_HWC: np.ndarray) -> bytes: ...

  def decompress(self, data: bytes) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class RDCurve:
  """One RD curve: `results[key][i]` is the mean of `key` over images at operating point `params[i]`.

  Attributes:
    name: label in tables, plots and the JSON "name".
    description: free text (codec version and settings), the JSON "description".
    results: CompressAI-layout mapping from metric key to one float per point; always has "bpp".
    params: the operating point of each entry (quality, target bpp, lambda, workdir name...).
    per_image: per point, a tuple of per-image dicts ("image" name plus the result keys and "num_bytes").
  """
  name: str
  description: str
  results: Mapping[str, tuple[float, ...]]
  params: tuple[Any, ...] = ()
  per_image: tuple[tuple[Mapping[str, Any], ...], ...] = ()

  def __post_init__(self):
    if "bpp" not in self.results:
      raise ConfigError(f"RD curve {self.name!r}: results have no 'bpp' entry (keys: {sorted(self.results)})")
    n = len(self.results["bpp"])
    for k, v in self.results.items():
      if len(v) != n:
        raise ConfigError(f"RD curve {self.name!r}: results[{k!r}] has {len(v)} values but 'bpp' has {n}")
    if self.params and len(self.params) != n:
      raise ConfigError(f"RD curve {self.name!r}: {len(self.params)} params for {n} points")

  def __len__(self) -> int:
    return len(self.results["bpp"])

  def metric(self, key: str) -> np.ndarray:
    """Per-point means of `key` as float64, sorted by nothing (the points' own order)."""
    key = KEY_ALIASES.get(key, key)
    if key not in self.results:
      raise ConfigError(f"RD curve {self.name!r} has no {key!r} (has {sorted(self.results)})")
    return np.asarray(self.results[key], np.float64)

  def sorted_by_rate(self) -> "RDCurve":
    """The same curve with its points in increasing bpp."""
    order = np.argsort(self.metric("bpp"), kind="stable")
    return dataclasses.replace(
        self, results={k: tuple(v[i] for i in order) for k, v in self.results.items()},
        params=tuple(self.params[i] for i in order) if self.params else (),
        per_image=tuple(self.per_image[i] for i in order) if self.per_image else ())


def load_images(images: str | os.PathLike | Mapping[str, np.ndarray] | Sequence[np.ndarray]
                ) -> list[tuple[str, np.ndarray]]:
  """(name, uint8 [H, W, C]) pairs of a folder (sorted relative paths), `"sample"`, a tfds name, a name -> image
  mapping, or a list of images or of (name, image) pairs: `jaxcomp.data.load_eval_images(images).images`."""
  return load_eval_images(images).images


@jax.jit
def _quality_small(x_HWC: jnp.ndarray, y_HWC: jnp.ndarray) -> dict[str, jnp.ndarray]:
  yuv = metrics.psnr_yuv(x_HWC, y_HWC) if x_HWC.shape[-1] == 3 else metrics.psnr(x_HWC, y_HWC)
  return {"psnr-rgb": metrics.psnr(x_HWC, y_HWC), "psnr-yuv": yuv, "ssim-rgb": metrics.ssim(x_HWC, y_HWC),
          "ms-ssim-rgb": jnp.full((), jnp.nan, x_HWC.dtype)}


@jax.jit
def _quality_big(x_HWC: jnp.ndarray, y_HWC: jnp.ndarray) -> dict[str, jnp.ndarray]:
  yuv = metrics.psnr_yuv(x_HWC, y_HWC) if x_HWC.shape[-1] == 3 else metrics.psnr(x_HWC, y_HWC)
  s, ms = metrics.ssim_and_ms_ssim(x_HWC, y_HWC)  # SSIM comes free with MS-SSIM's first scale
  return {"psnr-rgb": metrics.psnr(x_HWC, y_HWC), "psnr-yuv": yuv, "ssim-rgb": s, "ms-ssim-rgb": ms}


def image_quality(original_HWC: np.ndarray, decoded_HWC: np.ndarray) -> dict[str, float]:
  """PSNR RGB / YUV, SSIM and MS-SSIM (NaN below 161 px a side) of a decoded uint8 image, data range 255."""
  if original_HWC.shape != decoded_HWC.shape:
    raise DataError(f"decoded image is {decoded_HWC.shape}, the original {original_HWC.shape}")
  big = min(original_HWC.shape[:2]) >= metrics.ms_ssim_min_side()
  fn = _quality_big if big else _quality_small
  q = fn(jnp.asarray(original_HWC, jnp.float32), jnp.asarray(decoded_HWC, jnp.float32))
  return {k: float(v) for k, v in q.items()}


def _check_extra_keys(extra_metrics: Mapping[str, ExtraMetric] | None) -> None:
  unknown = sorted(set(extra_metrics or {}) - set(EXTRA_DISTORTION_KEYS))
  if unknown:
    raise ConfigError(f"extra_metrics: unknown key {unknown[0]!r}; known: {', '.join(EXTRA_DISTORTION_KEYS)}")


def measure(name: str, image_HWC: np.ndarray, encode: Callable[[np.ndarray], bytes],
            decode: Callable[[bytes], np.ndarray],
            extra_metrics: Mapping[str, ExtraMetric] | None = None) -> dict[str, Any]:
  """Encodes, decodes and scores one image: one per-image record (times in seconds, wall clock).

  `extra_metrics`: key -> `f(original, decoded) -> float` on the uint8 images, added to the record (keys of
  `EXTRA_DISTORTION_KEYS`)."""
  _check_extra_keys(extra_metrics)
  t0 = time.perf_counter()
  data = encode(image_HWC)
  t1 = time.perf_counter()
  decoded = decode(data)
  t2 = time.perf_counter()
  h, w = image_HWC.shape[:2]
  rec = {"image": name, "num_bytes": len(data), "bpp": float(metrics.bpp(len(data), h, w))}
  rec.update(image_quality(image_HWC, np.asarray(decoded)))
  for key, fn in (extra_metrics or {}).items():
    rec[key] = float(fn(image_HWC, np.asarray(decoded)))
  rec.update(encoding_time=t1 - t0, decoding_time=t2 - t1)
  return rec


def _mean_results(per_point: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, tuple[float, ...]]:
  results = {}
  for key in RESULT_KEYS + tuple(k for k in EXTRA_DISTORTION_KEYS if k in per_point[0][0]):
    cols = [np.asarray([r[key] for r in recs], np.float64) for recs in per_point]
    if all(np.all(np.isnan(c)) for c in cols):
      continue  # e.g. MS-SSIM on images that are all too small
    results[key] = tuple(float(np.nanmean(c)) if not np.all(np.isnan(c)) else math.nan for c in cols)
  return results


def rd_curve_from_points(name: str, points: Iterable[tuple[Any, Callable[[np.ndarray], bytes],
                                                           Callable[[bytes], np.ndarray]]],
                         images, description: str = "", progress: Callable[[str], None] | None = None,
                         extra_metrics: Mapping[str, ExtraMetric] | None = None
                         ) -> RDCurve:
  """Measures every `(param, encode, decode)` operating point on every image (see `measure`); means per point."""
  imgs = load_images(images)
  params, per_point = [], []
  for param, encode, decode in points:
    recs = []
    for img_name, img in imgs:
      recs.append({"param": param, **measure(img_name, img, encode, decode, extra_metrics)})
    if progress:
      progress(f"{name} {param}: {np.mean([r['bpp'] for r in recs]):.3f} bpp, "
               f"{np.mean([r['psnr-rgb'] for r in recs]):.2f} dB")
    params.append(param)
    per_point.append(tuple(recs))
  if not params:
    raise ConfigError(f"RD curve {name!r}: no operating points")
  return RDCurve(name, description, _mean_results(per_point), tuple(params), tuple(per_point))


def codec_rd_curve(images, codec: str = "jpeg420", params: Sequence[float] | None = None, *,
                   name: str | None = None, progress: Callable[[str], None] | None = None,
                   extra_metrics: Mapping[str, ExtraMetric] | None = None) -> RDCurve:
  """RD curve of a Pillow baseline (`jpeg420`, `jpeg444`, `jpeg2000`, `webp`, `avif`) on `images`.

  Args:
    images: what `load_images` takes (a folder, `"sample"`, a name -> uint8 image mapping, a list of images...).
    codec: the baseline (see `jaxcomp.evaluation.codecs.BASELINES`).
    params: qualities (JPEG, WebP, AVIF) or target bpps (JPEG 2000); the codec's default sweep if None.
    name: label of the curve (the codec name by default).
  """
  b = codecs.get_baseline(codec)
  params = codecs.params_or_default(codec, params)
  imgs = load_images(images)
  channels = {img.shape[-1] for _, img in imgs}
  if len(channels) != 1:
    raise DataError(f"images mix {sorted(channels)} channels; give all RGB or all grayscale")
  gray = channels.pop() == 1
  decode = lambda data: decode_image(data, grayscale=gray, name=codec)
  points = [(p, lambda img, p=p: b.encode(img, p), decode) for p in params]
  return rd_curve_from_points(name or codec, points, imgs, b.description, progress, extra_metrics)


def learned_rd_curve(images, codecs_by_param: Mapping[Any, Codec], name: str, description: str = "", *,
                     progress: Callable[[str], None] | None = None,
                     extra_metrics: Mapping[str, ExtraMetric] | None = None) -> RDCurve:
  """RD curve of learned codecs, one per operating point (e.g. lambda -> `build_codec(config, params)`)."""
  points = [(p, c.compress, c.decompress) for p, c in codecs_by_param.items()]
  return rd_curve_from_points(name, points, images, description, progress, extra_metrics)


def curve_from_results(name: str, results: Mapping[str, Sequence[float]], description: str = "",
                       params: Sequence[Any] = ()) -> RDCurve:
  """An RD curve from already-averaged values (a method's eval summaries, a CompressAI JSON's "results")."""
  res = {}
  for k, v in results.items():
    try:
      a = np.asarray(v, np.float64)
    except (TypeError, ValueError) as e:
      raise ConfigError(f"RD curve {name!r}: results[{k!r}] is not a list of numbers") from e
    if a.ndim != 1:
      raise ConfigError(f"RD curve {name!r}: results[{k!r}] must be one number per point, got shape {a.shape}")
    res[KEY_ALIASES.get(k, k)] = tuple(float(x) for x in a)
  return RDCurve(name, description, res, tuple(params))


def interpolate_at(curve: RDCurve, key: str, bpps: Sequence[float]) -> np.ndarray:
  """`key` at the given rates, linearly interpolated in log(bpp) between measured points; NaN outside them."""
  c = curve.sorted_by_rate()
  r, v = np.log(c.metric("bpp")), c.metric(key)
  ok = ~np.isnan(v)
  return np.interp(np.log(np.asarray(bpps, np.float64)), r[ok], v[ok], left=math.nan, right=math.nan)


def present_distortion_keys(curves: Sequence[RDCurve]) -> tuple[str, ...]:
  """`DISTORTION_KEYS`, then the `EXTRA_DISTORTION_KEYS` that some curve has (e.g. "vmaf")."""
  return DISTORTION_KEYS + tuple(k for k in EXTRA_DISTORTION_KEYS if any(k in c.results for c in curves))


def rd_table(curves: Sequence[RDCurve], anchor: str | int = 0, *, method: str = "pchip",
             keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
  """Per curve: BD-rate (%) against the anchor curve in every distortion metric, and BD-PSNR (dB) for PSNR RGB.

  `anchor` is a curve name or index. `keys`: the metrics, by default `present_distortion_keys(curves)`. Entries are
  NaN where a curve lacks the metric, has too few points for `method`, or does not overlap the anchor's range (BD
  deltas are undefined there). The anchor's own row is 0.
  """
  if not curves:
    raise ConfigError("rd_table: no curves")
  keys = present_distortion_keys(curves) if keys is None else keys
  names = [c.name for c in curves]
  if isinstance(anchor, str):
    if anchor not in names:
      raise ConfigError(f"anchor={anchor!r}: no curve of that name (have {names})")
    anchor = names.index(anchor)
  if not -len(curves) <= anchor < len(curves):
    raise ConfigError(f"anchor={anchor}: only {len(curves)} curves")
  ref = curves[anchor]
  rows = []
  for c in curves:
    row: dict[str, Any] = {"name": c.name, "points": len(c), "bpp_min": float(np.min(c.metric("bpp"))),
                           "bpp_max": float(np.max(c.metric("bpp")))}
    for key in keys:
      row[f"bd-rate {key}"] = _bd(metrics.bd_rate, ref, c, key, method)
    row["bd-psnr psnr-rgb"] = _bd(metrics.bd_psnr, ref, c, "psnr-rgb", method)
    for key in TIME_KEYS:
      if key in c.results:
        row[f"{key} ms"] = 1000.0 * float(np.mean(c.metric(key)))
    rows.append(row)
  return rows


def _bd(fn, ref: RDCurve, test: RDCurve, key: str, method: str) -> float:
  if key not in ref.results or key not in test.results:
    return math.nan
  ra, da = ref.metric("bpp"), ref.metric(key)
  rt, dt = test.metric("bpp"), test.metric(key)
  ka, kt = ~np.isnan(da), ~np.isnan(dt)
  try:
    return float(fn(ra[ka], da[ka], rt[kt], dt[kt], method=method))
  except metrics.MetricInputError:
    return math.nan

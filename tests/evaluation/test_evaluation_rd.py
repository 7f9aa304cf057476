"""Codec baselines, RD curves, BD tables and result files, on tiny images."""

import io
import json
import math
import zlib

import numpy as np
import pytest
import skimage.data
import skimage.metrics
from PIL import Image

from jaxcomp import evaluation, metrics
from jaxcomp.errors import ConfigError, DataError, JaxcompError
from jaxcomp.evaluation import report


@pytest.fixture(scope="module")
def images():
  # Two real crops of one size (one compiled metric function), small enough to code in milliseconds.
  return {"astro": skimage.data.astronaut()[100:140, 200:248], "coffee": skimage.data.coffee()[150:190, 300:348]}


@pytest.fixture(scope="module")
def jpeg_curve(images):
  return evaluation.codec_rd_curve(images, "jpeg420", params=(10, 50, 90))


def test_jpeg_points_match_pillow_and_skimage(images, jpeg_curve):
  assert len(jpeg_curve) == 3 and jpeg_curve.params == (10, 50, 90)
  rec = jpeg_curve.per_image[1][0]
  assert rec["image"] == "astro" and rec["param"] == 50
  buf = io.BytesIO()
  Image.fromarray(images["astro"]).save(buf, format="JPEG", quality=50, subsampling="4:2:0")
  decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
  assert rec["num_bytes"] == len(buf.getvalue())
  assert rec["bpp"] == pytest.approx(8 * len(buf.getvalue()) / (40 * 48))
  assert rec["psnr-rgb"] == pytest.approx(skimage.metrics.peak_signal_noise_ratio(images["astro"], decoded), 1e-5)
  ref_ssim = skimage.metrics.structural_similarity(
      images["astro"].astype(float), decoded.astype(float), gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=255, channel_axis=-1)
  assert rec["ssim-rgb"] == pytest.approx(ref_ssim, abs=1e-4)
  assert math.isnan(rec["ms-ssim-rgb"])  # 40x48 is below MS-SSIM's 161 px
  assert "ms-ssim-rgb" not in jpeg_curve.results
  # Means over images; rate grows with quality.
  assert jpeg_curve.results["bpp"][1] == pytest.approx(np.mean([r["bpp"] for r in jpeg_curve.per_image[1]]))
  assert np.all(np.diff(jpeg_curve.metric("bpp")) > 0)
  assert np.all(np.diff(jpeg_curve.metric("psnr-rgb")) > 0)
  assert all(t >= 0 for t in jpeg_curve.results["encoding_time"] + jpeg_curve.results["decoding_time"])


def test_jpeg444_codes_more_chroma(images):
  c420 = evaluation.codec_rd_curve(images, "jpeg420", params=(75,))
  c444 = evaluation.codec_rd_curve(images, "jpeg444", params=(75,))
  assert c444.results["bpp"][0] > c420.results["bpp"][0]
  assert c444.results["psnr-yuv"][0] > c420.results["psnr-yuv"][0]


def _cod_marker(codestream: bytes) -> tuple[int, int]:
  """(MCT flag, wavelet: 0 = 9/7 irreversible, 1 = 5/3) from a JPEG 2000 codestream's COD segment (ITU-T T.800)."""
  i = codestream.index(b"\xff\x52")
  seg = codestream[i + 4:]  # after marker and Lcod: Scod, progression, layers(2), MCT, levels, cbw, cbh, style, wt
  return seg[4], seg[9]


def test_jpeg2000_is_97_with_colour_transform(images):
  data = evaluation.get_baseline("jpeg2000").encode(images["astro"], 1.0)
  assert _cod_marker(data) == (1, 0)
  # OpenJPEG's rate control, one try; on a 40x48 image the headers alone are ~0.5 bpp, so use 128x128.
  curve = evaluation.codec_rd_curve([skimage.data.astronaut()[:128, :128]], "jpeg2000", params=(0.5, 2.0))
  np.testing.assert_allclose(curve.metric("bpp"), [0.5, 2.0], rtol=0.15)


@pytest.mark.parametrize("codec", ["webp", "avif"])
def test_other_baselines_run(images, codec):
  curve = evaluation.codec_rd_curve(images, codec, params=(20, 80))
  assert curve.results["bpp"][0] < curve.results["bpp"][1]
  assert curve.results["psnr-rgb"][0] < curve.results["psnr-rgb"][1]


def test_ms_ssim_on_large_enough_images():
  x = skimage.data.astronaut()[:176, :176]
  curve = evaluation.codec_rd_curve([x], "jpeg420", params=(30,))
  buf = io.BytesIO()
  Image.fromarray(x).save(buf, format="JPEG", quality=30, subsampling="4:2:0")
  y = np.asarray(Image.open(buf).convert("RGB"))
  assert curve.results["ms-ssim-rgb"][0] == pytest.approx(float(metrics.ms_ssim(x, y)), abs=1e-6)


def test_grayscale_images(images):
  gray = {k: np.asarray(Image.fromarray(v).convert("L"))[..., None] for k, v in images.items()}
  curve = evaluation.codec_rd_curve(gray, "jpeg420", params=(50,))
  assert curve.results["psnr-yuv"] == curve.results["psnr-rgb"]


class _QuantizingCodec:
  """A toy learned-codec stand-in: uniform quantization + zlib, exact and lossy by a known step."""

  def __init__(self, step: int):
    self.step = step
    self.shape = None

  def compress(self, image_HWC):
    self.shape = image_HWC.shape
    return zlib.compress((image_HWC // self.step).astype(np.uint8).tobytes(), 9)

  def decompress(self, data):
    q = np.frombuffer(zlib.decompress(data), np.uint8).reshape(self.shape)
    return (q.astype(np.int32) * self.step + self.step // 2).clip(0, 255).astype(np.uint8)


def test_learned_rd_curve_uses_compress_decompress(images):
  curve = evaluation.learned_rd_curve(images, {s: _QuantizingCodec(s) for s in (64, 16, 4)}, "toy", "quantizer")
  assert curve.params == (64, 16, 4)
  assert np.all(np.diff(curve.metric("bpp")) > 0) and np.all(np.diff(curve.metric("psnr-rgb")) > 0)
  x = images["coffee"]
  c = _QuantizingCodec(16)
  y = c.decompress(c.compress(x))
  rec = curve.per_image[1][1]
  assert rec["image"] == "coffee"
  assert rec["psnr-rgb"] == pytest.approx(skimage.metrics.peak_signal_noise_ratio(x, y), 1e-5)


def test_rd_table_self_is_zero_and_known_shift():
  bpp = [0.1, 0.25, 0.5, 1.0, 2.0]
  psnr = [26.0, 28.8, 31.5, 34.6, 38.0]
  ms = [0.85, 0.91, 0.95, 0.975, 0.99]
  a = evaluation.curve_from_results("anchor", {"bpp": bpp, "psnr-rgb": psnr, "ms-ssim": ms})
  b = evaluation.curve_from_results("costly", {"bpp": [r * 1.25 for r in bpp], "psnr-rgb": psnr, "ms-ssim": ms})
  far = evaluation.curve_from_results("far", {"bpp": bpp, "psnr-rgb": [p + 40 for p in psnr]})
  for method in ("cubic", "pchip"):
    rows = evaluation.rd_table([a, b, far], anchor="anchor", method=method)
    assert rows[0]["bd-rate psnr-rgb"] == pytest.approx(0.0, abs=1e-9)
    assert rows[0]["bd-rate ms-ssim-rgb"] == pytest.approx(0.0, abs=1e-9)
    assert rows[0]["bd-psnr psnr-rgb"] == pytest.approx(0.0, abs=1e-9)
    assert rows[1]["bd-rate psnr-rgb"] == pytest.approx(25.0, abs=1e-9)
    assert rows[1]["bd-rate ms-ssim-rgb"] == pytest.approx(25.0, abs=1e-9)
    assert math.isnan(rows[2]["bd-rate psnr-rgb"])  # no overlap in PSNR
    assert math.isnan(rows[0]["bd-rate psnr-yuv"])  # metric absent
  assert evaluation.rd_table([a, b], anchor=1)[1]["bd-rate psnr-rgb"] == pytest.approx(0.0, abs=1e-9)
  with pytest.raises(ConfigError, match="anchor='nope'"):
    evaluation.rd_table([a, b], anchor="nope")


def test_rd_table_of_measured_curve_against_itself(jpeg_curve):
  rows = evaluation.rd_table([jpeg_curve, jpeg_curve.sorted_by_rate()], anchor=0, method="pchip")
  for key in ("bd-rate psnr-rgb", "bd-rate psnr-yuv", "bd-rate ssim-rgb"):
    assert rows[1][key] == pytest.approx(0.0, abs=1e-9)


def test_interpolate_at_log_linear():
  bpp = np.array([0.1, 0.3, 1.0, 3.0])
  c = evaluation.curve_from_results("c", {"bpp": bpp, "psnr-rgb": 30 + 5 * np.log(bpp)})
  np.testing.assert_allclose(evaluation.interpolate_at(c, "psnr-rgb", [0.2, 0.5]), 30 + 5 * np.log([0.2, 0.5]))
  assert np.isnan(evaluation.interpolate_at(c, "psnr-rgb", [5.0])[0])


def test_write_results_and_round_trip(tmp_path, jpeg_curve, images):
  webp = evaluation.codec_rd_curve(images, "webp", params=(10, 50, 90))
  written = evaluation.write_results([jpeg_curve, webp], tmp_path, anchor="jpeg420", method="pchip")
  d = json.loads((tmp_path / "jpeg420.json").read_text())
  assert set(d) >= {"name", "description", "results"} and d["name"] == "jpeg420"
  assert set(d["results"]) == {"bpp", "psnr-rgb", "psnr-yuv", "ssim-rgb", "encoding_time", "decoding_time"}
  back = evaluation.load_results(tmp_path / "webp.json")
  np.testing.assert_allclose(back.metric("psnr-rgb"), webp.metric("psnr-rgb"))
  assert back.params == (10, 50, 90)
  lines = (tmp_path / "rd_points.csv").read_text().splitlines()
  assert lines[0].startswith("name,param,bpp,psnr-rgb") and len(lines) == 1 + 6
  assert len((tmp_path / "rd_per_image.csv").read_text().splitlines()) == 1 + 2 * 3 * 2
  bd = (tmp_path / "bd_rate.csv").read_text().splitlines()
  assert bd[1].startswith("jpeg420,3,") and "bd-rate psnr-rgb" in bd[0]
  for key in ("psnr-rgb", "psnr-yuv", "ssim-rgb"):
    png = (tmp_path / f"rd_{key}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(png)).size[0] > 100
  assert not (tmp_path / "rd_ms-ssim-rgb.png").exists()
  assert set(written) >= {"rd_points", "bd_rate", "plot:psnr-rgb", "json:webp"}


def _affine_psnr(original, decoded):
  # a stand-in host metric (the real one, VMAF, is tested in tests/metrics): an affine map of PSNR
  mse = np.mean((original.astype(np.float64) - decoded) ** 2)
  return 3.0 + 2.0 * 10 * np.log10(255.0 ** 2 / mse)


def test_extra_metrics_are_averaged_bd_rated_and_plotted(tmp_path, images):
  extra = {"vmaf": _affine_psnr}
  jpeg = evaluation.codec_rd_curve(images, "jpeg420", params=(20, 50, 80), extra_metrics=extra)
  webp = evaluation.codec_rd_curve(images, "webp", params=(10, 50, 90), extra_metrics=extra)
  np.testing.assert_allclose(jpeg.metric("vmaf"), 3.0 + 2.0 * jpeg.metric("psnr-rgb"), rtol=1e-4)
  rows = evaluation.rd_table([jpeg, webp], "jpeg420")
  # BD-rate is invariant to an increasing affine map of the distortion axis
  assert rows[1]["bd-rate vmaf"] == pytest.approx(rows[1]["bd-rate psnr-rgb"], rel=1e-3, abs=1e-3)
  written = evaluation.write_results([jpeg, webp], tmp_path, anchor="jpeg420")
  assert "plot:vmaf" in written and json.loads((tmp_path / "webp.json").read_text())["results"]["vmaf"]
  assert "vmaf" in (tmp_path / "rd_points.csv").read_text().splitlines()[0].split(",")
  assert "bd-rate vmaf" not in evaluation.rd_table([evaluation.codec_rd_curve(images, "jpeg420", params=(50,))])[0]
  coded = []
  with pytest.raises(ConfigError, match="unknown key 'lpips'"):  # refused before any image is coded
    evaluation.rd_curve_from_points("x", [(1, lambda img: coded.append(img) or b"", None)], images,
                                    extra_metrics={"lpips": _affine_psnr})
  assert not coded


def test_failed_write_leaves_old_files_and_no_temporaries(tmp_path, jpeg_curve, monkeypatch):
  evaluation.write_results([jpeg_curve], tmp_path, anchor=None)
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

  def broken_plot(*args, **kwargs):
    raise RuntimeError("disk full while plotting")

  changed = evaluation.curve_from_results("jpeg420", {"bpp": [0.1, 0.2], "psnr-rgb": [25.0, 27.0]})
  monkeypatch.setattr(report, "plot_rd", broken_plot)
  with pytest.raises(RuntimeError):
    evaluation.write_results([changed], tmp_path, anchor=None)
  after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  assert set(after) == set(before)  # no temporary file left behind
  assert after["rd_psnr-rgb.png"] == before["rd_psnr-rgb.png"]


def test_load_compressai_layout_with_old_keys(tmp_path):
  p = tmp_path / "bmshj.json"
  p.write_text(json.dumps({"name": "bmshj2018-factorized", "description": "CompressAI",
                           "results": {"bpp": [0.12, 0.19], "psnr": [26.9, 28.2], "ms-ssim": [0.91, 0.936]}}))
  c = evaluation.load_results(p)
  assert c.name == "bmshj2018-factorized"
  np.testing.assert_allclose(c.metric("psnr-rgb"), [26.9, 28.2])
  np.testing.assert_allclose(c.metric("ms-ssim-rgb"), [0.91, 0.936])
  (tmp_path / "bad.json").write_text("{not json")
  with pytest.raises(DataError, match="bad.json"):
    evaluation.load_results(tmp_path / "bad.json")


def test_user_errors(tmp_path, images):
  with pytest.raises(ConfigError, match="codec='h264'"):
    evaluation.codec_rd_curve(images, "h264")
  with pytest.raises(ConfigError, match="quality=101"):
    evaluation.codec_rd_curve(images, "jpeg420", params=(101,))
  with pytest.raises(DataError, match="missing: image folder not found"):
    evaluation.codec_rd_curve(tmp_path / "missing", "jpeg420")
  with pytest.raises(DataError, match="mix"):
    evaluation.codec_rd_curve([images["astro"], images["astro"][..., :1]], "jpeg420", params=(50,))
  with pytest.raises(JaxcompError, match="has 2 values but 'bpp' has 1"):
    evaluation.curve_from_results("x", {"bpp": [1.0], "psnr-rgb": [1.0, 2.0]})


def test_folder_input(tmp_path, images):
  for k, v in images.items():
    Image.fromarray(v).save(tmp_path / f"{k}.png")
  (tmp_path / "notes.txt").write_text("skipped")
  # Folders go through jaxcomp.data.load_eval_images: names are relative paths, non-images skipped with a warning.
  with pytest.warns(UserWarning, match="notes.txt"):
    curve = evaluation.codec_rd_curve(tmp_path, "jpeg420", params=(50,))
  assert [r["image"] for r in curve.per_image[0]] == ["astro.png", "coffee.png"]

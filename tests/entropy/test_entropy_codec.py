"""The generic codec on tiny factorized / hyperprior models: exact round trips, bit counts, errors, portability."""

import os
import pathlib
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from jaxcomp import errors
from jaxcomp.entropy import bitstream, rate_bits
from jaxcomp.entropy import tables as tables_lib
from jaxcomp.entropy.codec import Codec, finalize
from jaxcomp.entropy.models import SCALE_TABLE, GaussianConditional, build_indexes
from entropy_tiny_models import TinyFactorized, TinyHyperprior, fit_entropy_models, make_image

pytestmark = pytest.mark.usefixtures("fast_compile")  # tiny programs: compile without XLA optimisations

HERE = pathlib.Path(__file__).parent


@pytest.fixture(scope="module")
def factorized():
  model = TinyFactorized()
  variables = fit_entropy_models(model, steps=120)
  return model, variables, Codec(model, variables, finalize(model, variables))


@pytest.fixture(scope="module")
def hyperprior():
  model = TinyHyperprior()
  variables = fit_entropy_models(model, steps=60)
  return model, variables, Codec(model, variables, finalize(model, variables))


def _forward(model, variables, codec, image):
  """The model's own test-time forward on the padded image: uint8 reconstruction and estimated bits."""
  h, w = image.shape[:2]
  m = codec.pad_multiple
  x = np.pad(image, ((0, -h % m), (0, -w % m), (0, 0)), mode="edge")[None].astype(np.float32) / 255
  out = model.apply(variables, x, training=False)
  x_hat = np.clip(np.rint(np.clip(np.asarray(out["x_hat"])[0, :h, :w], 0, 1) * 255), 0, 255).astype(np.uint8)
  return x_hat, {k: float(rate_bits(v)) for k, v in out["likelihoods"].items()}


@pytest.mark.parametrize("kind", ["factorized", "hyperprior"])
@pytest.mark.parametrize("hw", [(37, 45), (5, 70)])
def test_decompress_equals_quantized_forward(kind, hw, request):
  model, variables, codec = request.getfixturevalue(kind)
  image = make_image(hw[0] + hw[1], *hw)
  data = codec.compress(image)
  out = codec.decompress(data)
  chex.assert_shape(out, image.shape)
  assert out.dtype == np.uint8
  x_hat, _ = _forward(model, variables, codec, image)
  # Same latents, same synthesis: identical up to XLA fusing the full forward differently (never seen here).
  assert np.abs(out.astype(int) - x_hat).max() <= 1 and (out == x_hat).mean() > 0.999
  # The latents the decoder reconstructs are exactly the encoder's quantized latents.
  y_hat = codec.quantized_latents(image)["y_hat"]
  m = codec.pad_multiple
  x = np.pad(image, ((0, -hw[0] % m), (0, -hw[1] % m), (0, 0)), mode="edge")[None].astype(np.float32) / 255
  y_fwd = model.apply(variables, x, method=lambda mdl, x: mdl.entropy_bottleneck(
      mdl.analysis(x), training=False)[0]) if kind == "factorized" else None
  if y_fwd is not None:
    np.testing.assert_array_equal(y_hat, y_fwd)


def test_gray_image_through_rgb_model(factorized):
  """A gray image is coded as gray RGB and decoded to the channel mean of the RGB reconstruction."""
  model, variables, codec = factorized
  gray = make_image(3, 21, 30, channels=1)
  out = codec.decompress(codec.compress(gray))
  chex.assert_shape(out, (21, 30, 1))
  rgb_hat, _ = _forward(model, variables, codec, np.repeat(gray, 3, axis=-1))
  ref = np.rint(rgb_hat.astype(np.float64).mean(-1, keepdims=True))
  assert np.abs(out.astype(int) - ref).max() <= 1
  out2 = codec.decompress(codec.compress(gray[..., 0]))  # [H, W] accepted too
  np.testing.assert_array_equal(out, out2)


def test_factorized_bits_match_estimate(factorized):
  model, variables, codec = factorized
  image = make_image(11, 64, 96)
  data = codec.compress(image)
  _, est = _forward(model, variables, codec, image)
  payload_bits = 8 * (len(data) - bitstream.overhead_bytes(1))
  # Range coder termination: at most two 32-bit words per stream.
  assert est["y"] * 0.99 - 64 <= payload_bits <= est["y"] * 1.01 + 64, (payload_bits, est)
  # The codec's own estimate is the model's test-time rate term.
  np.testing.assert_allclose(codec.estimated_bits(image)["y"], est["y"], rtol=1e-4)


def test_hyperprior_bits_match_estimate(hyperprior):
  model, variables, codec = hyperprior
  image = make_image(12, 64, 96)
  data = codec.compress(image)
  _, est = _forward(model, variables, codec, image)
  lat = codec.quantized_latents(image)
  # The coder uses each element's table scale (the next table entry up): the estimate under those scales.
  scales = np.asarray(model.apply(variables, lat["z_hat"], method="hyper_synthesis"))
  table_scales = np.asarray(SCALE_TABLE, np.float32)[build_indexes(scales, SCALE_TABLE)]
  est_y = float(rate_bits(GaussianConditional().apply({}, lat["y_hat"], table_scales, method="likelihood")))
  own = codec.estimated_bits(image)
  np.testing.assert_allclose([own["y"], own["z"]], [est["y"], est["z"]], rtol=1e-4)
  assert est["y"] <= est_y <= est["y"] * 1.05  # table quantization of the scales costs a little
  payload_bits = 8 * (len(data) - bitstream.overhead_bytes(3) - 4)  # minus the 4-byte index checksum
  total = est_y + est["z"]
  assert total * 0.99 - 128 <= payload_bits <= total * 1.01 + 128, (payload_bits, est_y, est)


def test_bad_images(factorized):
  _, _, codec = factorized
  with pytest.raises(errors.DataError, match="uint8"):
    codec.compress(np.zeros((8, 8, 3), np.float32))
  with pytest.raises(errors.DataError, match="uint8"):
    codec.compress(np.zeros((8, 8, 4), np.uint8))
  with pytest.raises(errors.DataError, match="uint8"):
    codec.compress(np.zeros((0, 8, 3), np.uint8))


def test_error_paths(factorized, hyperprior):
  model, variables, codec = factorized
  data = codec.compress(make_image(1, 20, 20))
  with pytest.raises(errors.BitstreamError, match="truncated"):
    codec.decompress(data[: len(data) // 2])
  bad = bytearray(data)
  bad[len(data) // 2] ^= 0x04
  with pytest.raises(errors.BitstreamError, match="CRC32"):
    codec.decompress(bytes(bad))
  with pytest.raises(errors.BitstreamError, match="not a jaxcomp bitstream"):
    codec.decompress(b"GIF89a" + data[6:])
  newer = bytearray(data)
  newer[4] += 1
  with pytest.raises(errors.BitstreamError, match="newer"):
    codec.decompress(bytes(newer))
  # Same architecture, other parameters: a different model id.
  params = jax.tree.map(lambda a: a, variables["params"])
  params["entropy_bottleneck"] = dict(params["entropy_bottleneck"])
  params["entropy_bottleneck"]["bias0"] = params["entropy_bottleneck"]["bias0"] + 0.1
  other = Codec(model, {"params": params}, finalize(model, {"params": params}))
  assert other.model_id != codec.model_id
  with pytest.raises(errors.BitstreamError, match="different model"):
    other.decompress(data)
  with pytest.raises(errors.BitstreamError, match="different model"):
    hyperprior[2].decompress(data)


def test_hyperprior_index_mismatch_is_detected(hyperprior, monkeypatch):
  """A decoder whose h_s floats put some scales in other tables fails loudly instead of decoding garbage."""
  _, _, codec = hyperprior
  data = codec.compress(make_image(2, 32, 32))
  original = codec._hyper_synthesis
  monkeypatch.setattr(codec, "_hyper_synthesis", lambda v, z: original(v, z) * 1.2)
  with pytest.raises(errors.BitstreamError, match="indexes computed here differ"):
    codec.decompress(data)


def test_tables_are_deterministic(factorized):
  model, variables, codec = factorized
  again = finalize(model, variables)
  chex.assert_trees_all_equal(again, codec.tables)


def test_padded_and_bounded_tables(factorized):
  """Padding (a fixed-shape checkpoint item) changes neither the coding nor the model id; `max_symbols` bounds
  the tables and values beyond them still round-trip through the escape path."""
  model, variables, codec = factorized
  tables = finalize(model, variables)
  width = tables["entropy_bottleneck"]["cdf"].shape[1]
  padded = {"entropy_bottleneck": tables_lib.pad_tables(tables["entropy_bottleneck"], width + 7)}
  assert padded["entropy_bottleneck"]["cdf"].shape[1] == width + 7
  chex.assert_trees_all_equal(tables_lib.trim_tables(padded["entropy_bottleneck"]), tables["entropy_bottleneck"])
  image = make_image(13, 40, 40)
  other = Codec(model, variables, padded)
  assert other.model_id == codec.model_id and other.compress(image) == codec.compress(image)
  with pytest.raises(errors.CheckpointError, match="more than"):
    tables_lib.pad_tables(tables["entropy_bottleneck"], width - 1)
  small = finalize(model, variables, max_symbols=3)["entropy_bottleneck"]
  assert small["cdf"].shape[1] <= 5 and np.all(small["cdf_length"] <= 5)
  narrow = Codec(model, variables, {"entropy_bottleneck": small})
  assert narrow.model_id != codec.model_id
  np.testing.assert_array_equal(narrow.decompress(narrow.compress(image)), codec.decompress(codec.compress(image)))
  with pytest.raises(errors.ConfigError, match="max_symbols"):
    finalize(model, variables, max_symbols=0)


@pytest.mark.slow
def test_decodes_identically_under_another_xla_configuration(tmp_path):
  """Encode with 8 fake devices and default threading; decode with 1 device and single-threaded Eigen."""
  script = HERE / "entropy_xla_roundtrip.py"
  root = str(HERE.parent.parent)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  enc_env = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  dec_env = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false "
                                "intra_op_parallelism_threads=1")
  for mode, e in (("encode", enc_env), ("decode", dec_env)):
    r = subprocess.run([sys.executable, str(script), mode, str(tmp_path)], env=e, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"{mode} failed:\n{r.stdout}\n{r.stderr[-3000:]}"
  assert "devices 1" in r.stdout and r.stdout.count("identical") == 2


def test_index_margin_makes_a_perturbed_decoder_exact(hyperprior, monkeypatch):
  """With index_margin, scales near table boundaries travel in the file: a decoder whose h_s is off by less
  than the margin (log-scale) reproduces the encoder's indexes and image; without it, the checksum trips."""
  model, variables, _ = hyperprior
  tables = finalize(model, variables)
  enc = Codec(model, variables, tables, index_margin=2e-2)
  plain = Codec(model, variables, tables)
  image = make_image(5, 64, 96)
  data, data_plain = enc.compress(image), plain.compress(image)
  ref = enc.decompress(data)
  assert len(data) > len(data_plain)  # the fixes cost a few bytes
  dec = Codec(model, variables, tables)
  original = dec._hyper_synthesis
  monkeypatch.setattr(dec, "_hyper_synthesis", lambda v, z: original(v, z) * np.float32(1.01))
  # The perturbation really moves some elements to another table...
  scales = np.asarray(original(variables, enc.quantized_latents(image)["z_hat"]))
  assert np.any(build_indexes(scales, SCALE_TABLE) != build_indexes(scales * np.float32(1.01), SCALE_TABLE))
  # ...yet the file written with a margin decodes identically, and the plain one fails loudly.
  np.testing.assert_array_equal(dec.decompress(data), ref)
  with pytest.raises(errors.BitstreamError, match="indexes computed here differ"):
    dec.decompress(data_plain)


def test_finalize_and_codec_config_errors(factorized):
  import flax.linen as nn

  class NoBottleneck(nn.Module):
    def setup(self):
      self.g_a = nn.Dense(2)

    def __call__(self, x):
      return self.g_a(x)

  m = NoBottleneck()
  v = m.init(jax.random.PRNGKey(0), np.zeros((1, 3), np.float32))
  with pytest.raises(errors.ConfigError, match="entropy_bottleneck"):
    finalize(m, v)
  model, variables, codec = factorized
  with pytest.raises(errors.CheckpointError, match="entropy_bottleneck"):
    Codec(model, variables, {})
  with pytest.raises(errors.ConfigError, match="channels"):
    Codec(model, variables, codec.tables, channels=2)
  with pytest.raises(errors.ConfigError, match="index_margin"):
    Codec(model, variables, codec.tables, index_margin=-1.0)

"""VGG19 feature map of the VGG loss (Savioli eq. 3) and its weights: features equal an independent lax reference on
synthetic weights, the loader rejects missing / mis-shaped keys in one line (never random weights), and the
torchvision converter transposes OIHW to HWIO and fails with exit 2 and one line."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import errors
from jaxcomp.methods.rl_srgan import convert_vgg19, vgg

pytestmark = pytest.mark.usefixtures("fast_compile")

WIDTHS = [(1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512)]
TORCH_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


def _layers():
  """[(name, c_in, c_out)] of VGG19, written out here independently of `vgg.LAYER_SHAPES`."""
  out, c_in = [], 3
  for b, n, w in WIDTHS:
    for i in range(1, n + 1):
      out.append((f"conv{b}_{i}", c_in, w))
      c_in = w
  return out


@pytest.fixture(scope="module")
def weights():
  """Synthetic VGG19 weights {"conv1_1/kernel": HWIO, "conv1_1/bias": ...}, He-scaled so activations stay O(1)."""
  rng = np.random.default_rng(0)
  w = {}
  for name, c_in, c_out in _layers():
    k = rng.standard_normal((3, 3, c_in, c_out), dtype=np.float32) * np.sqrt(2.0 / (9 * c_in))
    w[f"{name}/kernel"] = k.astype(np.float32)
    w[f"{name}/bias"] = (rng.standard_normal((c_out,), dtype=np.float32) * 0.05).astype(np.float32)
  return w


@pytest.fixture(scope="module")
def weights_file(weights, tmp_path_factory):
  path = tmp_path_factory.mktemp("vgg") / "vgg19.npz"
  np.savez(path, **weights)
  return path


def _reference_features(weights, x_BHWC, layer):
  """Layer by layer with lax primitives: ImageNet normalisation, 3x3 SAME convs + ReLU, 2x2 max-pool between blocks."""
  mean = np.array([0.485, 0.456, 0.406], np.float32)
  std = np.array([0.229, 0.224, 0.225], np.float32)
  h = (jnp.asarray(x_BHWC) - mean) / std
  for name, _, _ in _layers():
    if name.endswith("_1") and name != "conv1_1":
      h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = jax.lax.conv_general_dilated(h, weights[f"{name}/kernel"], (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    h = jnp.maximum(h + weights[f"{name}/bias"], 0.0)
    if name == layer:
      return h
  raise AssertionError(layer)


@pytest.mark.parametrize("layer,size,expect", [("conv5_4", (35, 18), (2, 2, 1, 512)),
                                               ("conv2_2", (9, 12), (2, 4, 6, 128))])
def test_features_match_lax_reference(weights, weights_file, layer, size, expect):
  x = jax.random.uniform(jax.random.key(0), (2, *size, 3))
  features = vgg.vgg_feature_fn(weights_file, layer)
  got = features(x)
  assert got.shape == expect
  ref = _reference_features(weights, x, layer)
  assert float(jnp.std(ref)) > 1e-3  # the features are not all zero after the ReLUs
  np.testing.assert_allclose(got, ref, rtol=2e-3, atol=2e-3 * float(jnp.max(jnp.abs(ref))))
  # The module with the full parameter set gives the same features (later layers are ignored).
  params = vgg.load_vgg19_params(weights_file)
  assert set(params) == {name for name, _, _ in _layers()}
  assert params["conv3_2"]["kernel"].shape == (3, 3, 256, 256) and params["conv3_2"]["kernel"].dtype == jnp.float32
  np.testing.assert_array_equal(params["conv1_1"]["bias"], weights["conv1_1/bias"])
  np.testing.assert_allclose(jax.jit(vgg.VGG19(layer).apply)({"params": params}, x), got, rtol=1e-5, atol=1e-5)


def _assert_one_line(e, *parts):
  msg = str(e.value)
  assert "\n" not in msg
  for p in parts:
    assert p in msg, msg


def test_missing_key_is_one_line_data_error(weights, tmp_path):
  path = tmp_path / "missing.npz"
  np.savez(path, **{k: v for k, v in weights.items() if k != "conv3_2/bias"})
  with pytest.raises(errors.DataError) as e:
    vgg.load_vgg19_params(path)
  _assert_one_line(e, str(path), "'conv3_2/bias'")


def test_wrong_shape_is_one_line_data_error(weights, tmp_path):
  path = tmp_path / "shape.npz"
  np.savez(path, **{**weights, "conv4_1/kernel": np.zeros((3, 3, 256, 256), np.float32)})
  with pytest.raises(errors.DataError) as e:
    vgg.load_vgg19_params(path)
  _assert_one_line(e, str(path), "'conv4_1/kernel'", "(3, 3, 256, 256)", "(3, 3, 256, 512)")


def test_missing_or_unreadable_file_is_data_error(tmp_path):
  with pytest.raises(errors.DataError, match="not found") as e:
    vgg.vgg_feature_fn(tmp_path / "absent.npz")
  _assert_one_line(e, "absent.npz")
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"not a zip file")
  with pytest.raises(errors.DataError) as e:
    vgg.load_vgg19_params(bad)
  _assert_one_line(e, str(bad), "not a readable .npz")


def test_unknown_layer_and_bad_input():
  with pytest.raises(errors.ConfigError, match="'conv6_1'"):
    vgg.VGG19("conv6_1")
  with pytest.raises(errors.DataError, match="RGB"):
    jax.eval_shape(lambda: vgg.VGG19("conv1_1").init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))))


def _torchvision_state_dict(weights):
  """The synthetic weights in torchvision's layout: features.{idx}.weight OIHW, plus unrelated classifier keys."""
  sd = {}
  for idx, (name, _, _) in zip(TORCH_CONV_INDICES, _layers()):
    k = weights[f"{name}/kernel"]
    sd[f"features.{idx}.weight"] = np.ascontiguousarray(np.einsum("hwio->oihw", k))
    sd[f"features.{idx}.bias"] = weights[f"{name}/bias"]
  sd["classifier.6.weight"] = np.zeros((10, 4), np.float32)
  sd["classifier.6.bias"] = np.zeros((10,), np.float32)
  return sd


def _check_converted(dst, sd):
  out = np.load(dst)
  assert sorted(out.files) == sorted(f"{n}/{leaf}" for n, _, _ in _layers() for leaf in ("kernel", "bias"))
  for idx, (name, c_in, c_out) in zip(TORCH_CONV_INDICES, _layers()):
    w = sd[f"features.{idx}.weight"]
    k = out[f"{name}/kernel"]
    assert k.shape == (3, 3, c_in, c_out) and k.dtype == np.float32
    np.testing.assert_array_equal(k, np.einsum("oihw->hwio", w))
    assert k[2, 0, c_in - 1, 1] == w[1, c_in - 1, 2, 0]  # spot check of the axis order
    np.testing.assert_array_equal(out[f"{name}/bias"], sd[f"features.{idx}.bias"])
  params = vgg.load_vgg19_params(dst)
  assert params["conv5_4"]["kernel"].shape == (3, 3, 512, 512)


def test_convert_torchvision_state_dict_npz(weights, tmp_path, capsys):
  sd = _torchvision_state_dict(weights)
  src, dst = tmp_path / "vgg19_sd.npz", tmp_path / "out" / "vgg19.npz"
  np.savez(src, **sd)
  assert convert_vgg19.main([str(src), str(dst)]) == 0
  _check_converted(dst, sd)
  assert [p.name for p in dst.parent.iterdir()] == ["vgg19.npz"]  # no temporary file left beside it
  for name in ("conv1_1", "conv4_3"):  # the round trip gives back the synthetic HWIO weights
    np.testing.assert_array_equal(np.load(dst)[f"{name}/kernel"], weights[f"{name}/kernel"])


def test_convert_torchvision_pth(weights, tmp_path):
  torch = pytest.importorskip("torch")
  sd = _torchvision_state_dict(weights)
  src, dst = tmp_path / "vgg19-dcbb9e9d.pth", tmp_path / "vgg19.npz"
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, src)
  assert convert_vgg19.main([str(src), str(dst)]) == 0
  _check_converted(dst, sd)


def _run_failing(argv, capsys):
  assert convert_vgg19.main([str(a) for a in argv]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("convert_vgg19: error: "), err
  return err


def test_converter_errors_exit_2_with_one_line(weights, tmp_path, capsys):
  dst = tmp_path / "out.npz"
  assert "expected 2 arguments" in _run_failing([tmp_path / "a.pth"], capsys)
  assert "not found" in _run_failing([tmp_path / "absent.pth", dst], capsys)
  h5 = tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
  h5.write_bytes(b"\x89HDF\r\n")
  assert "Keras" in _run_failing([h5, dst], capsys)
  sd = _torchvision_state_dict(weights)
  bad = tmp_path / "bn.npz"  # e.g. vgg19_bn: features.2 is a BatchNorm, not a conv
  np.savez(bad, **{**sd, "features.2.weight": np.ones((64,), np.float32)})
  err = _run_failing([bad, dst], capsys)
  assert "'features.2.weight'" in err and "(64, 64, 3, 3)" in err
  missing = tmp_path / "missing.npz"
  np.savez(missing, **{k: v for k, v in sd.items() if k != "features.34.bias"})
  assert "'features.34.bias'" in _run_failing([missing, dst], capsys)
  assert not dst.exists()
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_converter_runs_as_module(tmp_path):
  cmd = [sys.executable, "-m", "jaxcomp.methods.rl_srgan.convert_vgg19"]
  r = subprocess.run(cmd + [str(tmp_path / "absent.pth"), str(tmp_path / "x.npz")], capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not found" in r.stderr, r.stderr
  r = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
  assert r.returncode == 0 and "vgg19-dcbb9e9d.pth" in r.stdout

"""ProxIQA loop: one data-parallel step against the equations on one device, a non-differentiable host metric the
proxy learns to track, exact resume, and evaluation through real bitstreams."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import chex
from PIL import Image
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import proxiqa_test_metrics
from jaxcomp import cli, evaluation, metrics, parallel, train
from jaxcomp.entropy import codec as codec_lib
from jaxcomp.entropy import rate_bits
from jaxcomp.entropy import tables as tables_lib
from jaxcomp import errors as train_errors
from jaxcomp.errors import ConfigError
from jaxcomp.methods.proxiqa import models
from tests.evaluation import eval_contract
from jaxcomp.methods.proxiqa import codec as pq_codec
from jaxcomp.methods.proxiqa import train as pq

pytestmark = pytest.mark.usefixtures("fast_compile")  # tiny programs: compile without XLA optimisations

CONFIG_PATH = pathlib.Path(__file__).resolve().parents[3] / "configs" / "proxiqa.py"
_spec = importlib.util.spec_from_file_location("proxiqa_config", CONFIG_PATH)
cfg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cfg)


def _images(seed, n=8, side=32):
  # smooth random images (a coarse grid upsampled), so a tiny codec has something learnable
  grid = np.random.default_rng(seed).integers(0, 256, size=(n, side // 8, side // 8, 3))
  return np.kron(grid, np.ones((1, 8, 8, 1))).astype(np.uint8)


def _sgd_states(host):
  # SGD(1) makes "old params - new params" the gradient the step applied, for a direct comparison
  return {k: train.TrainState.create(params=s.params, tx=optax.sgd(1.0), rng=s.rng) for k, s in host.items()}


def test_ms_ssim_window():
  assert pq.ms_ssim_window(256) == 11 and pq.ms_ssim_window(128) == 7
  with pytest.raises(ConfigError):
    pq.ms_ssim_window(32)


@pytest.mark.parametrize("backend", ["pmap", "shard_map"])
def test_one_step_equals_the_paper_equations_on_one_device(backend):
  c = cfg.get_config("tiny")
  c.parallel = backend
  c.quantizer = "ste"  # deterministic rounding: the reference needs no per-device noise
  c.alpha = 0.3        # larger than the paper's so the proxy term visibly matters in the gradient
  host = pq.init_state(c)
  states = _sgd_states(host)
  images = _images(0)
  trainer = pq.Trainer(c)
  new, terms = trainer.step(parallel.replicate(states, c.parallel),
                            parallel.shard(images.reshape(8, 1, 32, 32, 3), c.parallel))
  new = jax.device_get(parallel.unreplicate(new))

  model, proxy = pq.build_model(c), models.ProxIQANet()
  x = jnp.asarray(images, jnp.float32) / 255.0
  p_proxy = host["proxy"].params

  def codec_loss(params):
    out = model.apply({"params": params}, x, training=True, quantizer="ste", rngs={"noise": jax.random.key(0)})
    x_hat = jnp.clip(out["x_hat"], 0, 1)
    bpp = rate_bits(out["likelihoods"]["y"]) / (8 * 32 * 32)                  # eq. 6 per pixel
    l_d = jnp.mean((x - x_hat) ** 2)                                          # eq. 7
    l_p = c.m_max - jnp.mean(proxy.apply({"params": p_proxy}, x, x_hat))     # eq. 9
    aux = model.apply({"params": params}, method=models.BLS.aux_loss)
    return c.lmbda * 255.0 ** 2 * (c.alpha * l_p + (1 - c.alpha) * l_d) + bpp + aux, x_hat  # eq. 10

  (loss, x_hat), g_codec = jax.value_and_grad(codec_loss, has_aux=True)(host["codec"].params)
  m = metrics.ssim(x, x_hat, data_range=1.0)
  g_proxy = jax.grad(lambda p: jnp.mean((proxy.apply({"params": p}, x, x_hat) - m) ** 2))(p_proxy)  # eq. 11

  applied_codec = jax.tree.map(lambda a, b: a - b, host["codec"].params, new["codec"].params)
  applied_proxy = jax.tree.map(lambda a, b: a - b, host["proxy"].params, new["proxy"].params)
  chex.assert_trees_all_close(applied_codec, g_codec, rtol=2e-3, atol=2e-6)
  chex.assert_trees_all_close(applied_proxy, g_proxy, rtol=2e-3, atol=2e-6)
  scalars = train.to_host_scalars(terms)
  np.testing.assert_allclose(scalars["metric"], float(jnp.mean(m)), rtol=1e-5)
  aux = float(model.apply({"params": host["codec"].params}, method=models.BLS.aux_loss))
  np.testing.assert_allclose(scalars["loss"] + scalars["aux_loss"], float(loss), rtol=1e-5)
  np.testing.assert_allclose(scalars["aux_loss"], aux, rtol=1e-5)
  # the proxy's parameters received no gradient from the codec's loss: both steps used the old proxy
  assert int(new["codec"].step) == 1 and int(new["proxy"].step) == 1


def test_pristine_pairs_reach_the_proxy_with_their_true_score():
  # config.pristine_fraction (the authors' script): some (x, x_hat) pairs of the proxy's batch become (x, x), scored
  # by M like the rest (SSIM(x, x) = 1); the codec's own step is unchanged.
  c = cfg.get_config("tiny")
  c.pristine_fraction = 0.5
  codec_step, _ = pq.make_steps(c)
  host = pq.init_state(c)
  images = parallel.shard(_images(0).reshape(8, 1, 32, 32, 3), c.parallel)
  _, x_hat, m, _ = parallel.data_parallel(codec_step, c.parallel)(parallel.replicate(host, c.parallel), images)
  x = np.asarray(_images(0), np.float32).reshape(8, 32, 32, 3) / 255.0
  x_hat, m = np.asarray(x_hat).reshape(8, 32, 32, 3), np.asarray(m).reshape(8)
  pristine = np.all(np.abs(x_hat - x) < 1e-6, axis=(1, 2, 3))  # XLA may divide by 255 as a product
  assert 0 < pristine.sum() < 8, pristine  # fixed seed: some of each
  np.testing.assert_allclose(m[pristine], 1.0, atol=1e-5)
  assert np.all(m[~pristine] < 0.99)
  np.testing.assert_allclose(m, np.asarray(metrics.ssim(x, x_hat, data_range=1.0)), rtol=1e-5, atol=1e-6)
  c.pristine_fraction = 0.0
  codec_step, _ = pq.make_steps(c)
  _, x_hat0, _, _ = parallel.data_parallel(codec_step, c.parallel)(parallel.replicate(host, c.parallel), images)
  assert not np.any(np.all(np.abs(np.asarray(x_hat0).reshape(8, 32, 32, 3) - x) < 1e-6, axis=(1, 2, 3)))


def test_eq13_ablation_optimises_the_metric_itself_without_a_proxy():
  # Sec. IV-E, eq. 13-14: L = lambda [alpha (1 - M) + (1 - alpha) L_d] + L_r with M the true metric (here MS-SSIM)
  c = cfg.get_config("tiny")
  c.metric, c.use_proxy, c.patch_size = "ms_ssim", False, 48  # 48 px: 3x3 windows over five scales
  c.quantizer, c.alpha = "ste", 0.3
  host = pq.init_state(c)
  assert set(host) == {"codec"}  # no ProxIQA network to train or checkpoint
  states = _sgd_states(host)
  images = _images(0, side=48)
  new, terms = pq.Trainer(c).step(parallel.replicate(states, c.parallel),
                                  parallel.shard(images.reshape(8, 1, 48, 48, 3), c.parallel))
  new = jax.device_get(parallel.unreplicate(new))

  model = pq.build_model(c)
  x = jnp.asarray(images, jnp.float32) / 255.0

  def codec_loss(params):
    out = model.apply({"params": params}, x, training=True, quantizer="ste", rngs={"noise": jax.random.key(0)})
    x_hat = jnp.clip(out["x_hat"], 0, 1)
    bpp = rate_bits(out["likelihoods"]["y"]) / (8 * 48 * 48)
    l_ms = 1.0 - jnp.mean(metrics.ms_ssim(x, x_hat, data_range=1.0, win_size=3))  # eq. 14 with MS-SSIM
    return c.lmbda * 255.0 ** 2 * (c.alpha * l_ms + (1 - c.alpha) * jnp.mean((x - x_hat) ** 2)) + bpp, l_ms

  (loss, l_ms), g_codec = jax.value_and_grad(codec_loss, has_aux=True)(host["codec"].params)
  applied = jax.tree.map(lambda a, b: a - b, host["codec"].params, new["codec"].params)
  # the quantiles also get the aux loss's gradient; compare the transforms, which only eq. 13 drives
  chex.assert_trees_all_close(applied["g_a"], g_codec["g_a"], rtol=2e-3, atol=2e-6)
  chex.assert_trees_all_close(applied["g_s"], g_codec["g_s"], rtol=2e-3, atol=2e-6)
  scalars = train.to_host_scalars(terms)
  np.testing.assert_allclose(scalars["loss"], float(loss), rtol=1e-5)
  np.testing.assert_allclose(scalars["metric_loss"], float(l_ms), rtol=1e-5)
  assert "proxy_error" not in scalars


def test_eq13_needs_a_differentiable_device_metric():
  c = cfg.get_config("tiny")
  c.metric, c.use_proxy = "proxiqa_test_metrics:quantized_error", False
  with pytest.raises(ConfigError, match="use_proxy=False"):
    pq.train_and_evaluate(c, "/nonexistent/never-created")


def test_vmaf_needs_patches_libvmaf_can_score():
  c = cfg.get_config("tiny")
  c.metric, c.patch_size = "vmaf", 16  # libvmaf crashes below 17 px; refused before any ffmpeg runs
  with pytest.raises(ConfigError, match="patch_size=16 is too small for VMAF"):
    pq.train_and_evaluate(c, "/nonexistent/never-created")


def test_non_differentiable_host_metric_is_tracked_by_the_proxy():
  c = cfg.get_config("tiny")
  c.metric = "proxiqa_test_metrics:quantized_error"
  c.proxy_learning_rate = 1e-3
  c.learning_rate = 1e-3
  proxiqa_test_metrics.CALLS.clear()
  trainer = pq.Trainer(c)
  states = parallel.replicate(pq.init_state(c), c.parallel)
  errors, truth = [], []
  for i in range(40):
    batch = parallel.shard(_images(i % 4).reshape(8, 1, 32, 32, 3), c.parallel)
    states, terms = trainer.step(states, batch)
    s = train.to_host_scalars(terms)
    errors.append(s["proxy_error"])
    truth.append(s["metric"])
  assert proxiqa_test_metrics.CALLS and proxiqa_test_metrics.CALLS[0] == (8, 32, 32, 3)
  assert min(truth) > 0  # the metric really ran on reconstructions
  # the proxy starts near 0 and must learn the metric's level and spread from host-computed targets only
  assert np.mean(errors[-5:]) < 0.25 * errors[0], (errors[0], errors[-5:])


def test_host_metric_errors_are_config_errors():
  with pytest.raises(ConfigError, match="module:function"):
    pq.host_metric("lpips")
  with pytest.raises(ConfigError, match="cannot be imported"):
    pq.host_metric("no_such_module_xyz:f")


def _trimmed(tables):
  return {k: tables_lib.trim_tables(t) for k, t in tables.items()}


def test_resume_is_exact_and_eval_writes_real_files(tmp_path, monkeypatch, capsys):
  c = cfg.get_config("tiny")
  c.eval_data = ""
  pq.train_and_evaluate(c, str(tmp_path / "straight"))
  c1 = cfg.get_config("tiny")
  c1.eval_data, c1.steps = "", 1
  pq.train_and_evaluate(c1, str(tmp_path / "resumed"))
  _, mid = train.load_for_eval(tmp_path / "resumed")
  pq.train_and_evaluate(c, str(tmp_path / "resumed"))
  _, a = train.load_for_eval(tmp_path / "straight")
  _, b = train.load_for_eval(tmp_path / "resumed")
  chex.assert_trees_all_equal(a["codec"]["params"], b["codec"]["params"])
  chex.assert_trees_all_equal(a["proxy"]["params"], b["proxy"]["params"])
  assert int(a["codec"]["step"]) == 2

  # Every checkpoint stores finalize() of its own parameters (fixed width), and the tables survive a resume.
  model = pq.build_model(c)
  for state in (mid, a, b):
    assert state["tables"]["entropy_bottleneck"]["cdf"].shape == (c.M, pq_codec.TABLE_SYMBOLS + 2)
    ref = codec_lib.finalize(model, {"params": jax.tree.map(jnp.asarray, state["codec"]["params"])})
    chex.assert_trees_all_equal(_trimmed(state["tables"]), ref)
  chex.assert_trees_all_equal(a["tables"], b["tables"])
  medians = lambda state: state["tables"]["entropy_bottleneck"]["medians"]
  assert not np.array_equal(medians(mid), medians(b))  # each checkpoint's own tables, not the first ones

  eval_contract.check_eval_contract(capsys, tmp_path / "straight", (1, 2), eval_contract.image_folder(tmp_path / "six"))
  res = evaluation.evaluate_run(tmp_path / "straight", "sample", max_images=1, progress=False)
  assert res["num_images"] == 1 and res["total_images"] > 1 and res["step"] == 2 and res["bpp"] > 0 and np.isfinite(res["psnr"])
  # The codec is built from the stored tables alone: finalize is never called.
  with monkeypatch.context() as mp:
    mp.setattr(codec_lib, "finalize", lambda *a, **k: pytest.fail("build_codec recomputed the tables"))
    codec = pq_codec.build_codec(c, a)
  from jaxcomp.data import load_eval_images
  (name, image), = load_eval_images("sample", max_images=1)
  assert res["images"][0]["name"] == name
  blob = codec.compress(image)
  rec = res["images"][0]
  assert rec["bpp"] == pytest.approx(8 * len(blob) / (image.shape[0] * image.shape[1]))
  decoded = codec.decompress(blob)
  chex.assert_shape(decoded, image.shape)
  x, y = jnp.asarray(image, jnp.float32), jnp.asarray(decoded, jnp.float32)
  np.testing.assert_allclose(rec["psnr"], float(metrics.psnr(x, y, data_range=255.0)), rtol=1e-5)
  np.testing.assert_allclose(rec["psnr_yuv"], float(metrics.psnr_yuv(x, y)), rtol=1e-5)
  np.testing.assert_allclose(rec["ssim"], float(metrics.ssim(x, y, data_range=255.0)), rtol=1e-5)
  # The estimate is the model's own test-time rate term; file = estimate + header within 1 % (+ coder flush).
  h, w = image.shape[:2]
  m = codec.pad_multiple
  xp = np.pad(image, ((0, -h % m), (0, -w % m), (0, 0)), mode="edge")[None].astype(np.float32) / 255
  est = float(rate_bits(model.apply({"params": a["codec"]["params"]}, xp, training=False)["likelihoods"]["y"]))
  np.testing.assert_allclose(rec["estimated_bpp"], est / (h * w), rtol=1e-4)
  payload = 8 * len(blob) - rec["header_bits"]
  assert abs(payload - est) <= 0.01 * est + 64, (payload, est)
  assert rec["payload_gap"] == pytest.approx((payload - est) / est, abs=1e-6)
  # JPEG 4:2:0 at the learned file's rate, scored like the learned image.
  from jaxcomp.data import transforms
  jpeg_img, jpeg_bytes = transforms.jpeg(image, rec["jpeg"]["quality"], "4:2:0")
  assert rec["jpeg"]["bytes"] == jpeg_bytes
  assert rec["jpeg"]["quality"] == 1 or jpeg_bytes <= len(blob)
  np.testing.assert_allclose(rec["jpeg"]["psnr"], float(metrics.psnr(x, jnp.asarray(jpeg_img, jnp.float32))),
                             rtol=1e-5)

  # RD curves with a baseline, on one small crop, through the one RD tool (`jaxcomp rd`)
  crop = np.ascontiguousarray(image[:64, :64])
  (tmp_path / "crops").mkdir()
  Image.fromarray(crop).save(tmp_path / "crops" / "crop.png")
  assert cli.main(["rd", "--workdir", str(tmp_path / "straight"), "--data", str(tmp_path / "crops"),
                   "--out", str(tmp_path / "rd"), "--baselines", "jpeg420"]) == 0
  learned = [p for p in (tmp_path / "rd").glob("*.json") if "proxiqa" in p.name]
  assert len(learned) == 1
  curve = json.loads(learned[0].read_text())
  # the learned point's bpp is the real file size
  assert curve["results"]["bpp"][0] == pytest.approx(8 * len(codec.compress(crop)) / 64 ** 2)
  assert (tmp_path / "rd" / "bd_rate.md").exists()

  # A file written here decodes identically in a fresh process under another XLA configuration (1 device,
  # single-threaded Eigen) that reads the same checkpoint through the CLI.
  (tmp_path / "in.jxc").write_bytes(blob)
  root = str(pathlib.Path(__file__).resolve().parents[3])
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
             XLA_FLAGS="--xla_force_host_platform_device_count=1 --xla_cpu_multi_thread_eigen=false "
                       "intra_op_parallelism_threads=1")
  r = subprocess.run([sys.executable, "-m", "jaxcomp.cli", "decompress", "--workdir", str(tmp_path / "straight"),
                      str(tmp_path / "in.jxc"), str(tmp_path / "out.png")], env=env, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), decoded)


def test_checkpoint_without_tables_still_evaluates_and_resumes(tmp_path, capsys):
  """Checkpoints written before the tables were stored: eval rebuilds them (one warning line); training resumes
  and stores them from the next checkpoint on."""
  c = cfg.get_config("tiny")
  c.eval_data = ""
  host = pq.init_state(c)
  with train.Checkpointer(tmp_path, c, every=1) as ck:  # what the loop wrote before tables were stored
    ck.save(1, host, pq.ProxIQATask(c).data_iter, force=True)
  _, state = train.load_for_eval(tmp_path)
  assert "tables" not in state
  capsys.readouterr()
  codec = pq_codec.build_codec(c, state)
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
  assert len(err) == 1 and err[0].startswith("jaxcomp: warning:") and "no stored coding tables" in err[0]
  ref = codec_lib.finalize(pq.build_model(c), {"params": jax.tree.map(jnp.asarray, host["codec"].params)})
  chex.assert_trees_all_equal(codec.tables, _trimmed(ref))
  image = _images(3, n=1)[0]
  assert codec.decompress(codec.compress(image)).shape == image.shape
  pq.train_and_evaluate(c, str(tmp_path))
  _, state = train.load_for_eval(tmp_path)
  assert train.latest_step(tmp_path) == 2 and int(state["codec"]["step"]) == 1  # one update after step 1
  ref = codec_lib.finalize(pq.build_model(c), {"params": jax.tree.map(jnp.asarray, state["codec"]["params"])})
  chex.assert_trees_all_equal(_trimmed(state["tables"]), ref)


def test_init_from_warm_starts_the_codec_only(tmp_path, capsys):
  """An SSIM_p run initialised from an MSE run starts from its codec parameters, with a fresh proxy and optimizers."""
  mse = cfg.get_config("tiny")
  mse.eval_data, mse.loss, mse.metric, mse.alpha, mse.seed = "", "mse", "", 0.0, 5
  with train.Checkpointer(tmp_path / "mse", mse, every=1) as ck:  # an MSE run's checkpoint at step 2 (other seed)
    ck.save(2, pq.init_state(mse), force=True)
  _, src = train.load_for_eval(tmp_path / "mse")

  c = cfg.get_config("tiny")
  # a learning rate too small to move any float32 parameter: the only change to the codec is the warm start
  c.eval_data, c.steps, c.init_from = "", 1, str(tmp_path / "mse")
  c.learning_rate = c.lr_after = c.aux_learning_rate = 1e-30
  capsys.readouterr()
  pq.train_and_evaluate(c, str(tmp_path / "ssim_p"))
  assert f"initialised from {tmp_path / 'mse'} (step 2)" in capsys.readouterr().err
  _, got = train.load_for_eval(tmp_path / "ssim_p")
  chex.assert_trees_all_close(got["codec"]["params"], src["codec"]["params"], atol=1e-20, rtol=0)
  assert int(got["codec"]["step"]) == 1 and "proxy" in got and "proxy" not in src
  fresh = pq.init_state(c)
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(fresh["codec"].params),
                                                    jax.tree.leaves(got["codec"]["params"])))

  # another model size is refused with the first differing parameter named
  bad = cfg.get_config("tiny")
  bad.eval_data, bad.N, bad.init_from = "", 16, str(tmp_path / "mse")
  with pytest.raises(train_errors.CheckpointError, match=r"init_from .*'codec/params/.*' is"):
    pq.train_and_evaluate(bad, str(tmp_path / "bad"))
  assert not (tmp_path / "bad").exists()  # nothing half-made is left behind

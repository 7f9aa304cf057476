"""The rnn_decoder train loop through the CLI (8 fake devices: every algorithm runs pmapped): the named variants of
every algorithm train, each resumes exactly from a checkpoint, the JPEG 2000 64x64 variant trains, eval reports
whole-image metrics from the workdir."""

import json
import importlib.util
import pathlib
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache
from jax.flatten_util import ravel_pytree

from jaxcomp import cli, parallel, train
from jaxcomp.methods.rnn_decoder import algorithms
from tests.evaluation import eval_contract
from jaxcomp.methods.rnn_decoder import train as rnn_train

REPO = pathlib.Path(__file__).resolve().parents[3]
CONFIG = str(REPO / "configs" / "rnn_decoder.py")
# The paper-size variants shrunk to test size (hidden 8, K = 2, two steps of batch 16, a checkpoint every step).
SMALL = ["--config.hidden=8", "--config.num_steps=2", "--config.global_batch_size=16", "--config.steps=2",
         "--config.decay_steps=2", "--config.checkpoint_every=1", "--config.eval_every=2", "--config.log_every=1",
         "--config.max_train_images=2", "--config.eval_max_images=1", "--config.eval_batch_size=512"]
_CACHE_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                  "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
  """Every CLI run builds fresh jitted functions; with a persistent cache a resumed run reuses the executables of
  the identical programs its straight twin compiled, which halves this module's time. Restored afterwards."""
  old = {k: jax.config.values[k] for k in _CACHE_OPTIONS}
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  compilation_cache.reset_cache()
  yield
  for k, v in old.items():
    jax.config.update(k, v)
  compilation_cache.reset_cache()


def _train(workdir, *overrides):
  # decay_steps fixed: the schedule must not depend on the --config.steps of a stopped-early run.
  return cli.main(["train", "--config", f"{CONFIG}:tiny", "--workdir", str(workdir), "--config.decay_steps=3",
                   *overrides])


def _train_variant(variant, workdir, *overrides):
  return cli.main(["train", "--config", f"{CONFIG}:{variant}", "--workdir", str(workdir), *SMALL, *overrides])


def _drop_checkpoints_after(workdir, step):
  """Simulates a run killed after its checkpoint at `step`: later checkpoints never reached the disk."""
  for d in (pathlib.Path(workdir) / "checkpoints").iterdir():
    if d.is_dir() and d.name.isdigit() and int(d.name) > step:
      shutil.rmtree(d)
  assert train.latest_step(workdir) == step


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("rnn_straight")
  assert _train(workdir) == 0
  return workdir


def test_tiny_bptt_trains_and_logs(straight_run):
  assert parallel.local_device_count() == 8  # the loop really ran data parallel (tests/conftest.py)
  records = [r for r in train.read_metrics(straight_run) if r.get("split", "train") == "train"]
  assert [r["step"] for r in records][-1] == 3
  assert all(np.isfinite(r["loss"]) for r in records)
  evals = [r for r in train.read_metrics(straight_run) if r["split"] == "eval"]
  assert [r["step"] for r in evals] == [2, 3]  # validated at the checkpoint (every 2) and at the last step
  assert 5 < evals[-1]["val_psnr"] < 60


def test_bptt_resume_is_exact(straight_run, tmp_path):
  assert _train(tmp_path, "--config.steps=2") == 0
  assert _train(tmp_path) == 0
  _, a = train.load_for_eval(straight_run)
  _, b = train.load_for_eval(tmp_path)
  chex.assert_trees_all_equal(a, b)


def test_resume_is_exact_when_steps_grow(tmp_path):
  """4 steps, then the same run resumed with --config.steps=8, equals 8 straight: the decay's horizon is a config
  value (decay_steps), not the step count of the command that happens to run."""
  assert cli.main(["train", "--config", f"{CONFIG}:tiny", "--workdir", str(tmp_path / "a"), "--config.steps=4",
                   "--config.eval_data="]) == 0
  assert cli.main(["train", "--config", f"{CONFIG}:tiny", "--workdir", str(tmp_path / "a"), "--config.steps=8",
                   "--config.eval_data="]) == 0
  assert cli.main(["train", "--config", f"{CONFIG}:tiny", "--workdir", str(tmp_path / "b"), "--config.steps=8",
                   "--config.eval_data="]) == 0
  _, a = train.load_for_eval(tmp_path / "a")
  _, b = train.load_for_eval(tmp_path / "b")
  chex.assert_trees_all_equal(a, b)
  assert int(a["step"]) == 8


@pytest.mark.parametrize("variant", ["elman_rtrl", "gru_uoro", "lstm_sab"])
def test_variant_trains_and_resumes_exactly(variant, tmp_path):
  """`jaxcomp train --config configs/rnn_decoder.py:<cell>_<algorithm>` for the online/attentive algorithms, then
  a crash after step 1: the resumed run must reach the straight run's step-2 state bit for bit (parameters,
  momentum, PRNG key: UORO's sign draws continue where they stopped)."""
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  assert _train_variant(variant, straight) == 0
  config, state = train.load_for_eval(straight)
  assert config.algorithm == variant.rsplit("_", 1)[1] and int(state["step"]) == 2
  assert ("sab" in state["params"]) == (config.algorithm == "sab")
  assert int(state["mutable"]["estimator"]["count"]) == 2
  shutil.copytree(straight, resumed)
  _drop_checkpoints_after(resumed, 1)
  _, at_1 = train.load_for_eval(resumed)
  assert not np.array_equal(at_1["params"]["readout"]["U"], state["params"]["readout"]["U"])
  assert _train_variant(variant, resumed) == 0
  _, again = train.load_for_eval(resumed)
  chex.assert_trees_all_equal(again, state)


def test_jpeg2000_variant_trains_on_64x64_tiles(tmp_path):
  assert _train_variant("mlp_bptt_jp2", tmp_path, "--config.steps=1", "--config.eval_every=1") == 0
  config, state = train.load_for_eval(tmp_path)
  assert config.codec == "jpeg2000" and config.patch_size == 64
  assert state["params"]["embed"]["W"].shape == (9, 64 * 64, 8)
  records = [r for r in train.read_metrics(tmp_path) if "val_psnr" in r]
  assert 5 < records[-1]["val_psnr"] < 60


def _config(variant):
  spec = importlib.util.spec_from_file_location("rnn_decoder_config", CONFIG)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant)


def test_configs_hold_the_paper_settings():
  """Sec. 3.2 / 3.1 values, for every cell x algorithm and both codecs; RTRL's hidden size is the one exception."""
  for cell in ("lstm", "gru", "delta_rnn", "elman", "mlp"):
    for algorithm in ("bptt", "sab", "uoro", "rtrl"):
      for suffix, codec, patch in (("", "jpeg", 8), ("_jp2", "jpeg2000", 64)):
        c = _config(f"{cell}_{algorithm}{suffix}")
        assert (c.cell, c.algorithm, c.codec, c.patch_size) == (cell, algorithm, codec, patch)
        assert c.hidden == (32 if algorithm == "rtrl" else 512)
        assert (c.init_scale, c.learning_rate, c.clip_norm, c.global_batch_size, c.num_steps, c.alpha) == (
            0.054, 2e-4, 13.0, 256, 4, 0.235)
        assert (c.bpp_low, c.bpp_high, c.eval_bpp) == (0.35, 1.02, 0.37) and c.momentum > 0
  assert _config(None).variant == "default" and _config("default").algorithm == "bptt"
  with pytest.raises(ValueError, match="lstm_adam"):
    _config("lstm_adam")


def test_data_parallel_gradient_is_the_whole_batch_gradient():
  """The train loop's per-device gradient, pmapped over 8 devices with 2 examples each, equals one device's
  gradient of the whole batch of 16: independent of the device count (eq. 18's MAE is a sum over the batch, so a
  mean of per-shard gradients would divide it by the device count; the test shows that one is different).
  BPTT here; every estimator's sharded sum is checked against its whole batch in test_rnn_decoder_algorithms."""
  config = _config("tiny")
  spec = rnn_train.decoder_spec(config)
  params = rnn_train.init_params(config, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  n = parallel.local_device_count()
  b = config.global_batch_size
  batch = {"q": rng.random((b, 9, 64), np.float32), "target": rng.random((b, 64), np.float32)}
  fn = parallel.data_parallel(rnn_train.make_grad_fn(config, spec), "pmap", donate_argnums=())
  shards = {k: v.reshape(n, b // n, *v.shape[1:]) for k, v in batch.items()}
  grads, terms, count = fn(parallel.replicate(params), shards, parallel.replicate(jnp.zeros((), jnp.int32)),
                           parallel.replicate(jax.random.PRNGKey(1)))
  grads, loss = ravel_pytree(parallel.unreplicate(grads))[0], float(parallel.unreplicate(terms)["loss"])
  assert int(parallel.unreplicate(count)) == 1
  whole = rnn_train.make_estimator(config, spec)  # B = the size of the batch it is given
  ref, aux, _ = jax.jit(lambda p, bt: whole.update(p, bt, algorithms.EstimatorState(jnp.zeros((), jnp.int32)),
                                                   None))(params, batch)
  ref = ravel_pytree(ref)[0]
  assert float(jnp.linalg.norm(grads - ref) / jnp.linalg.norm(ref)) < 1e-5
  assert loss == pytest.approx(float(aux["loss"]), rel=1e-5)
  shard_mean = jnp.mean(jnp.stack([ravel_pytree(whole.update(
      params, {k: v[i::n] for k, v in batch.items()}, algorithms.EstimatorState(jnp.zeros((), jnp.int32)), None)[0])[0]
      for i in range(n)]), 0)
  assert float(jnp.linalg.norm(shard_mean - ref) / jnp.linalg.norm(ref)) > 1e-2


def test_eval_reports_whole_image_metrics(straight_run, tmp_path, capsys):
  assert cli.main(["eval", "--workdir", str(straight_run), "--dataset", "sample", "--max_images", "2"]) == 0
  out = capsys.readouterr().out
  assert "scored 2 of 12 images" in out
  for key in ("CODEC_PSNR", "GAIN_PSNR", "MS-SSIM", "VS_CODEC_PSNR", "bpp"):
    assert key in out
  report = json.loads((straight_run / "eval" / "sample.json").read_text())
  assert (report["num_images"], report["total_images"]) == (2, 12)
  assert report["images"][0]["bpp"] > 0 and report["gain_psnr"] == pytest.approx(
      np.mean([r["gain_psnr"] for r in report["images"]]))


def test_eval_contract(straight_run, tmp_path, capsys):
  eval_contract.check_eval_contract(capsys, straight_run, (2, 3), eval_contract.image_folder(tmp_path / "six"))


def test_bad_algorithm_is_a_user_error(tmp_path, capsys):
  assert _train(tmp_path, "--config.algorithm=adjoint") == 2
  assert "adjoint" in capsys.readouterr().err

"""CAE-ADMM config, static latent tables and the train loop end to end (tiny variant, 8 fake devices): ADMM state
checkpointed and resumed, Z within the cardinality bound, real files whose decoding equals the model's eval forward."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxcomp import parallel
from jaxcomp import train as harness
from jaxcomp.entropy.coder import RangeCoder
from jaxcomp import evaluation
from tests.evaluation import eval_contract
from jaxcomp.methods.cae_admm import admm, codec as cae_codec, train

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _configs():
  spec = importlib.util.spec_from_file_location("cae_admm_config", ROOT / "configs" / "cae_admm.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_config_variants_paper_values_and_lock():
  mod = _configs()
  assert set(mod.VARIANTS) == {"default", "no_admm", "demo", "tiny"}
  c = mod.get_config(None)
  assert c.method == "cae_admm" and c.variant == "default"
  assert (c.global_batch_size, c.learning_rate, c.patch_size, c.epochs) == (32, 4e-3, 128, 300)
  assert (c.plateau_factor, c.plateau_patience) == (0.5, 10)
  assert (c.admm.keep_ratio, c.admm.every_epochs, c.admm.enabled) == (0.1, 20, True)
  assert c.model.num_res_blocks == 15 and c.flips
  assert not mod.get_config("no_admm").admm.enabled
  with pytest.raises(AttributeError):
    c.not_a_key = 1  # locked
  with pytest.raises(ValueError, match="unknown cae_admm variant"):
    mod.get_config("nope")
  model = train.build_model(c)
  assert model.stride == 8
  shape = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros((1, 128, 128, 3)),
                                            method="analysis"))
  z = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 128, 128, 3)), method="analysis"), shape)
  assert z.shape == (1, 16, 16, 32)  # C / 64 = 0.5 symbols per pixel


def test_symbol_counts_and_tables_code_exactly_near_the_empirical_entropy():
  rng = np.random.default_rng(0)
  q = np.round(rng.laplace(0.0, [0.3, 1.5, 4.0], size=(64, 8, 8, 3))).astype(np.float32)
  q[0, 0, 0, 2] = 200.0  # beyond R: must take the escape path
  r = 20
  counts = cae_codec.symbol_counts(q, r)
  for ch in range(3):
    vals, n = np.unique(q[..., ch], return_counts=True)
    for v, k in zip(vals, n):
      if abs(v) <= r:
        assert counts[ch, int(v) + r] == k
    assert counts[ch, -1] == np.sum(np.abs(q[..., ch]) > r)
  tables = cae_codec.tables_from_counts(counts)
  coder = RangeCoder(tables)
  sym = q.reshape(-1, 3).T.astype(np.int64)
  idx = np.repeat(np.arange(3), sym.shape[1])
  data = coder.encode(sym.reshape(-1), idx)
  np.testing.assert_array_equal(coder.decode(data, idx), sym.reshape(-1))
  entropy_bits = 0.0
  for ch in range(3):
    _, n = np.unique(q[..., ch], return_counts=True)
    p = n / n.sum()
    entropy_bits += -np.sum(n * np.log2(p))
  assert 8 * len(data) < 1.03 * entropy_bits + 64 + 64  # smoothing + escape + range-coder flush


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  mod = _configs()
  workdir = tmp_path_factory.mktemp("cae_run")
  config = mod.get_config("tiny")
  train.train_and_evaluate(config, str(workdir))
  return config, workdir


def test_train_checkpoints_admm_state_within_cardinality(trained):
  config, workdir = trained
  records = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
  train_steps = [r["step"] for r in records if r["split"] == "train"]
  assert train_steps == [1, 2, 3]
  assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
  # Warm-up (epoch 1) is the scaled MSE alone; later steps add the ADMM penalty.
  first = records[0]
  np.testing.assert_allclose(first["loss"], config.loss.warmup_mse * first["mse"], rtol=1e-4)
  assert [r["step"] for r in records if r["split"] == "admm"] == [2, 3]  # every epoch after the warm-up
  _, state = harness.load_for_eval(workdir)
  z, u, count = (np.asarray(state["admm"][k]) for k in ("z", "u", "count"))
  assert z.shape[1:] == (4, 4, 4) and z.shape == u.shape
  keep = admm.keep_count(z.shape[1:], config.admm.keep_ratio)
  assert np.all(np.count_nonzero(z.reshape(len(z), -1), axis=1) <= keep)
  np.testing.assert_array_equal(count, 2)
  np.testing.assert_array_equal(z, np.round(z))  # integer latents and duals keep Z, U integer
  np.testing.assert_array_equal(u, np.round(u))
  assert np.asarray(state["codec"]["counts"]).sum() > 0


def test_resume_continues_from_checkpoint(trained, tmp_path):
  config, workdir = trained
  _, before = harness.load_for_eval(workdir)
  longer = ml_collections.ConfigDict(config.to_dict())
  longer.steps = 4
  import shutil
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  train.train_and_evaluate(longer, str(run))
  records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
  _, after = harness.load_for_eval(run)
  np.testing.assert_array_equal(after["admm"]["count"], 3)  # restored 2, plus the projection at epoch 4
  assert int(after["model"]["step"]) == 4


def test_codec_round_trip_equals_eval_forward_and_evaluate(trained, tmp_path):
  config, workdir = trained
  _, state = harness.load_for_eval(workdir)
  codec = cae_codec.build_codec(config, state)
  rng = np.random.default_rng(0)
  img = (rng.random((20, 28, 3)) * 255).astype(np.uint8)  # not a multiple of the stride: padded, then cropped
  blob = codec.compress(img)
  rec = codec.decompress(blob)
  assert rec.shape == img.shape and rec.dtype == np.uint8
  model = train.build_model(config)
  variables = jax.tree.map(jnp.asarray, {"params": state["model"]["params"], **state["model"]["mutable"]})
  padded = np.pad(img, ((0, 4), (0, 4), (0, 0)), mode="edge").astype(np.float32)[None] / 255.0
  x_hat = np.asarray(model.apply(variables, jnp.asarray(padded), train=False)["x_hat"])[0, :20, :28]
  np.testing.assert_array_equal(rec, np.clip(np.rint(np.clip(x_hat, 0, 1) * 255), 0, 255).astype(np.uint8))
  folder = tmp_path / "imgs"
  folder.mkdir()
  Image.fromarray(img).save(folder / "a.png")
  Image.fromarray(img[:16, :16]).save(folder / "b.png")
  res = evaluation.evaluate_run(workdir, str(folder), progress=False)
  assert res["num_images"] == 2 and res["bpp"] > 0 and 0 <= res["zeros"] <= 1 and np.isfinite(res["psnr"])
  # the one evaluation: real files against the entropy model's estimate, JPEG at the same rate, per image
  assert res["images"][0]["name"] == "a.png" and res["jpeg"]["bpp"] > 0 and "estimated_bpp" not in res  # no density


def test_eval_contract(trained, tmp_path, capsys):
  _, workdir = trained
  eval_contract.check_eval_contract(capsys, workdir, (2, 3), eval_contract.image_folder(tmp_path / "six"))


def test_anchor_crops_indices_and_vertical_flip():
  rng = np.random.default_rng(0)
  big = rng.integers(0, 256, (40, 50, 3), np.uint8)
  small = rng.integers(0, 256, (10, 12, 3), np.uint8)
  crops = train.center_crops([{"image": big}, {"image": small}], 16)
  np.testing.assert_array_equal(crops[0], big[12:28, 17:33])
  np.testing.assert_array_equal(crops[1], np.pad(small, ((3, 3), (2, 2), (0, 0)), mode="reflect"))
  # Anchor batches are a pure function of (seed, step): identical on resume and on every host.
  np.testing.assert_array_equal(train.anchor_indices(0, 7, 100, 32), train.anchor_indices(0, 7, 100, 32))
  assert not np.array_equal(train.anchor_indices(0, 7, 100, 32), train.anchor_indices(0, 8, 100, 32))
  assert len(set(train.anchor_indices(0, 7, 100, 32))) == 32  # without replacement when there are enough
  flip = train.VerticalFlip()
  gen = np.random.default_rng(1)
  outs = [flip.random_map({"image": big}, gen)["image"] for _ in range(200)]
  flipped = [np.array_equal(o, big[::-1]) for o in outs]
  assert all(f or np.array_equal(o, big) for f, o in zip(flipped, outs))
  assert 60 < sum(flipped) < 140


def test_shard_map_step_equals_pmap_step():
  """The CAE-ADMM step (synchronised BatchNorm, stochastic rounding with per-device keys, ADMM penalty, Adam +
  plateau) gives the same state and terms through both `jaxcomp.parallel` backends, two steps in a row."""
  config = _configs().get_config("tiny")
  n_dev = jax.local_device_count()
  assert n_dev == 8  # tests/conftest.py: 8 fake CPU devices
  model, p_model = train.build_model(config), train.build_model(config, "batch")
  x0 = jnp.zeros((1, 32, 32, 3))
  variables = jax.jit(lambda k: model.init({"params": k}, x0, train=False))(jax.random.key(0))
  host = harness.TrainState.from_variables(variables, tx=train.make_optimizer(config, 2), rng=jax.random.PRNGKey(3))
  rng = np.random.default_rng(0)
  per = 2
  batches = []
  for _ in range(2):
    img = rng.integers(0, 256, (n_dev, per, 32, 32, 3), np.uint8)
    batches.append({"image": img, "anchor": img[:, :, ::-1].copy(), "warm": np.zeros((n_dev,), np.float32),
                    "z": rng.integers(-2, 3, (n_dev, per, 4, 4, 4)).astype(np.float32),
                    "u": rng.integers(-1, 2, (n_dev, per, 4, 4, 4)).astype(np.float32)})
  out = {}
  for backend in ("pmap", "shard_map"):
    step = parallel.data_parallel(train._make_step(p_model, config, True), backend)
    state, terms = parallel.replicate(host, backend), []
    for b in batches:
      state, t = step(state, parallel.shard(b, backend))
      terms.append(jax.tree.map(lambda a: np.asarray(a)[0], t))
    s = parallel.unreplicate(state)
    out[backend] = ((s.step, s.params, s.opt_state, s.mutable, s.rng), terms)
  (s_p, t_p), (s_s, t_s) = out["pmap"], out["shard_map"]
  assert all(t["penalty"] > 0 for t in t_p)  # the ADMM term is part of what is compared
  assert not np.allclose(s_p[1]["g_a"]["ConvBN_0"]["Conv_0"]["kernel"],
                         variables["params"]["g_a"]["ConvBN_0"]["Conv_0"]["kernel"])  # the steps trained
  for a, b in zip(t_p, t_s):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
  for a, b in zip(jax.tree.leaves(s_p), jax.tree.leaves(s_s)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)

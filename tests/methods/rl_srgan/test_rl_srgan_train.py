"""RL-SRGAN end to end (tiny variant, 8 fake devices): one data-parallel step against the equations written out on
one device, exact resume (every state, the RL window included), the codec's real files (odd sizes, the rate,
damaged and foreign files), a host reward metric, the VGG term's refusal without weights, and `jaxcomp eval`."""

import importlib.util
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from jaxcomp import cli, parallel
from jaxcomp import train as harness
from jaxcomp.data import transforms
from jaxcomp.entropy import bitstream
from jaxcomp.errors import BitstreamError, ConfigError
from jaxcomp.methods.rl_srgan import codec as sr_codec
from jaxcomp.methods.rl_srgan import models, rl
from jaxcomp.methods.rl_srgan import train as sr_train
from tests.evaluation import eval_contract

pytestmark = pytest.mark.usefixtures("fast_compile")  # tiny programs: compile without XLA optimisations

ROOT = pathlib.Path(__file__).resolve().parents[3]
CONFIG = str(ROOT / "configs" / "rl_srgan.py")


def _cfg(variant="tiny"):
  spec = importlib.util.spec_from_file_location("rl_srgan_config", CONFIG)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant)


def test_configs_hold_the_paper_values_and_lock():
  c = _cfg("default")
  assert (c.scale, c.generator.features, c.generator.num_res_blocks) == (4, 64, 5)
  assert (c.mse_weight, c.adversarial_weight, c.vgg.weight) == (1.0, 1e-3, 6e-3)  # eq. 4
  assert (c.rl.value_weight, c.learning_rate, c.steps) == (5e-3, 1e-3, 22_876)  # eq. 11, Sec. 2.3
  assert c.rl.enabled and not _cfg("srgan").rl.enabled
  with pytest.raises(AttributeError):
    c.not_a_key = 1


def test_vgg_term_without_weights_is_refused(tmp_path):
  c = _cfg("tiny")
  c.vgg.weight = 6e-3
  with pytest.raises(ConfigError, match="needs ImageNet VGG19 weights"):
    sr_train.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def _images(seed, n, side):
  grid = np.random.default_rng(seed).integers(0, 256, size=(n, side // 4, side // 4, 3))
  return np.kron(grid, np.ones((1, 4, 4, 1))).astype(np.uint8)


def test_one_step_equals_the_equations_on_one_device():
  """Eq. 4 (MSE + 1e-3 adversarial), eq. 10-12 (the RL term, applied) and eq. 1 (D), with SGD(1) so the applied
  update is the gradient: the 8-device step (one image each, synchronised BatchNorm) equals one device's."""
  c = _cfg("tiny")
  c.rl.weight = 10.0  # larger than the paper's 1 so the RL term visibly matters in the gradient
  task = sr_train.RLSRGANTask(c)
  host = task.init_state()
  states = {k: harness.TrainState.create(params=s.params, tx=optax.sgd(1.0), rng=s.rng, mutable=s.mutable)
            for k, s in host.items() if k != "rl"}
  hr = _images(0, 8, 16)
  lr = np.stack([transforms.resize(im, 0.25, "bicubic") for im in hr])
  target = 0.7
  feed = {"hr": hr.reshape(8, 1, 16, 16, 3), "lr": lr.reshape(8, 1, 4, 4, 3), "rl_apply": np.ones(8, np.float32),
          "rl_target": np.full(8, target, np.float32)}
  step = parallel.data_parallel(sr_train.make_step(c, None), c.parallel)
  new, terms, m = step(parallel.replicate(states, c.parallel), parallel.shard(feed, c.parallel), None)
  new = jax.device_get(parallel.unreplicate(new))

  gen, heads = sr_codec.build_generator(c), models.ActorCritic(hidden=c.heads.hidden)
  disc = models.Discriminator(features=c.discriminator.features)
  x, xl = jnp.asarray(hr, jnp.float32) / 255.0, jnp.asarray(lr, jnp.float32) / 255.0
  _, key = states["gen"].next_key()
  keys = [jax.random.fold_in(key, d) for d in range(8)]
  d_vars = {"params": states["disc"].params, **states["disc"].mutable}

  def g_loss(params):
    gp, hp = params
    out, _ = gen.apply({"params": gp, **states["gen"].mutable}, xl, train=True, mutable=["batch_stats"])
    x_hat = out["x_hat"]
    l_srgan = jnp.mean((x - x_hat) ** 2) + 1e-3 * jnp.mean(jax.nn.softplus(-disc.apply(d_vars, x_hat, False)))
    ac = heads.apply({"params": hp}, out["latent"])
    a = jnp.concatenate([rl.sample_action(k, ac["mean"][d:d + 1], ac["log_std"][d:d + 1])
                         for d, k in enumerate(keys)])
    adv = target - ac["value"]
    logp = -0.5 * ((a - ac["mean"]) / jnp.exp(ac["log_std"])) ** 2 - ac["log_std"] - 0.5 * np.log(2 * np.pi)
    l_rl = (c.rl.value_weight * jnp.sum(adv ** 2) - jnp.sum(logp * jax.lax.stop_gradient(adv))) / 8  # per device
    return l_srgan + c.rl.weight * l_rl, x_hat

  (_, x_hat), (g_gen, g_heads) = jax.value_and_grad(g_loss, has_aux=True)(
      (states["gen"].params, states["heads"].params))

  def d_loss(params):
    logits = disc.apply({"params": params, **states["disc"].mutable}, jnp.concatenate([x, x_hat]), True,
                        mutable=["batch_stats"])[0]
    return jnp.mean(jax.nn.softplus(-logits[:8])) + jnp.mean(jax.nn.softplus(logits[8:]))

  g_disc = jax.grad(d_loss)(states["disc"].params)
  applied = lambda k: jax.tree.map(lambda a, b: a - b, states[k].params, new[k].params)  # noqa: E731
  chex.assert_trees_all_close(applied("gen"), g_gen, rtol=2e-3, atol=2e-6)
  chex.assert_trees_all_close(applied("heads"), g_heads, rtol=2e-3, atol=2e-6)
  chex.assert_trees_all_close(applied("disc"), g_disc, rtol=2e-3, atol=2e-6)
  assert float(jnp.max(jnp.abs(jax.tree.leaves(g_heads)[0]))) > 0  # the RL term trained the heads
  shown = np.round(np.clip(np.asarray(x_hat), 0, 1) * 255) / 255
  np.testing.assert_allclose(np.asarray(m).reshape(-1), 10 * np.log10(1 / np.mean((shown - np.asarray(x)) ** 2,
                                                                                  axis=(1, 2, 3))), rtol=1e-4)


def test_update_encoder_decides_where_the_rl_gradient_flows():
  """rl.update_encoder=False: the RL term trains the heads only; the generator's update is the SRGAN loss's alone,
  i.e. the same as with the RL term not applied; True (the paper): the RL term changes the generator's update."""
  hr = _images(2, 8, 16)
  lr = np.stack([transforms.resize(im, 0.25, "bicubic") for im in hr])
  out = {}
  for update_encoder, apply in ((False, 1.0), (True, 1.0), (True, 0.0)):
    c = _cfg("tiny")
    c.rl.update_encoder, c.rl.weight = update_encoder, 10.0
    host = sr_train.init_states(c)
    feed = {"hr": hr.reshape(8, 1, 16, 16, 3), "lr": lr.reshape(8, 1, 4, 4, 3),
            "rl_apply": np.full(8, apply, np.float32), "rl_target": np.full(8, 0.7, np.float32)}
    step = parallel.data_parallel(sr_train.make_step(c, None), c.parallel)
    new = jax.device_get(parallel.unreplicate(step(parallel.replicate(host, c.parallel),
                                                   parallel.shard(feed, c.parallel), None)[0]))
    out[(update_encoder, apply)] = new["gen"].params
  chex.assert_trees_all_close(out[(False, 1.0)], out[(True, 0.0)], rtol=1e-6, atol=1e-7)
  # Adam's first step is about lr * sign(gradient): the RL term shows where it flips a sign, in the encoder only
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), out[(True, 1.0)], out[(True, 0.0)])
  assert any(jax.tree.leaves(changed["encoder"])) and not any(jax.tree.leaves(changed["decoder"]))


def _train(workdir, *flags):
  return cli.main(["train", "--config", f"{CONFIG}:tiny", "--workdir", str(workdir), *flags])


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("rl_srgan") / "straight"
  assert _train(workdir) == 0
  return workdir


def test_resume_is_exact_with_the_rl_window(straight, tmp_path):
  assert _train(tmp_path / "resumed", "--config.steps=2", "--config.eval_data=") == 0
  _, mid = harness.load_for_eval(tmp_path / "resumed")
  assert int(mid["rl"]["count"]) == 0 and float(mid["rl"]["apply"]) == 1.0  # k=2: a window closed at step 2
  assert _train(tmp_path / "resumed", "--config.eval_data=") == 0
  _, a = harness.load_for_eval(straight)
  _, b = harness.load_for_eval(tmp_path / "resumed")
  chex.assert_trees_all_equal(a, b)  # generator, heads, discriminator, optimizers, BN statistics, RL state
  records = [r for r in harness.read_metrics(straight) if r["split"] == "train"]
  assert [r["rl_applied"] for r in records] == [0.0, 0.0, 1.0]  # applied the iteration after the window closed
  assert records[0]["reward"] == 0.0  # no previous metric at the first iteration (eq. 5)


def test_codec_round_trips_odd_sizes_at_the_jpeg_rate(straight, tmp_path):
  config, state = harness.load_for_eval(straight)
  codec = sr_codec.build_codec(config, state)
  image = _images(1, 1, 40)[0][:37, :29]  # not a multiple of r = 4
  blob = codec.compress(image)
  out = codec.decompress(blob)
  assert out.shape == image.shape and out.dtype == np.uint8
  header, streams = bitstream.unpack(blob)
  assert (header.height, header.width) == (37, 29)
  lr = sr_codec.downsample(image, 4)
  assert lr.shape[:2] == (10, 8)
  assert streams[0] == transforms.jpeg_encode(lr, config.jpeg_quality, "4:2:0")  # the payload is that JPEG
  assert len(blob) == len(streams[0]) + bitstream.overhead_bytes(1)
  np.testing.assert_array_equal(out, codec.restore(sr_codec.decode_jpeg(streams[0], 3), 37, 29))
  damaged = bytearray(blob)
  damaged[len(blob) // 2] ^= 0xFF
  with pytest.raises(BitstreamError, match="CRC32"):
    codec.decompress(bytes(damaged))
  foreign = bitstream.pack([b"not a jpeg"], model_id=codec.model_id, height=37, width=29, channels=3)
  with pytest.raises(BitstreamError, match="not a decodable JPEG"):
    codec.decompress(foreign)
  other = sr_codec.SRCodec(config, jax.tree.map(lambda a: a * 1.01, {"params": state["gen"]["params"],
                                                                    **state["gen"]["mutable"]}))
  with pytest.raises(BitstreamError, match="different model"):
    other.decompress(blob)
  # through the CLI
  Image.fromarray(image).save(tmp_path / "in.png")
  assert cli.main(["compress", "--workdir", str(straight), str(tmp_path / "in.png"), str(tmp_path / "a.jxc")]) == 0
  assert cli.main(["decompress", "--workdir", str(straight), str(tmp_path / "a.jxc"), str(tmp_path / "a.png")]) == 0
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), out)


def test_eval_contract_and_lanczos_beside(straight, tmp_path, capsys):
  folder = eval_contract.image_folder(tmp_path / "six")
  eval_contract.check_eval_contract(capsys, straight, (2, 3), folder)
  report, _ = eval_contract._eval(capsys, straight, folder, "--max_images", "1")
  rec = report["images"][0]
  image = np.asarray(Image.open(folder / "0.png"))
  codec = sr_codec.build_codec(*harness.load_for_eval(straight))
  lanczos = sr_codec.lanczos_upsample(sr_codec.decode_jpeg(codec.encode_lr(image), 3), 4, *image.shape[:2])
  mse = np.mean((lanczos.astype(np.float64) - image) ** 2)
  np.testing.assert_allclose(rec["lanczos_psnr"], 10 * np.log10(255 ** 2 / mse), rtol=1e-4)
  assert rec["bpp"] == pytest.approx(8 * rec["bytes"] / image[..., 0].size)


def host_score(x_BHWC, y_BHWC):
  """A host reward metric for the test: negative mean absolute error, per image."""
  return -np.mean(np.abs(x_BHWC - y_BHWC), axis=(1, 2, 3))


def test_a_host_metric_rewards_the_policy(tmp_path):
  assert _train(tmp_path, "--config.rl.metric=test_rl_srgan_train:host_score", "--config.steps=2",
                "--config.eval_data=") == 0
  records = [r for r in harness.read_metrics(tmp_path) if r["split"] == "train"]
  assert records[0]["reward_metric"] < 0  # the host score, not PSNR


def test_list_shows_the_method(capsys):
  assert cli.main(["list"]) == 0
  out = capsys.readouterr().out
  assert any(ln.split()[:1] == ["rl_srgan"] and "not available" not in ln for ln in out.splitlines())
  assert "rl_srgan.py:demo" in out and "rl_srgan.py:tiny" in out

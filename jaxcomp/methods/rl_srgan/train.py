"""RL-SRGAN training (Savioli, Sec. 2.2-2.3), a Task of the harness loop (`jaxcomp.train.run`).

Each iteration, on a mini-batch of HR crops x and their LR versions I_LR (bicubic by 1/r, then JPEG at
`jpeg_quality`: exactly what the codec sends, made by the data pipeline), in one data-parallel step:
  1. generator step, D frozen (eq. 4, 12):
       L_G = mse_weight MSE(x, H(I_LR)) + adversarial_weight (-log D(H(I_LR))) + vgg.weight VGG(x, H(I_LR))
             [+ rl.weight l_RL at the iteration after a return window closes]
     with the generator and the actor-critic heads updated together (the RL term reaches the encoder through the
     heads, `rl.py`); the adversarial term is the non-saturating form of eq. 1 (SRGAN's).
  2. discriminator step on x and the (stopped) H(I_LR) just produced: eq. 1 as binary cross-entropy.
  3. the reward metric M of each output (`rl.metric`: PSNR by default, on the device; `vmaf` or any
     "module:function" on the host between steps) updates the RL state (eqs. 5, 7, `rl.update`) on the host.
The RL term therefore uses the window that closed at the previous iteration (its return is known only once that
iteration's metric is): one iteration of lag, the same for device and host metrics, so any metric plugs in.

States: `{"gen": TrainState (generator, BatchNorm statistics), "heads": TrainState (actor-critic; absent when the
RL term is off), "disc": TrainState (discriminator)}`, each with its own Adam, plus `"rl"`: the RL state and the
pending (apply, target) of the next iteration, all checkpointed with the data iterator (exact resume).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcomp import data, evaluation, metrics, parallel
from jaxcomp import train as harness
from jaxcomp.data import transforms
from jaxcomp.errors import ConfigError
from jaxcomp.methods.rl_srgan import codec as codec_lib
from jaxcomp.methods.rl_srgan import models, rl, vgg
from jaxcomp.metrics.host import import_metric

DEVICE_METRICS = ("psnr", "ssim", "ms_ssim")


def check_config(config: ml_collections.ConfigDict) -> None:
  """RL-SRGAN's own checks, before any data is read or a workdir exists."""
  models.upsampling_stages(config.scale)
  if config.patch_size % config.scale:
    raise ConfigError(f"config.patch_size={config.patch_size} must be a multiple of config.scale={config.scale}")
  if not 1 <= config.jpeg_quality <= 100:
    raise ConfigError(f"config.jpeg_quality={config.jpeg_quality} must be in 1..100")
  for key in ("mse_weight", "adversarial_weight"):
    if config[key] < 0:
      raise ConfigError(f"config.{key}={config[key]} must be >= 0")
  if config.vgg.weight < 0:
    raise ConfigError(f"config.vgg.weight={config.vgg.weight} must be >= 0")
  if config.vgg.weight > 0 and not config.vgg.weights:
    raise ConfigError("config.vgg.weight > 0 needs ImageNet VGG19 weights: convert a published checkpoint with "
                      "`python -m jaxcomp.methods.rl_srgan.convert_vgg19 SRC vgg19.npz` and pass "
                      "--config.vgg.weights=vgg19.npz, or set --config.vgg.weight=0 (docs/rl_srgan.md)")
  if config.rl.enabled:
    if config.rl.reward_mode not in rl.REWARD_MODES:
      raise ConfigError(f"config.rl.reward_mode={config.rl.reward_mode!r}: one of {', '.join(rl.REWARD_MODES)}")
    if not 0.0 < config.rl.gamma <= 1.0:
      raise ConfigError(f"config.rl.gamma={config.rl.gamma} must be in (0, 1]")
    if config.rl.k < 1:
      raise ConfigError(f"config.rl.k={config.rl.k} must be >= 1")
    if config.rl.metric == "ms_ssim" and config.patch_size < metrics.ms_ssim_min_side():
      raise ConfigError(f"config.rl.metric='ms_ssim' needs patch_size >= {metrics.ms_ssim_min_side()}")


def device_metric(name: str) -> Callable | None:
  """Per-image `M(x, x_hat) -> [B]` on [0, 1] images, jittable, or None for a host metric."""
  if name == "psnr":
    return lambda x, y: metrics.psnr(x, y, data_range=1.0)
  if name == "ssim":
    return lambda x, y: metrics.ssim(x, y, data_range=1.0)
  if name == "ms_ssim":
    return lambda x, y: metrics.ms_ssim(x, y, data_range=1.0)
  return None


def host_metric(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  if name == "vmaf":
    from jaxcomp.metrics import vmaf
    if not vmaf.vmaf_available():
      raise ConfigError(f"config.rl.metric='vmaf' needs an ffmpeg built with libvmaf, none found: {vmaf.VMAF_HINT}")
    return vmaf.vmaf_scores
  return import_metric(name, key="config.rl.metric", builtin="psnr, ssim, ms_ssim, vmaf")


def _adam(config, lr: float) -> optax.GradientTransformation:
  return optax.adam(lr, config.adam_b1, config.adam_b2)


def make_step(config: ml_collections.ConfigDict, vgg_module: vgg.VGG19 | None):
  """The per-device step `(states, batch, vgg_params) -> (states, terms, metric_B[, x_hat])` (`parallel`-mapped)."""
  gen = codec_lib.build_generator(config, parallel.AXIS)
  heads = models.ActorCritic(hidden=config.heads.hidden)
  disc = models.Discriminator(features=config.discriminator.features, bn_axis_name=parallel.AXIS)
  with_rl = bool(config.rl.enabled)
  metric = device_metric(config.rl.metric) if with_rl else None
  return_images = with_rl and metric is None

  def step(states, batch, vgg_params):
    g_state = states["gen"]
    g_state, key = g_state.next_key()
    key = parallel.fold_in_device(key)
    x = batch["hr"].astype(jnp.float32) / 255.0
    lr = batch["lr"].astype(jnp.float32) / 255.0
    d_vars = {"params": states["disc"].params, **states["disc"].mutable}

    def g_loss(params):
      g_params, h_params = params
      out, g_new = gen.apply({"params": g_params, **g_state.mutable}, lr, train=True, mutable=["batch_stats"])
      x_hat = out["x_hat"]
      mse = jnp.mean(jnp.square(x_hat - x))  # eq. 2
      # D in train mode on the fakes only would normalise them by their own statistics; eval mode (running
      # statistics) judges them as D judges images, and D's statistics are updated by D's own step.
      logits = disc.apply(d_vars, x_hat, train=False)
      adversarial = jnp.mean(jax.nn.softplus(-logits))  # -log D(H(I_LR)), eq. 1 (non-saturating)
      loss = config.mse_weight * mse + config.adversarial_weight * adversarial
      terms = {"mse": mse, "psnr": -10.0 * jnp.log10(jnp.maximum(mse, 1e-10)), "adversarial": adversarial}
      if vgg_module is not None:  # eq. 3, on the VGG19 features
        f = vgg_module.apply({"params": vgg_params}, jnp.clip(x_hat, 0.0, 1.0))
        f_ref = vgg_module.apply({"params": vgg_params}, x)
        terms["vgg"] = jnp.mean(jnp.square(f - jax.lax.stop_gradient(f_ref)))
        loss = loss + config.vgg.weight * terms["vgg"]
      terms["srgan_loss"] = loss
      if with_rl:
        # rl.update_encoder: the paper's REINFORCE on the encoder (True), or the RL term training the heads only.
        latent = out["latent"] if config.rl.update_encoder else jax.lax.stop_gradient(out["latent"])
        ac = heads.apply({"params": h_params}, latent)
        action = rl.sample_action(key, ac["mean"], ac["log_std"])
        l_rl, rl_terms = rl.loss(ac["mean"], ac["log_std"], ac["value"], action, batch["rl_target"],
                                 value_weight=config.rl.value_weight)
        loss = rl.proposed_loss(loss, l_rl, batch["rl_apply"] > 0, weight=config.rl.weight)  # eq. 12
        terms.update(rl_loss=l_rl, rl_applied=batch["rl_apply"].astype(jnp.float32),
                     psnr_pred=jnp.mean(ac["mean"]) * models.PSNR_UNIT_DB, value=jnp.mean(ac["value"]),
                     **{f"rl_{k}": v for k, v in rl_terms.items()})
      terms["g_loss"] = loss
      return loss, (x_hat, g_new, terms)

    h_params = states["heads"].params if with_rl else {}
    grads, (x_hat, g_new, terms) = jax.grad(g_loss, has_aux=True)((g_state.params, h_params))
    grads, g_new = parallel.pmean(grads), parallel.pmean(g_new)
    new = dict(states, gen=g_state.apply_gradients(grads[0], mutable=g_new))
    if with_rl:
      new["heads"] = states["heads"].apply_gradients(grads[1])

    fake = jax.lax.stop_gradient(x_hat)

    def d_loss(params):  # eq. 1 as binary cross-entropy: -log D(x) - log(1 - D(H(I_LR)))
      both = jnp.concatenate([x, fake], axis=0)  # one pass: both halves share the batch statistics
      logits, d_new = disc.apply({"params": params, **states["disc"].mutable}, both, train=True,
                                 mutable=["batch_stats"])
      real, fake_l = logits[: x.shape[0]], logits[x.shape[0]:]
      loss = jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake_l))
      return loss, (d_new, {"d_loss": loss, "d_real": jnp.mean(jax.nn.sigmoid(real)),
                            "d_fake": jnp.mean(jax.nn.sigmoid(fake_l))})

    d_grads, (d_new, d_terms) = jax.grad(d_loss, has_aux=True)(states["disc"].params)
    d_grads, d_new = parallel.pmean(d_grads), parallel.pmean(d_new)
    new["disc"] = states["disc"].apply_gradients(d_grads, mutable=d_new)
    terms = parallel.pmean({**terms, **d_terms})
    shown = jnp.round(jnp.clip(fake, 0.0, 1.0) * 255.0) / 255.0  # the reward scores the image a user would see
    m = metric(x, shown) if metric is not None else jnp.zeros(x.shape[:1], jnp.float32)
    return (new, terms, m, shown) if return_images else (new, terms, m)

  return step


def make_train_loader(config: ml_collections.ConfigDict):
  """HR crops and their LR JPEGs: `{"hr": [dev, b, P, P, 3], "lr": [dev, b, P/r, P/r, 3]}` uint8."""
  source = data.get_source(config.train_data, "train")
  degrade = transforms.Degrade([transforms.Resize(1.0 / config.scale, "bicubic"),
                                transforms.Jpeg(config.jpeg_quality, "4:2:0")], in_key="image", out_key="lr")
  return data.make_loader(source, patch_size=config.patch_size, global_batch_size=config.global_batch_size,
                          seed=config.seed, num_workers=config.num_workers,
                          num_devices=parallel.local_device_count(), transforms=(degrade,))


def init_states(config: ml_collections.ConfigDict) -> dict:
  """Fresh host states `{"gen", ["heads",] "disc"}` (TrainStates, each with its own Adam) from `config.seed`."""
  c = config
  p, r = c.patch_size, c.scale
  k_gen, k_heads, k_disc, k_state = jax.random.split(jax.random.PRNGKey(c.seed), 4)
  gen = codec_lib.build_generator(c)
  disc = models.Discriminator(features=c.discriminator.features)
  lr0 = jnp.zeros((1, p // r, p // r, 3))
  g_vars = jax.jit(lambda k: gen.init(k, lr0, train=False))(k_gen)
  states = {"gen": harness.TrainState.from_variables(g_vars, tx=_adam(c, c.learning_rate), rng=k_state)}
  if c.rl.enabled:
    latent = jax.eval_shape(lambda v: gen.apply(v, lr0, train=False, method="encode"), g_vars)
    h_vars = jax.jit(lambda k: models.ActorCritic(hidden=c.heads.hidden).init(
        k, jnp.zeros(latent.shape, latent.dtype)))(k_heads)
    states["heads"] = harness.TrainState.from_variables(h_vars, tx=_adam(c, c.learning_rate),
                                                        rng=jax.random.fold_in(k_state, 1))
  d_vars = jax.jit(lambda k: disc.init(k, jnp.zeros((1, p, p, 3)), train=False))(k_disc)
  states["disc"] = harness.TrainState.from_variables(d_vars, tx=_adam(c, c.d_learning_rate),
                                                     rng=jax.random.fold_in(k_state, 2))
  return jax.device_get(states)


class RLSRGANTask(harness.Task):
  """RL-SRGAN in the harness loop: three networks, alternating G / D updates, the RL state on the host."""

  def __init__(self, config: ml_collections.ConfigDict):
    check_config(config)
    self.config = config
    self.total_steps = int(config.steps)
    self.with_rl = bool(config.rl.enabled)
    self.host_metric = None
    if self.with_rl and device_metric(config.rl.metric) is None:
      self.host_metric = host_metric(config.rl.metric)
    self.vgg_module, vgg_params = None, {}
    if config.vgg.weight > 0:
      vgg_params = vgg.load_vgg19_params(config.vgg.weights)
      self.vgg_module = vgg.VGG19(layer=config.vgg.layer)
    self.vgg_params = parallel.replicate(vgg_params, config.parallel) if vgg_params else None
    self.p_step = parallel.data_parallel(make_step(config, self.vgg_module), config.parallel)
    self.data_iter = iter(make_train_loader(config))
    names = {"g_loss", "srgan_loss", "mse", "psnr", "adversarial", "d_loss", "d_real", "d_fake"}
    if self.vgg_module is not None:
      names.add("vgg")
    if self.with_rl:
      names |= {"rl_loss", "rl_applied", "psnr_pred", "value", "rl_policy", "rl_value", "rl_log_prob",
                "rl_advantage", "reward", "reward_metric"}
    self.metric_names = frozenset(names)

  def init_state(self):
    host = init_states(self.config)
    if self.with_rl:
      host["rl"] = self._rl_host(rl.init(self.config.rl.k), apply=0.0, target=0.0)
    return host

  @staticmethod
  def _rl_host(state: rl.RLState, *, apply, target) -> dict:
    return {**{k: np.asarray(v) for k, v in state._asdict().items()},
            "apply": np.asarray(apply, np.float32), "target": np.asarray(target, np.float32)}

  def warm_start_parts(self):
    return ["gen/params", "gen/mutable"]

  def to_device(self, host_state):
    host_state = dict(host_state)
    self.rl = host_state.pop("rl", None)
    return parallel.replicate(host_state, self.backend)

  def step(self, states, step):
    n_dev = parallel.local_device_count()
    batch = next(self.data_iter)
    feed = {"hr": batch["image"], "lr": batch["lr"]}
    if self.with_rl:
      feed["rl_apply"] = np.full((n_dev,), self.rl["apply"], np.float32)
      feed["rl_target"] = np.full((n_dev,), self.rl["target"], np.float32)
    outputs = self.p_step(states, parallel.shard(feed, self.backend), self.vgg_params)
    states, terms, m = outputs[:3]
    if not self.with_rl:
      return states, terms
    if self.host_metric is not None:
      x = np.asarray(jax.device_get(batch["image"])).astype(np.float32) / 255.0
      y = np.asarray(jax.device_get(outputs[3]))
      scores = np.asarray(self.host_metric(x.reshape(-1, *x.shape[2:]), y.reshape(-1, *y.shape[2:])), np.float32)
      if scores.shape != (x.shape[0] * x.shape[1],):
        raise ConfigError(f"config.rl.metric={self.config.rl.metric!r} returned shape {scores.shape}, expected "
                          f"({x.shape[0] * x.shape[1]},)")
    else:
      scores = np.asarray(jax.device_get(m), np.float32).reshape(-1)
    state = rl.RLState(**{k: jnp.asarray(self.rl[k]) for k in rl.RLState._fields})
    state, info = rl.update(state, jnp.asarray(scores), gamma=self.config.rl.gamma, k=self.config.rl.k,
                            reward_mode=self.config.rl.reward_mode)
    # The window that closed now is applied by the next iteration's generator step (module docstring).
    self.rl = self._rl_host(state, apply=float(info["apply"]), target=float(info["target"]))
    return states, {**terms, "reward": info["reward"], "reward_metric": info["metric"]}

  def learning_rate(self, state, step, scalars):
    return float(self.config.learning_rate)

  def checkpoint(self, states, step):
    host = parallel.unreplicate(states)
    if self.with_rl:
      host["rl"] = dict(self.rl)
    return host


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Trains RL-SRGAN per `config` (configs/rl_srgan.py) in `workdir`, resuming from its latest checkpoint."""
  harness.run(config, workdir, RLSRGANTask(config), evaluate=evaluation.end_of_training(config, workdir))

"""CAE-ADMM training (Zhao & Liao 2019, Algorithm 1 and Section 4.2), a Task of the harness loop.

Training: Adam on d(x, x_hat) + rho/2 ||Q(E(a)) - Z + U||^2 (eq. 8), data-parallel through `jaxcomp.parallel`
(synchronised BatchNorm), a learning rate halved when the epoch loss has not improved for 10 epochs
(`optax.contrib.reduce_on_plateau` accumulating one epoch), a warm-up on a scaled MSE alone, and every
`admm.every_epochs` epochs the projection and dual steps (eqs. 10-11) over the whole training set.

Where Z and U live (the paper's batch-indexed Z, U; our decision): the loader hands out fresh random crops every
epoch, and a latent of one crop says nothing about Z, U computed on another crop, so the ADMM variables belong to a
fixed *anchor* crop per training record: the centre `patch_size` square of record i (reflect-padded when smaller),
`Z[i]`, `U[i]` of shape `[crop/8, crop/8, C]`. Every step adds the penalty on a batch of anchors whose indices come
from (seed, step) — so resumes are exact and every device knows which rows to gather — while the distortion uses the
loader's random, flipped crops (the paper's augmentation). The projection step encodes every anchor in eval mode
(running BatchNorm statistics, plain rounding), so Q(E(a)) is an integer array and Z and U stay integer-valued.
Cost: one extra encoder forward/backward per step on the anchor batch. Z, U (and the per-example projection
counts) are part of the checkpointed state.

Rate: the per-channel histogram of the anchors' integer latents is stored at every checkpoint (`codec/counts`);
`codec.py` turns it into the tables of the real codec.
"""

from __future__ import annotations

import math
from typing import Any

import grain.python as grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcomp import data, evaluation, metrics, parallel
from jaxcomp import train as harness
from jaxcomp.methods.cae_admm import admm, models
from jaxcomp.methods.cae_admm import codec as codec_lib
from jaxcomp.methods.cae_admm.codec import symbol_counts


class VerticalFlip(grain.RandomMapTransform):
  """Flips `image` upside down with probability 1/2 (the loader only flips horizontally; Section 4.3 does both)."""

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    if rng.random() < 0.5:
      element = {**element, "image": np.ascontiguousarray(element["image"][::-1])}
    return element


build_model = codec_lib.build_model


def center_crops(source, crop: int, limit: int = 0) -> np.ndarray:
  """The anchor crops: uint8 `[N, crop, crop, C]`, the centre square of each record (reflect-padded if smaller)."""
  n = len(source) if not limit else min(limit, len(source))
  out = []
  for i in range(n):
    img = data.loader.pad_to_at_least(source[i]["image"], crop, crop)
    y, x = (img.shape[0] - crop) // 2, (img.shape[1] - crop) // 2
    out.append(img[y:y + crop, x:x + crop])
  return np.stack(out)


def distortion(x: jax.Array, x_hat: jax.Array, loss_cfg: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Batch means of the terms of d (Section 4.2) on [0, 1] images, and d itself.

  d = w_mse MSE + w_psnr (offset - PSNR) + w_ssim (1 - SSIM) + w_ms (1 - MS-SSIM) (weights from the authors' code).
  """
  mse = jnp.mean(metrics.mse(x, x_hat))
  psnr = jnp.mean(metrics.psnr(x, x_hat, data_range=1.0))
  ssim = jnp.mean(metrics.ssim(x, x_hat, data_range=1.0))
  terms = {"mse": mse, "psnr": psnr, "ssim": ssim}
  d = loss_cfg.mse * mse + loss_cfg.psnr * (loss_cfg.psnr_offset - psnr) + loss_cfg.ssim * (1.0 - ssim)
  if loss_cfg.ms_ssim:
    ms = jnp.mean(metrics.ms_ssim(x, x_hat, data_range=1.0, win_size=loss_cfg.ms_ssim_win))
    terms["ms_ssim"] = ms
    d = d + loss_cfg.ms_ssim * (1.0 - ms)
  terms["distortion"] = d
  return terms


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam at 4e-3, scaled by 0.5 whenever the epoch-mean loss has not improved for 10 epochs (Section 4.2)."""
  return optax.chain(
      optax.adam(config.learning_rate),
      optax.contrib.reduce_on_plateau(factor=config.plateau_factor, patience=config.plateau_patience,
                                      rtol=config.plateau_rtol, accumulation_size=steps_per_epoch),
  )


def lr_scale(opt_state) -> jax.Array:
  return opt_state[1].scale


def anchor_indices(seed: int, step: int, num_anchors: int, batch: int) -> np.ndarray:
  """Anchor rows for `step`: a deterministic function of (seed, step), so resumed runs draw the same ones."""
  rng = np.random.default_rng([seed, 0xADD, step])
  return rng.choice(num_anchors, size=batch, replace=num_anchors < batch)


# ---------------------------------------------------------------------------------------------------------------
# Training.


def _encode_fn(model: models.CAE):
  """Jitted eval-mode `round(E(x))` of uint8 images: what the projection step and the tables see."""
  return jax.jit(lambda v, x: model.apply(v, x.astype(jnp.float32) / 255.0, train=False,
                                          method="quantized_latent"))


def _encode_all(encode, variables, images: np.ndarray, batch: int) -> np.ndarray:
  out = []
  for s in range(0, len(images), batch):
    chunk = images[s:s + batch]
    pad = batch - len(chunk)
    if pad:  # one compiled shape for every chunk
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    out.append(np.asarray(encode(variables, jnp.asarray(chunk)))[: batch - pad])
  return np.concatenate(out)


def _make_step(model: models.CAE, config: ml_collections.ConfigDict, keep_admm: bool):
  loss_cfg, rho = config.loss, config.admm.rho

  def step_fn(state: harness.TrainState, batch: dict[str, jax.Array]):
    state, key = state.next_key()
    key = parallel.fold_in_device(key)
    k_x, k_a = jax.random.split(key)
    x = batch["image"].astype(jnp.float32) / 255.0
    warm = batch["warm"]

    def loss_fn(params):
      variables = {"params": params, **state.mutable}
      out, new_vars = model.apply(variables, x, train=True, rngs={"quantize": k_x}, mutable=["batch_stats"])
      terms = distortion(x, out["x_hat"], loss_cfg)
      d = terms["distortion"]
      terms["zeros"] = jnp.mean(out["z_hat"] == 0)
      if keep_admm:
        a = batch["anchor"].astype(jnp.float32) / 255.0
        # The anchors' own BatchNorm update is discarded: running statistics follow the training crops only.
        q_a, _ = model.apply(variables, a, train=True, rngs={"quantize": k_a}, mutable=["batch_stats"],
                             method="quantized_latent")
        pen = admm.penalty(q_a, batch["z"], batch["u"], rho)
        terms["penalty"] = pen
        d = d + pen
      loss = jnp.where(warm > 0, loss_cfg.warmup_mse * terms["mse"], d)
      terms["loss"] = loss
      return loss, (new_vars, terms)

    grads, (new_vars, terms) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads, terms, new_vars = parallel.pmean(grads), parallel.pmean(terms), parallel.pmean(new_vars)
    state = state.apply_gradients(grads, mutable=new_vars, value=terms["loss"])
    terms["learning_rate"] = config.learning_rate * lr_scale(state.opt_state)
    return state, terms

  return step_fn


class CAEADMMTask(harness.Task):
  """CAE-ADMM in the harness loop: anchors, Z and U on the host, ADMM phases between steps, tables at saves."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    source = data.get_source(config.train_data, "train")
    self.steps_per_epoch = config.epoch_steps or max(1, round(len(source) / config.global_batch_size))
    self.total_steps = config.steps or config.epochs * self.steps_per_epoch
    crop = config.patch_size
    self.model = codec_lib.build_model(config)
    self.x0 = jnp.zeros((1, crop, crop, 3), jnp.float32)
    self.anchors = center_crops(source, crop)
    self.use_admm = bool(config.admm.enabled)
    self.n_dev = parallel.local_device_count()
    self.host_b = config.global_batch_size // jax.process_count()
    self.p_step = parallel.data_parallel(_make_step(codec_lib.build_model(config, parallel.AXIS), config,
                                                    self.use_admm), config.parallel)
    self.encode = _encode_fn(self.model)
    self.admm_update = jax.jit(admm.update, static_argnames="keep")
    self.table_anchors = self.anchors[: config.codec.table_images or len(self.anchors)]
    self.quick_eval = None
    transforms = (VerticalFlip(),) if config.flips else ()
    self.data_iter = iter(data.make_loader(source, patch_size=crop, global_batch_size=config.global_batch_size,
                                           seed=config.seed, flips=config.flips, num_devices=self.n_dev,
                                           num_workers=config.num_workers, transforms=transforms))
    names = {"loss", "mse", "psnr", "ssim", "distortion", "zeros", "learning_rate", "epoch"}
    names |= {"penalty"} if self.use_admm else set()
    names |= {"ms_ssim"} if config.loss.ms_ssim else set()
    if config.eval_data:
      names |= {"eval_psnr", "eval_ssim", "eval_zeros"}
    self.metric_names = frozenset(names)

  def init_state(self):
    init_key, state_key = jax.random.split(jax.random.PRNGKey(self.config.seed))
    variables = jax.jit(lambda k: self.model.init({"params": k}, self.x0, train=False))(init_key)
    self.latent_shape = tuple(jax.eval_shape(lambda v: self.model.apply(v, self.x0, train=False, method="analysis"),
                                             variables).shape[1:])
    self.keep = admm.keep_count(self.latent_shape, self.config.admm.keep_ratio)
    a0 = admm.init(len(self.anchors), self.latent_shape)
    return {
        "model": harness.TrainState.from_variables(variables, tx=make_optimizer(self.config, self.steps_per_epoch),
                                                   rng=state_key),
        "admm": {"z": np.asarray(a0.z), "u": np.asarray(a0.u), "count": np.asarray(a0.count)},
        "codec": {"counts": np.zeros((self.latent_shape[-1], 2 * self.config.codec.max_symbol + 2), np.int32)},
    }

  def warm_start_parts(self):
    return ["model/params", "model/mutable"]

  def to_device(self, host_state):
    # Z and U stay on the host side of the loop (gathered per step, updated by the projection phase).
    self.admm_state = admm.ADMMState(**{k: jnp.asarray(v) for k, v in host_state["admm"].items()})
    return parallel.replicate(host_state["model"], self.backend)

  def epoch(self, step: int) -> int:
    return math.ceil(step / self.steps_per_epoch)

  def step(self, state, step):
    config, n_dev, host_b = self.config, self.n_dev, self.host_b
    images = next(self.data_iter)["image"]
    warm = float(self.epoch(step) <= config.loss.warmup_epochs)
    batch = {"image": images, "warm": np.full((n_dev,), warm, np.float32)}
    if self.use_admm:
      # The global anchor batch is a function of (seed, step); each host takes its share, as the loader does.
      idx = anchor_indices(config.seed, step, len(self.anchors), config.global_batch_size)
      idx = idx[jax.process_index() * host_b:(jax.process_index() + 1) * host_b]
      split = lambda a: a.reshape((n_dev, host_b // n_dev) + a.shape[1:])  # noqa: E731
      batch["anchor"] = split(self.anchors[idx])
      z_b, u_b = admm.gather(self.admm_state, jnp.asarray(idx))
      batch["z"], batch["u"] = split(np.asarray(z_b)), split(np.asarray(u_b))
    state, terms = self.p_step(state, parallel.shard(batch, self.backend))
    return state, {**jax.tree.map(lambda t: t[0], terms), "epoch": float(self.epoch(step))}

  def learning_rate(self, state, step, scalars):
    return scalars.get("learning_rate")  # reduce_on_plateau's current rate, returned by the step

  def _variables(self, state) -> dict:
    return jax.tree.map(jnp.asarray, parallel.unreplicate(state).variables)

  def after_step(self, state, step, logger):
    """Steps 2-3 of Algorithm 1 (projection and dual update over every anchor) at the end of projection epochs."""
    epoch = self.epoch(step)
    if not (self.use_admm and step % self.steps_per_epoch == 0
            and admm.is_projection_epoch(epoch, self.config.admm.every_epochs, self.config.loss.warmup_epochs)):
      return state
    q = _encode_all(self.encode, self._variables(state), self.anchors, self.config.admm.batch_size)
    info, self.admm_state = self.admm_update(jnp.asarray(q), jnp.arange(len(self.anchors)), self.admm_state,
                                             keep=self.keep)
    logger.log(step, {"primal_residual": float(jnp.mean(info.primal_residual)),
                      "dual_residual": float(jnp.mean(info.dual_residual)),
                      "latent_zeros": 1.0 - float(jnp.mean(info.latent_nonzeros)) / math.prod(self.latent_shape),
                      "z_nonzeros": float(jnp.mean(jnp.sum(self.admm_state.z != 0, axis=(1, 2, 3))))},
               prefix="admm")
    return state

  def validate(self, state, step):
    """Eval-mode PSNR / SSIM / zero ratio on centre crops of `eval_data` (no coding: fast)."""
    if not self.config.eval_data:
      return {}
    if self.quick_eval is None:
      self.quick_eval = _quick_eval_fn(self.model, self.config)
    return {f"eval_{k}": v for k, v in self.quick_eval(self._variables(state)).items()}

  def checkpoint(self, state, step):
    counts = symbol_counts(_encode_all(self.encode, self._variables(state), self.table_anchors,
                                       self.config.admm.batch_size), self.config.codec.max_symbol)
    return {"model": parallel.unreplicate(state),
            "admm": {k: np.asarray(v) for k, v in self.admm_state._asdict().items()},
            "codec": {"counts": counts}}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Trains CAE-ADMM per `config` (see configs/cae_admm.py) in `workdir`, resuming from its latest checkpoint."""
  harness.run(config, workdir, CAEADMMTask(config), evaluate=evaluation.end_of_training(config, workdir))

def _quick_eval_fn(model: models.CAE, config: ml_collections.ConfigDict):
  """`fn(variables) -> {psnr, ssim, zeros}` of the eval-mode model on centre crops of `eval_data` (no coding)."""
  images = center_crops(data.get_source(config.eval_data, "all"), config.patch_size, config.eval_max_images)

  @jax.jit
  def scores(variables, x_uint8):
    x = x_uint8.astype(jnp.float32) / 255.0
    out = model.apply(variables, x, train=False)
    x_hat = jnp.round(jnp.clip(out["x_hat"], 0, 1) * 255.0) / 255.0
    return {"psnr": jnp.mean(metrics.psnr(x, x_hat, 1.0)), "ssim": jnp.mean(metrics.ssim(x, x_hat, 1.0)),
            "zeros": jnp.mean(out["z_hat"] == 0)}

  return lambda variables: {k: float(v) for k, v in scores(variables, jnp.asarray(images)).items()}

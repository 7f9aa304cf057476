"""CAE-ADMM train loop (Zhao & Liao 2019, Algorithm 1 and Section 4.2), evaluation and codec.

Training: Adam on d(x, x_hat) + rho/2 ||Q(E(a)) - Z + U||^2 (eq. 8), data-parallel through `jaxcomp.parallel`
(synchronised BatchNorm), a learning rate halved when the epoch loss has not improved for 10 epochs
(`optax.contrib.reduce_on_plateau` accumulating one epoch), a warm-up on a scaled MSE alone, and every
`admm.every_epochs` epochs the projection and dual steps (eqs. 10-11) over the whole training set.

Where Z and U live (the paper's batch-indexed Z, U; our decision): the loader hands out fresh random crops every
epoch, and a latent of one crop says nothing about Z, U computed on another crop, so the ADMM variables belong to a
fixed *anchor* crop per training record: the centre `crop_size` square of record i (reflect-padded when smaller),
`Z[i]`, `U[i]` of shape `[crop/8, crop/8, C]`. Every step adds the penalty on a batch of anchors whose indices come
from (seed, step) — so resumes are exact and every device knows which rows to gather — while the distortion uses the
loader's random, flipped crops (the paper's augmentation). The projection step encodes every anchor in eval mode
(running BatchNorm statistics, plain rounding), so Q(E(a)) is an integer array and Z and U stay integer-valued.
Cost: one extra encoder forward/backward per step on the anchor batch. Z, U (and the per-example projection
counts) are part of the checkpointed state.

Rate: CAE-ADMM has no learned entropy model. After training — and refreshed at every checkpoint — the per-channel
histogram of the integer latents of the anchor crops is stored in the checkpoint (`codec/counts`, a fixed
`[C, 2 R + 1]` shape, R = `codec.max_symbol`); `build_codec` turns it into integer CDF tables (add-1/2 smoothing,
an escape symbol for values beyond +-R) for the generic `jaxcomp.entropy.codec.Codec`, so compress/decompress write
real files and `evaluate` reports bpp as file size.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import grain.python as grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcomp import data, errors, metrics, parallel, train
from jaxcomp.entropy import codec as codec_lib
from jaxcomp.entropy import tables as tables_lib
from jaxcomp.methods.cae_admm import admm, models


class VerticalFlip(grain.RandomMapTransform):
  """Flips `image` upside down with probability 1/2 (the loader only flips horizontally; Section 4.3 does both)."""

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    if rng.random() < 0.5:
      element = {**element, "image": np.ascontiguousarray(element["image"][::-1])}
    return element


def build_model(config: ml_collections.ConfigDict, axis_name: str | None = None) -> models.CAE:
  m = config.model
  return models.CAE(latent_channels=m.latent_channels, stem_features=tuple(m.stem_features),
                    stem_kernels=tuple(m.stem_kernels), stem_strides=tuple(m.stem_strides),
                    num_res_blocks=m.num_res_blocks, down_features=tuple(m.down_features),
                    down_kernel=m.down_kernel, final_kernel=m.final_kernel, subpix_kernel=m.subpix_kernel,
                    bn_axis_name=axis_name, remat=m.get("remat", False))  # absent in older checkpoints


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
# The static per-channel model of the integer latent.


def symbol_counts(q_NhwC: np.ndarray, max_symbol: int) -> np.ndarray:
  """Histogram `[C, 2 R + 2]`: counts of -R..R per channel, then the count of values beyond +-R (escapes)."""
  q = np.asarray(q_NhwC).reshape(-1, q_NhwC.shape[-1]).astype(np.int64)
  c = q.shape[1]
  inside = np.abs(q) <= max_symbol
  rows = np.broadcast_to(np.arange(c), q.shape)
  counts = np.zeros((c, 2 * max_symbol + 2), np.int64)
  np.add.at(counts, (rows[inside], q[inside] + max_symbol), 1)
  counts[:, -1] = np.sum(~inside, axis=0)
  return counts.astype(np.int32)


def tables_from_counts(counts: np.ndarray, precision: int = tables_lib.DEFAULT_PRECISION) -> dict:
  """Integer CDF tables for `jaxcomp.entropy.codec.Codec` from `symbol_counts` (add-1/2 smoothing).

  The table of channel c covers the integers its counts saw (trimmed to the observed range), the escape symbol
  takes the beyond-range count plus 1/2; the medians are 0, so the codec codes `round(z)` itself.
  """
  counts = np.asarray(counts, np.float64)
  c, width = counts.shape
  r = (width - 2) // 2
  body = counts[:, :-1]
  seen = body > 0
  lo = np.where(seen.any(1), np.argmax(seen, 1), r)
  hi = np.where(seen.any(1), width - 2 - np.argmax(seen[:, ::-1], 1), r)
  lengths = hi - lo + 1
  pmf = np.zeros((c, int(lengths.max())))
  for t in range(c):
    pmf[t, : lengths[t]] = body[t, lo[t]:hi[t] + 1] + 0.5
  tails = counts[:, -1] + 0.5
  total = pmf.sum(1) + tails
  return tables_lib.make_tables(pmf / total[:, None], lengths, lo - r, tails / total, precision,
                                medians=np.zeros(c, np.float32))


def build_codec(config: ml_collections.ConfigDict, state: Mapping[str, Any]) -> codec_lib.Codec:
  """A `Codec` (`compress(uint8 HWC) -> bytes`, `decompress`) from a restored state (`train.load_for_eval`)."""
  try:
    variables = {"params": state["model"]["params"], **state["model"]["mutable"]}
    counts = np.asarray(state["codec"]["counts"])
  except (KeyError, TypeError) as e:
    raise errors.CheckpointError(f"not a cae_admm checkpoint state (missing {e})") from None
  if counts.sum() == 0:
    raise errors.CheckpointError("this cae_admm checkpoint has no fitted symbol counts (saved before any fit)")
  variables = jax.tree.map(jnp.asarray, variables)
  tables = {"entropy_bottleneck": tables_from_counts(counts, config.codec.precision)}
  return codec_lib.Codec(build_model(config), variables, tables)


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

  def step_fn(state: train.TrainState, batch: dict[str, jax.Array]):
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
    terms["lr"] = config.learning_rate * lr_scale(state.opt_state)
    return state, terms

  return step_fn


def _eval_images(spec: str, limit: int) -> list[np.ndarray]:
  source = data.get_source(spec, "all")
  n = len(source) if not limit else min(limit, len(source))
  if n == 0:
    raise errors.DataError(f"data {spec!r} holds no images")
  return [source[i]["image"] for i in range(n)]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Trains CAE-ADMM per `config` (see configs/cae_admm.py) in `workdir`, resuming from its latest checkpoint."""
  backend = config.parallel
  n_dev = parallel.local_device_count()
  if config.global_batch_size % parallel.device_count():
    raise errors.ConfigError(f"global_batch_size={config.global_batch_size} does not divide over "
                             f"{parallel.device_count()} devices")
  source = data.get_source(config.train_data, "train")
  steps_per_epoch = config.epoch_steps or max(1, round(len(source) / config.global_batch_size))
  total_steps = config.steps or config.epochs * steps_per_epoch
  crop = config.crop_size

  model = build_model(config)
  p_model = build_model(config, parallel.AXIS)
  rng = jax.random.PRNGKey(config.seed)
  init_key, state_key = jax.random.split(rng)
  x0 = jnp.zeros((1, crop, crop, 3), jnp.float32)
  variables = jax.jit(lambda k: model.init({"params": k}, x0, train=False))(init_key)
  tx = make_optimizer(config, steps_per_epoch)
  latent_shape = tuple(jax.eval_shape(lambda v: model.apply(v, x0, train=False, method="analysis"),
                                      variables).shape[1:])

  anchors = center_crops(source, crop)
  keep = admm.keep_count(latent_shape, config.admm.keep_ratio)
  a0 = admm.init(len(anchors), latent_shape)
  host_state = {
      "model": train.TrainState.from_variables(variables, tx=tx, rng=state_key),
      "admm": {"z": np.asarray(a0.z), "u": np.asarray(a0.u), "count": np.asarray(a0.count)},
      "codec": {"counts": np.zeros((latent_shape[-1], 2 * config.codec.max_symbol + 2), np.int32)},
  }
  transforms = (VerticalFlip(),) if config.flips else ()
  loader = data.make_loader(source, crop_size=crop, global_batch_size=config.global_batch_size, seed=config.seed,
                            flips=config.flips, num_devices=n_dev, transforms=transforms)
  data_iter: Iterator = iter(loader)
  ckpt = train.Checkpointer(workdir, config, every=config.checkpoint_every, keep=config.keep_checkpoints,
                            best_metric=config.best_metric or None, best_mode=config.best_mode)
  host_state, start = ckpt.restore_or_init(host_state, data_iter)
  admm_state = admm.ADMMState(**{k: jnp.asarray(v) for k, v in host_state["admm"].items()})
  state = parallel.replicate(host_state["model"], backend)

  use_admm = bool(config.admm.enabled)
  host_b = config.global_batch_size // jax.process_count()
  p_step = parallel.data_parallel(_make_step(p_model, config, use_admm), backend)
  encode = _encode_fn(model)
  admm_update = jax.jit(admm.update, static_argnames="keep")
  table_anchors = anchors[: config.codec.table_images or len(anchors)]

  def host_variables(st) -> dict:
    return jax.tree.map(jnp.asarray, parallel.unreplicate(st).variables)

  def snapshot(st, a_state, cnt) -> dict:
    return {"model": parallel.unreplicate(st),
            "admm": {k: np.asarray(v) for k, v in a_state._asdict().items()},
            "codec": {"counts": cnt}}

  logger = train.TrainLogger(workdir, total_steps=total_steps, start_step=start,
                             images_per_step=config.global_batch_size, main_metric="loss")
  step, scalars, quick_eval = start, {}, None
  with train.PreemptionGuard() as guard, logger:
    try:
      for step in range(start + 1, total_steps + 1):
        epoch = math.ceil(step / steps_per_epoch)
        images = next(data_iter)["image"]
        batch = {"image": images, "warm": np.full((n_dev,), float(epoch <= config.loss.warmup_epochs), np.float32)}
        if use_admm:
          # The global anchor batch is a function of (seed, step); each host takes its share, as the loader does.
          idx = anchor_indices(config.seed, step, len(anchors), config.global_batch_size)
          idx = idx[jax.process_index() * host_b:(jax.process_index() + 1) * host_b]
          split = lambda a: a.reshape((n_dev, host_b // n_dev) + a.shape[1:])  # noqa: E731
          batch["anchor"] = split(anchors[idx])
          z_b, u_b = admm.gather(admm_state, jnp.asarray(idx))
          batch["z"], batch["u"] = split(np.asarray(z_b)), split(np.asarray(u_b))
        state, terms = p_step(state, parallel.shard(batch, backend))
        scalars = train.to_host_scalars(jax.tree.map(lambda t: t[0], terms))
        train.check_finite(step, scalars, last_good_step=ckpt.latest_step)
        if step % config.log_every == 0 or step == start + 1:
          logger.log(step, {**scalars, "epoch": epoch})

        end_of_epoch = step % steps_per_epoch == 0
        if use_admm and end_of_epoch and admm.is_projection_epoch(epoch, config.admm.every_epochs,
                                                                  config.loss.warmup_epochs):
          q = _encode_all(encode, host_variables(state), anchors, config.admm.batch_size)
          info, admm_state = admm_update(jnp.asarray(q), jnp.arange(len(anchors)), admm_state, keep=keep)
          logger.log(step, {"primal_residual": float(jnp.mean(info.primal_residual)),
                            "dual_residual": float(jnp.mean(info.dual_residual)),
                            "latent_zeros": 1.0 - float(jnp.mean(info.latent_nonzeros)) / math.prod(latent_shape),
                            "z_nonzeros": float(jnp.mean(jnp.sum(admm_state.z != 0, axis=(1, 2, 3))))},
                     prefix="admm")
        if end_of_epoch and (epoch % config.eval_every_epochs == 0 or step == total_steps):
          if quick_eval is None:
            quick_eval = _quick_eval_fn(model, config)
          logger.log(step, quick_eval(host_variables(state)), prefix="eval")
          logger.reset_timer()
        if ckpt.should_save(step) or step == total_steps or guard.should_stop():
          counts = symbol_counts(_encode_all(encode, host_variables(state), table_anchors, config.admm.batch_size),
                                 config.codec.max_symbol)
          ckpt.save(step, snapshot(state, admm_state, counts), data_iter, scalars, force=True)
        if guard.should_stop():
          logger.message(f"stopping at step {step} on {guard.requested}")
          break
    finally:
      ckpt.close()


def _quick_eval_fn(model: models.CAE, config: ml_collections.ConfigDict):
  """`fn(variables) -> {psnr, ssim, zeros}` of the eval-mode model on centre crops of `eval_data` (no coding)."""
  images = center_crops(data.get_source(config.eval_data, "all"), config.crop_size, config.max_eval_images)

  @jax.jit
  def scores(variables, x_uint8):
    x = x_uint8.astype(jnp.float32) / 255.0
    out = model.apply(variables, x, train=False)
    x_hat = jnp.round(jnp.clip(out["x_hat"], 0, 1) * 255.0) / 255.0
    return {"psnr": jnp.mean(metrics.psnr(x, x_hat, 1.0)), "ssim": jnp.mean(metrics.ssim(x, x_hat, 1.0)),
            "zeros": jnp.mean(out["z_hat"] == 0)}

  return lambda variables: {k: float(v) for k, v in scores(variables, jnp.asarray(images)).items()}


def evaluate(config: ml_collections.ConfigDict, workdir: str, data_spec: str) -> dict[str, Any]:
  """Real-codec results on every image of `data_spec`: bpp from file size, PSNR, SSIM (, MS-SSIM), zero ratio."""
  _, state = train.load_for_eval(workdir)
  codec = build_codec(config, state)
  rows = []
  for img in _eval_images(data_spec, 0):
    blob = codec.compress(img)
    rec = codec.decompress(blob)
    z_hat = codec.quantized_latents(img)["y_hat"]
    x, y = jnp.asarray(img, jnp.float32), jnp.asarray(rec, jnp.float32)
    row = {"bpp": 8.0 * len(blob) / (img.shape[0] * img.shape[1]),
           "psnr": float(metrics.psnr(x, y, 255.0)), "ssim": float(metrics.ssim(x, y, 255.0)),
           "zeros": float(np.mean(z_hat == 0))}
    if min(img.shape[:2]) >= metrics.ms_ssim_min_side():
      row["ms_ssim"] = float(metrics.ms_ssim(x, y, 255.0))
    rows.append(row)
  keys = set.intersection(*(set(r) for r in rows))
  out: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in sorted(keys)}
  out["num_images"] = len(rows)
  return out

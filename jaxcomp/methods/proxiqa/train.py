"""ProxIQA training (Chen et al. 2021, Sec. III): alternating updates of a compression network and its proxy.

Each iteration, on a mini-batch x (both steps data-parallel through `jaxcomp.parallel`):
  1. compression step, proxy frozen (eq. 5, 10):
       L_t = lmbda * s * [alpha (M_max - M_hat(x, x_hat)) + (1 - alpha) MSE(x, x_hat)] + bpp       (s = 255^2)
     plus the entropy bottleneck's quantile loss (its own Adam on `quantiles` only, as CompressAI / TFC);
     alpha = 0 and no proxy is the MSE baseline (eq. 8).
  2. proxy step on the reconstructions x_hat just produced (the forward pass of step 1, as in the authors' code):
       L_m = mean (M_hat(x, x_hat) - M(x, x_hat))^2                                                      (eq. 11)
The true metric M is either a JAX metric computed on the device (`ssim`, `ms_ssim`) or a host callable computed
between the two jitted steps: `vmaf` (ffmpeg + libvmaf) or any `"module:function"` taking numpy float images
`[B, H, W, 3]` in [0, 1] and returning `[B]` scores; it need not be differentiable (that is the point of the method).

The two networks are two `TrainState`s (`{"codec": ..., "proxy": ...}`), each with its own optimizer, checkpointed
together with the data iterator (exact resume). Every checkpoint also holds `"tables"`: the codec's integer coding
tables (`jaxcomp.entropy.codec.finalize` of the saved parameters, bottleneck tables padded to a fixed width), which
`build_codec` uses as they are, so a decoder never rebuilds them from floats.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from jaxcomp import data, evaluation, metrics, parallel
from jaxcomp import train as harness
from jaxcomp.entropy import rate_bits
from jaxcomp.errors import CheckpointError, ConfigError
from jaxcomp.methods.proxiqa import codec as codec_lib
from jaxcomp.methods.proxiqa import models
from jaxcomp.metrics import vmaf
from jaxcomp.metrics.host import import_metric
from jaxcomp.metrics.vmaf import VMAF_HINT, vmaf_available, vmaf_scores

Metric = Callable[[Any, Any], Any]


# ----------------------------------------------------------------------------------------------------------------
# The quality metric M.


def ms_ssim_window(patch_size: int, num_scales: int = 5) -> int:
  """The Gaussian window MS-SSIM can use on square patches of `patch_size`: 11 (the standard) when it fits, else
  the largest odd size whose coarsest scale still holds one window (7 for the paper's 128x128 patches)."""
  win = min(11, (patch_size - 1) // 2 ** (num_scales - 1) + 1)
  win -= 1 - win % 2
  if win < 3:
    raise ConfigError(f"patch_size={patch_size} is too small for {num_scales}-scale MS-SSIM")
  return win


def device_metric(name: str, patch_size: int) -> Metric | None:
  """A jittable metric `M(x, x_hat) -> [B]` on [0, 1] images, or None when `name` is a host metric."""
  if name == "ssim":
    return lambda x, x_hat: metrics.ssim(x, x_hat, data_range=1.0)
  if name == "ms_ssim":
    win = ms_ssim_window(patch_size)
    return lambda x, x_hat: metrics.ms_ssim(x, x_hat, data_range=1.0, win_size=win)
  return None


def vmaf_unit(x_BHW3: np.ndarray, x_hat_BHW3: np.ndarray) -> np.ndarray:
  """VMAF / 100, the training metric M of `vmaf_p`: on the scale of SSIM, as the paper's alphas of one size (3e-3
  SSIM, 1.5e-3 VMAF) imply; on 0-100 the proxy term outweighs the MSE term 6x and wrecks the codec
  (docs/proxiqa.md, "Scale of VMAF")."""
  return vmaf_scores(x_BHW3, x_hat_BHW3) / 100.0


def host_metric(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  """A numpy metric computed on the host: "vmaf" or "package.module:function"."""
  if name == "vmaf":
    if not vmaf_available():
      raise ConfigError(f"config.metric='vmaf' needs an ffmpeg built with libvmaf, none found: {VMAF_HINT}")
    return vmaf_unit
  return import_metric(name)


# ----------------------------------------------------------------------------------------------------------------
# Model, optimizers, state.


build_model = codec_lib.build_model


def perceptual(config) -> bool:
  return bool(config.metric)


def uses_proxy(config) -> bool:
  """Whether the codec is trained against the ProxIQA network (eq. 10); False for MSE and for eq. 13."""
  return perceptual(config) and bool(config.use_proxy)


def _schedule(config, lr: float) -> optax.Schedule:
  """lr until `lr_boundary`, then `lr * lr_after / learning_rate` (1e-4 then 1e-5 in the paper)."""
  return optax.piecewise_constant_schedule(lr, {int(config.lr_boundary): config.lr_after / config.learning_rate})


def codec_tx(config) -> optax.GradientTransformation:
  """Adam on the transforms and densities; Adam at `aux_learning_rate` on the bottleneck's quantiles."""
  def labels(params):
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: "aux" if k[-1] == "quantiles" else "main" for k in flat})
  return optax.multi_transform(
      {"main": optax.adam(_schedule(config, config.learning_rate), config.adam_b1, config.adam_b2),
       "aux": optax.adam(config.aux_learning_rate, config.adam_b1, config.adam_b2)}, labels)


def proxy_tx(config) -> optax.GradientTransformation:
  return optax.adam(_schedule(config, config.proxy_learning_rate), config.adam_b1, config.adam_b2)


def _check_config(config) -> None:
  f = models.downsampling_factor(config.layout, hyperprior=config.model == "bmshj")
  if config.patch_size % f:
    raise ConfigError(f"config.patch_size={config.patch_size} must be a multiple of {f} for {config.model}/"
                      f"{config.layout}")
  if config.patch_size % 8:
    raise ConfigError(f"config.patch_size={config.patch_size} must be a multiple of 8 (three 2x2 pools)")
  if config.metric == "vmaf" and config.patch_size < vmaf.VMAF_MIN_SIDE:
    raise ConfigError(f"config.patch_size={config.patch_size} is too small for VMAF (libvmaf needs "
                      f"{vmaf.VMAF_MIN_SIDE} px a side)")
  if not 0.0 <= config.alpha <= 1.0:
    raise ConfigError(f"config.alpha={config.alpha} must be in [0, 1]")
  if not 0.0 <= config.pristine_fraction < 1.0:
    raise ConfigError(f"config.pristine_fraction={config.pristine_fraction} must be in [0, 1)")
  if perceptual(config) and not config.use_proxy and device_metric(config.metric, config.patch_size) is None:
    raise ConfigError(f"config.use_proxy=False (eq. 13) needs a differentiable device metric (ssim, ms_ssim), "
                      f"not config.metric={config.metric!r}")


def init_state(config) -> dict:
  """Host train state `{"codec": TrainState[, "proxy": TrainState]}` from `config.seed`."""
  model = build_model(config)
  k_codec, k_proxy, k_noise, k_state, k_pstate = jax.random.split(jax.random.PRNGKey(config.seed), 5)
  x0 = jnp.zeros((1, config.patch_size, config.patch_size, 3))
  init = jax.jit(lambda k, kn: model.init({"params": k, "noise": kn}, x0, training=True))
  states = {"codec": harness.TrainState.from_variables(init(k_codec, k_noise), tx=codec_tx(config), rng=k_state)}
  if uses_proxy(config):
    proxy = models.ProxIQANet()
    variables = jax.jit(lambda k: proxy.init(k, x0, x0))(k_proxy)
    states["proxy"] = harness.TrainState.from_variables(variables, tx=proxy_tx(config), rng=k_pstate)
  return jax.device_get(states)


# ----------------------------------------------------------------------------------------------------------------
# The two steps (per device; mapped by jaxcomp.parallel).


def make_steps(config) -> tuple[Callable, Callable]:
  """`(codec_step, proxy_step)` per-device functions.

  codec_step(states, images_uint8 [b, H, W, 3]) -> (states, x_hat [b, H, W, 3], m [b], terms)
    m is the true metric when it is a device metric, else zeros (filled on the host).
  proxy_step(states, images_uint8, x_hat, m) -> (states, terms)
  """
  model = build_model(config)
  proxy = models.ProxIQANet()
  is_perceptual, with_proxy = perceptual(config), uses_proxy(config)
  metric = device_metric(config.metric, config.patch_size) if is_perceptual else None
  scale = config.lmbda * config.distortion_scale

  def codec_step(states, images):
    codec = states["codec"]
    codec, key = codec.next_key()
    key = parallel.fold_in_device(key)
    x = images.astype(jnp.float32) / 255.0
    num_pixels = x.shape[0] * x.shape[1] * x.shape[2]

    def loss_fn(params):
      out = model.apply({"params": params}, x, training=True, quantizer=config.quantizer, rngs={"noise": key})
      # clipped as in the authors' code: M, M_hat and the MSE see the image that would be displayed
      x_hat = jnp.clip(out["x_hat"], 0.0, 1.0)
      bpp = sum(rate_bits(lik) for lik in out["likelihoods"].values()) / num_pixels
      mse = jnp.mean(jnp.square(x - x_hat))
      terms = {"bpp": bpp, "mse": mse, "psnr": -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))}
      distortion = mse
      if with_proxy:
        m_hat = proxy.apply({"params": jax.lax.stop_gradient(states["proxy"].params)}, x, x_hat)
        proxy_loss = config.m_max - jnp.mean(m_hat)  # eq. 9
        distortion = config.alpha * proxy_loss + (1.0 - config.alpha) * mse
        terms["proxy_loss"] = proxy_loss
      elif is_perceptual:  # eq. 13-14 (Sec. IV-E): the metric itself in place of the proxy
        metric_loss = config.m_max - jnp.mean(metric(x, x_hat))
        distortion = config.alpha * metric_loss + (1.0 - config.alpha) * mse
        terms.update(metric_loss=metric_loss, metric=config.m_max - metric_loss)
      rd = scale * distortion + bpp
      aux = model.apply({"params": params}, method=type(model).aux_loss)
      terms.update(loss=rd, aux_loss=aux)
      return rd + aux, (x_hat, terms)

    grads, (x_hat, terms) = jax.grad(loss_fn, has_aux=True)(codec.params)
    grads, terms = parallel.pmean((grads, terms))
    new_states = dict(states, codec=codec.apply_gradients(grads))
    x_hat = jax.lax.stop_gradient(x_hat)
    if with_proxy and config.pristine_fraction > 0:
      # The authors' script: some pairs of the proxy's batch are (x, x), scored like any other pair (M(x, x) = 1
      # for SSIM), so the proxy learns that "no distortion" is the best score rather than scoring image content.
      pristine = jax.random.bernoulli(jax.random.fold_in(key, 1), config.pristine_fraction, x.shape[:1])
      x_hat = jnp.where(pristine[:, None, None, None], x, x_hat)
    m = metric(x, x_hat) if with_proxy and metric is not None else jnp.zeros(x.shape[:1], jnp.float32)
    return new_states, x_hat, m, terms

  def proxy_step(states, images, x_hat, m):
    state = states["proxy"]
    x = images.astype(jnp.float32) / 255.0

    def loss_fn(params):
      m_hat = proxy.apply({"params": params}, x, x_hat)
      return jnp.mean(jnp.square(m_hat - m)), m_hat  # eq. 11

    (loss, m_hat), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = parallel.pmean(grads)
    terms = parallel.pmean({"proxy_fit_loss": loss, "metric": jnp.mean(m), "metric_proxy": jnp.mean(m_hat),
                            "proxy_error": jnp.mean(jnp.abs(m_hat - m))})
    return dict(states, proxy=state.apply_gradients(grads)), terms

  return codec_step, proxy_step


class Trainer:
  """The mapped steps plus the host metric hop between them: `trainer.step(states, images) -> (states, terms)`.

  `states` and `images` are device-resident (`parallel.replicate` / `parallel.shard`).
  """

  def __init__(self, config):
    self.config = config
    self.backend = config.parallel
    codec_step, proxy_step = make_steps(config)
    self.with_proxy = uses_proxy(config)  # eq. 13 and MSE runs have no proxy step
    self._codec = parallel.data_parallel(codec_step, self.backend)
    self._proxy = parallel.data_parallel(proxy_step, self.backend)
    self._host_metric = None
    if self.with_proxy and device_metric(config.metric, config.patch_size) is None:
      self._host_metric = host_metric(config.metric)

  def step(self, states, images):
    states, x_hat, m, terms = self._codec(states, images)
    if not self.with_proxy:
      return states, terms
    if self._host_metric is not None:
      xh = np.asarray(jax.device_get(x_hat))
      x = np.asarray(jax.device_get(images)).astype(np.float32) / 255.0
      lead = xh.shape[:2]
      scores = np.asarray(self._host_metric(x.reshape(-1, *x.shape[2:]), xh.reshape(-1, *xh.shape[2:])),
                          np.float32)
      if scores.shape != (int(np.prod(lead)),):
        raise ConfigError(f"config.metric={self.config.metric!r} returned shape {scores.shape}, expected "
                          f"({int(np.prod(lead))},)")
      m = parallel.shard(scores.reshape(lead), self.backend)
    states, p_terms = self._proxy(states, images, x_hat, m)
    return states, {**terms, **p_terms}


def make_train_loader(config):
  """The training batches: random `patch_size` crops of `train_data`, `[local_devices, b, H, W, 3]` uint8."""
  source = data.get_source(config.train_data, "train")
  return data.make_loader(source, patch_size=config.patch_size, global_batch_size=config.global_batch_size,
                          seed=config.seed, num_workers=config.num_workers,
                          num_devices=parallel.local_device_count())


class ProxIQATask(harness.Task):
  """ProxIQA in the harness loop: the two states, the alternating steps, tables stored at every checkpoint."""

  def __init__(self, config):
    self.config = config
    self.trainer = Trainer(config)
    self.total_steps = int(config.steps)
    self.schedule = _schedule(config, config.learning_rate)
    self.data_iter = iter(make_train_loader(config))
    names = {"loss", "bpp", "mse", "psnr", "aux_loss"}
    if uses_proxy(config):
      names |= {"proxy_loss", "proxy_fit_loss", "metric", "metric_proxy", "proxy_error"}
    elif perceptual(config):
      names |= {"metric_loss", "metric"}
    self.metric_names = frozenset(names)

  def init_state(self):
    template = init_state(self.config)
    return dict(template, tables=codec_lib.coding_tables(self.config, template["codec"].params))

  def restore(self, ckpt, config):
    try:
      state, start = super().restore(ckpt, config)
    except CheckpointError as e:
      if "'tables/" not in str(e):
        raise
      # A checkpoint written before the tables were stored: resume it; the next save adds them.
      codec_lib.warn("resuming a checkpoint without stored coding tables; they are stored from the next checkpoint "
                     "on")
      state, start = ckpt.restore_or_init(init_state(self.config), self.data_iter)
    return {k: v for k, v in state.items() if k != "tables"}, start  # tables: derived from the params at saves

  def warm_start_parts(self):
    return ["codec/params"]

  def step(self, states, step):
    return self.trainer.step(states, parallel.shard(next(self.data_iter)["image"], self.backend))

  def learning_rate(self, state, step, scalars):
    return harness.learning_rate(self.schedule, step - 1)  # the rate of this step's update (optax counts from 0)

  def checkpoint(self, states, step):
    host = parallel.unreplicate(states)
    return dict(host, tables=codec_lib.coding_tables(self.config, host["codec"].params))


def train_and_evaluate(config, workdir: str) -> None:
  """Trains `config` in `workdir` (resuming from its latest checkpoint), then evaluates on `config.eval_data`."""
  _check_config(config)
  harness.run(config, workdir, ProxIQATask(config), evaluate=evaluation.end_of_training(config, workdir))

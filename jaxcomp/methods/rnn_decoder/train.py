"""Training of the iterative decoder with BPTT, SAB, UORO or RTRL (configs/rnn_decoder.py), a harness Task.

One loop per algorithm in the sense that matters: each step calls that algorithm's gradient estimator
(`algorithms.make_estimator(config.algorithm)`), whose computation differs entirely (reverse mode over a scan,
forward-mode influence matrices, rank-one jvp/vjp recursions, sparse attentive truncated backprop); the rest — data,
SGD with momentum and clipping, pmap over devices, orbax checkpoints with the grain iterator, preemption and NaN
guards, logging — is the shared harness (docs/training.md).

Data: grayscale images from `config.train_data` (through `jaxcomp.data.get_source`), compressed once at rates drawn
from [bpp_low, bpp_high] and cut into 3x3-neighbourhood patch examples held in memory (`patches.build_examples`);
grain shuffles and batches them. Validation PSNR (`val_psnr`) is the PSNR of the final refinement over the
validation images' patches; `codec.evaluate` (what `jaxcomp eval` runs) reassembles whole images and compares them
with the plain codec at `config.eval_bpp`.
"""

from __future__ import annotations

import hashlib

import grain.python as gp
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcomp import data, evaluation, parallel
from jaxcomp import train as harness
from jaxcomp.errors import ConfigError, DataError
from jaxcomp.methods.rnn_decoder import algorithms, models, patches
from jaxcomp.methods.rnn_decoder.codec import decoder_spec, make_decode_fn


def make_estimator(config: ml_collections.ConfigDict, spec: models.DecoderSpec,
                   batch_size: int | None = None) -> algorithms.GradientEstimator:
  """The config's gradient estimator; `batch_size` is eq. 19's B (the global batch under data parallelism)."""
  if config.algorithm == "sab":
    return algorithms.make_sab(spec, k_att=config.sab.k_att, k_top=config.sab.k_top,
                               k_trunc=config.sab.k_trunc or None, batch_size=batch_size)
  if config.algorithm == "uoro":
    return algorithms.make_uoro(spec, eps=config.uoro_eps, batch_size=batch_size)
  return algorithms.make_estimator(config.algorithm, spec, batch_size=batch_size)


def make_grad_fn(config: ml_collections.ConfigDict, spec: models.DecoderSpec):
  """Per-device `(params, batch_shard, count, key) -> (grads, terms, count)` for `parallel.data_parallel`.

  Each shard's loss is normalised by the global batch size and the shards' gradients are summed, so the result is
  the single-device gradient of the whole global batch (for UORO: an unbiased estimate of it, each device drawing
  its own signs from `key`), independent of the device count. `terms` are the whole-batch loss and the batch mean
  of the per-step PSNRs.
  """
  estimator = make_estimator(config, spec, batch_size=config.global_batch_size)

  def grad_fn(params, batch, count, key):
    grads, aux, est_state = estimator.update(params, batch, algorithms.EstimatorState(count=count),
                                             parallel.fold_in_device(key))
    grads, loss = parallel.psum((grads, aux["loss"]))
    psnr_first, psnr_last = parallel.pmean((aux["psnr_K"][0], aux["psnr_K"][-1]))
    terms = {"loss": loss, "psnr_step_K": psnr_last, "psnr_step_1": psnr_first, "grad_norm": optax.tree.norm(grads)}
    return grads, terms, est_state.count

  return grad_fn


def init_params(config: ml_collections.ConfigDict, key: jax.Array) -> models.Params:
  spec = decoder_spec(config)
  k_model, k_sab = jax.random.split(key)
  params = models.init_params(k_model, spec, scale=config.init_scale)
  if config.algorithm == "sab":
    params["sab"] = algorithms.init_sab(k_sab, spec, att_hidden=config.sab.att_hidden or None,
                                        scale=config.init_scale)
  return params


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Polynomial decay from `learning_rate` to `lr_end_fraction` of it over `decay_steps` (0: `steps`) (Sec. 3.2)."""
  return optax.polynomial_schedule(init_value=config.learning_rate,
                                   end_value=config.learning_rate * config.lr_end_fraction,
                                   power=config.lr_power,
                                   transition_steps=max(int(config.decay_steps or config.steps), 1))


def make_tx(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping at `clip_norm`, then SGD with momentum (Sec. 3.2)."""
  return optax.chain(optax.clip_by_global_norm(config.clip_norm),
                     optax.sgd(make_schedule(config), momentum=config.momentum or None))


def load_images(spec: str, split: str, max_images: int) -> list[np.ndarray]:
  """Grayscale uint8 [H, W, 1] images of a data spec (the shared `get_source`)."""
  source = data.get_source(spec, split, grayscale=True)
  n = len(source) if not max_images else min(max_images, len(source))
  if n == 0:
    raise DataError(f"data {spec!r} split {split!r} holds no images")
  return [np.asarray(source[i]["image"]) for i in range(n)]


class PatchSource:
  """In-memory random-access source of patch examples for grain (stable repr, so resumes validate)."""

  def __init__(self, examples: dict[str, np.ndarray], tag: str):
    self.q, self.target = examples["q"], examples["target"]
    digest = hashlib.sha1(self.q[:64].tobytes() + self.target[-64:].tobytes()).hexdigest()[:12]
    self._repr = f"PatchSource({tag}, n={len(self.q)}, sha1={digest})"

  def __len__(self) -> int:
    return len(self.q)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {"q": self.q[i], "target": self.target[i]}

  def __repr__(self) -> str:
    return self._repr


class _SplitDevices(gp.MapTransform):
  """[B, ...] -> [local_devices, B / local_devices, ...], the harness's batch convention."""

  def __init__(self, n: int):
    self.n = n

  def map(self, batch):
    return {k: v.reshape(self.n, -1, *v.shape[1:]) for k, v in batch.items()}


def build_data(config: ml_collections.ConfigDict) -> tuple[PatchSource, dict[str, np.ndarray]]:
  """Training source and validation examples, both compressed at rates drawn from the configured range."""
  rng_range = (config.bpp_low, config.bpp_high)
  tr = patches.build_examples(load_images(config.train_data, "train", config.max_train_images), codec=config.codec,
                              patch=config.patch_size, bpp_range=rng_range, seed=config.seed)
  va = patches.build_examples(load_images(config.train_data, "validation", config.eval_max_images),
                              codec=config.codec, patch=config.patch_size, bpp_range=rng_range, seed=config.seed + 1)
  tag = f"{config.train_data},{config.codec},{config.patch_size},{config.bpp_low}-{config.bpp_high},{config.seed}"
  return PatchSource(tr, tag), va


def make_loader(config: ml_collections.ConfigDict, source: PatchSource) -> gp.DataLoader:
  num_devices = parallel.local_device_count()
  per_process = config.global_batch_size // jax.process_count()
  sampler = gp.IndexSampler(len(source), shuffle=True, seed=config.seed, num_epochs=None,
                            shard_options=gp.ShardOptions(jax.process_index(), jax.process_count(),
                                                          drop_remainder=True))
  return gp.DataLoader(data_source=source, sampler=sampler, worker_count=0,
                       operations=[gp.Batch(per_process, drop_remainder=True), _SplitDevices(num_devices)])


def patch_psnr(decode_fn, examples: dict[str, np.ndarray], batch_size: int) -> float:
  """PSNR (data range 1) of the decoder's final outputs over all examples."""
  se, n = 0.0, 0
  q, t = examples["q"], examples["target"]
  for start in range(0, len(q), batch_size):
    chunk, tgt = q[start:start + batch_size], t[start:start + batch_size]
    pad = batch_size - len(chunk) if len(q) > batch_size else 0
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    p = np.asarray(decode_fn(chunk))[:len(tgt)]
    se += float(np.sum((p.astype(np.float64) - tgt) ** 2)); n += tgt.size
  return float(-10.0 * np.log10(max(se / n, 1e-12)))


class DecoderTask(harness.Task):
  """The iterative decoder in the harness loop: the config's gradient estimator, validation PSNR on patches."""

  def __init__(self, config: ml_collections.ConfigDict):
    if config.algorithm not in algorithms.ALGORITHMS:
      raise ConfigError(f"unknown algorithm {config.algorithm!r}; expected one of "
                        f"{', '.join(algorithms.ALGORITHMS)}")
    parallel.per_device_batch_size(config.global_batch_size)  # before the (slow) patch extraction
    self.config = config
    self.total_steps = int(config.steps)
    self.schedule = make_schedule(config)
    self.grad_fn = make_grad_fn(config, decoder_spec(config))
    source, self.val_examples = build_data(config)
    self.data_iter = iter(make_loader(config, source))
    self.metric_names = frozenset({"loss", "psnr_step_K", "psnr_step_1", "grad_norm", "val_psnr"})

    def step_fn(state, batch):
      state, key = state.next_key()
      grads, terms, count = self.grad_fn(state.params, batch, state.mutable["estimator"]["count"], key)
      return state.apply_gradients(grads, mutable={"estimator": {"count": count}}), terms

    self.p_step = parallel.data_parallel(step_fn, config.parallel)

  def init_state(self):
    params = init_params(self.config, jax.random.PRNGKey(self.config.seed))
    state = harness.TrainState.create(params=params, tx=make_tx(self.config),
                                      rng=jax.random.PRNGKey(self.config.seed + 7),
                                      mutable={"estimator": {"count": jnp.zeros((), jnp.int32)}})
    return jax.device_get(state)

  def warm_start_parts(self):
    return ["params"]

  def step(self, state, step):
    batch = next(self.data_iter)
    return self.p_step(state, parallel.shard({"q": batch["q"], "target": batch["target"]}, self.backend))

  def learning_rate(self, state, step, scalars):
    return harness.learning_rate(self.schedule, step - 1)  # the rate of this step's update (optax counts from 0)

  def validate(self, state, step):
    params = jax.device_get(parallel.unreplicate(state).params)
    return {"val_psnr": patch_psnr(make_decode_fn(self.config, params), self.val_examples,
                                   self.config.eval_batch_size)}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> None:
  harness.run(config, workdir, DecoderTask(config), evaluate=evaluation.end_of_training(config, workdir))

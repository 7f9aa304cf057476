"""A toy method, defined only in the tests, that exercises the whole harness the way a real method does.

A two-layer conv autoencoder (strided conv + synchronised BatchNorm, conv + depth-to-space) trained on synthetic
16x16 images as a `jaxcomp.train.Task` of the one loop (`jaxcomp.train.run`, docs/training.md), with a small but
real codec (`build_codec`) that `jaxcomp eval` measures like any codec method.
"""

from __future__ import annotations

import struct
import time
import zlib

import flax.linen as nn
import grain.python as gp
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcomp import parallel, train
from jaxcomp.errors import BitstreamError

MAGIC = b"TOY1"
LATENT_SCALE = 16.0


class ToyAE(nn.Module):
  """x_BHWC in [0, 1] -> latent y_Bhwk (h = H/2) -> x_hat_BHWC."""
  width: int = 4
  channels: int = 3

  def setup(self):
    self.g_a = nn.Conv(self.width, (3, 3), strides=2)
    self.bn = nn.BatchNorm(momentum=0.9, axis_name=parallel.AXIS)
    self.g_s = nn.Conv(4 * self.channels, (3, 3))

  def encode(self, x_BHWC: jax.Array, train: bool) -> jax.Array:
    return self.bn(nn.relu(self.g_a(x_BHWC)), use_running_average=not train)

  def decode(self, y_Bhwk: jax.Array) -> jax.Array:
    z = self.g_s(y_Bhwk)
    b, h, w, _ = z.shape
    z = z.reshape(b, h, w, 2, 2, self.channels).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, self.channels)
    return nn.sigmoid(z)

  def __call__(self, x_BHWC: jax.Array, train: bool = True) -> tuple[jax.Array, jax.Array]:
    y = self.encode(x_BHWC, train)
    return self.decode(y), y


class ToySource:
  """Deterministic smooth random images: record i is a 4x4 colour grid upsampled to `size`."""

  def __init__(self, n: int, size: int):
    self.n, self.size = n, size

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    grid = np.random.default_rng(int(i)).integers(0, 256, size=(4, 4, 3))
    return {"image": np.kron(grid, np.ones((self.size // 4, self.size // 4, 1))).astype(np.uint8)}

  def __repr__(self) -> str:  # grain validates the source's repr on resume: it must not contain an address
    return f"ToySource(n={self.n}, size={self.size})"


class _LocalDevicesSlice(gp.MapTransform):
  """Global batch [B, ...] -> this process's devices' part, [local_devices, B / devices, ...].

  Every process reads the same global batch and keeps its slice, so a run is identical for any number of processes
  (the toy's choice, which the multi-process test relies on; real methods shard the records instead).
  """

  def __init__(self, num_devices: int, local_devices: int, process_index: int):
    self.num_devices, self.local, self.first = num_devices, local_devices, process_index * local_devices

  def map(self, batch):
    return {k: v.reshape(self.num_devices, -1, *v.shape[1:])[self.first:self.first + self.local]
            for k, v in batch.items()}


def make_loader(config) -> gp.DataLoader:
  source = ToySource(64, config.image_size)
  sampler = gp.IndexSampler(len(source), shuffle=True, seed=config.seed, num_epochs=None,
                            shard_options=gp.NoSharding())
  return gp.DataLoader(data_source=source, sampler=sampler, worker_count=0,
                       operations=[gp.Batch(config.global_batch_size, drop_remainder=True),
                                   _LocalDevicesSlice(parallel.device_count(), parallel.local_device_count(),
                                                      jax.process_index())])


def _model(config) -> ToyAE:
  return ToyAE(width=config.width, channels=1 if config.grayscale else 3)


def _init_host_state(config) -> train.TrainState:
  model = _model(config)
  tx = optax.adam(config.learning_rate) if config.optimizer == "adam" else optax.sgd(config.learning_rate, 0.9)
  x0 = jnp.zeros((1, config.image_size, config.image_size, model.channels))

  @jax.jit  # one compilation for the whole initial state, rather than one per eager op
  def init(key):
    init_key, state_key = jax.random.split(key)
    return train.TrainState.from_variables(model.init(init_key, x0, train=False), tx=tx, rng=state_key)

  return jax.device_get(init(jax.random.PRNGKey(config.seed)))


class ToyTask(train.Task):
  """The toy in the harness loop (`jaxcomp.train.run`), as a real method plugs in."""

  def __init__(self, config):
    self.config = config
    self.total_steps = config.steps
    self.data_iter = iter(make_loader(config))
    self.metric_names = frozenset({"loss", "mse", "latent_l1"})
    model = _model(config)
    nan_at = config.nan_at_step

    def step_fn(state, images_uint8):
      state, key = state.next_key()
      noise = 0.01 * jax.random.normal(parallel.fold_in_device(key), images_uint8.shape)
      x = images_uint8.astype(jnp.float32) / 255.0

      def loss_fn(params):
        (x_hat, y), new_vars = model.apply({"params": params, **state.mutable}, x + noise, mutable=["batch_stats"])
        mse = jnp.mean((x_hat - x) ** 2)
        latent = jnp.mean(jnp.abs(y))
        loss = mse + config.lambda_latent * latent
        loss = jnp.where(state.step + 1 == nan_at, jnp.nan, loss)  # test hook
        return loss, (new_vars, {"loss": loss, "mse": mse, "latent_l1": latent})

      grads, (new_vars, terms) = jax.grad(loss_fn, has_aux=True)(state.params)
      grads, terms = parallel.pmean((grads, terms))
      return state.apply_gradients(grads, mutable=new_vars), terms

    self.p_step = parallel.data_parallel(step_fn, config.parallel)

  def init_state(self):
    return _init_host_state(self.config)

  def step(self, state, step):
    state, terms = self.p_step(state, parallel.shard(next(self.data_iter)["image"], self.backend))
    if self.config.sleep_per_step:
      time.sleep(self.config.sleep_per_step)
    return state, terms

  def learning_rate(self, state, step, scalars):
    return self.config.learning_rate


def train_and_evaluate(config, workdir: str) -> None:
  train.run(config, workdir, ToyTask(config))


# ----------------------------------------------------------------------------------------------------------------
# Evaluation and codec, from the workdir alone.


def _variables(state) -> dict:
  return {"params": state["params"], **state["mutable"]}


def _even_crop(image: np.ndarray) -> np.ndarray:
  h, w = image.shape[:2]
  return image[: h - h % 2, : w - w % 2]


class ToyCodec:
  """Latent rounded to int8 (scale 16), zlib-compressed, behind a 4-byte magic and the image size."""

  def __init__(self, config, state):
    model = _model(config)
    variables = _variables(state)
    self._encode = jax.jit(lambda x: model.apply(variables, x, False, method=ToyAE.encode))
    self._decode = jax.jit(lambda y: model.apply(variables, y, method=ToyAE.decode))

  def compress(self, image_HWC: np.ndarray) -> bytes:
    h, w = image_HWC.shape[:2]
    x = np.pad(image_HWC, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")[None].astype(np.float32) / 255.0
    q = np.clip(np.round(np.asarray(self._encode(x)) * LATENT_SCALE), -128, 127).astype(np.int8)
    return MAGIC + struct.pack(">HH", h, w) + zlib.compress(q.tobytes(), 9)

  def decompress(self, data: bytes) -> np.ndarray:
    if len(data) < 8 or data[:4] != MAGIC:
      raise BitstreamError("not a toy bitstream (bad magic)")
    h, w = struct.unpack(">HH", data[4:8])
    q = np.frombuffer(zlib.decompress(data[8:]), np.int8)
    hh, ww = (h + 1) // 2, (w + 1) // 2
    y = q.reshape(1, hh, ww, -1).astype(np.float32) / LATENT_SCALE
    x_hat = np.asarray(self._decode(y))[0, :h, :w]
    return np.clip(np.round(x_hat * 255.0), 0, 255).astype(np.uint8)


def build_codec(config, state) -> ToyCodec:
  return ToyCodec(config, state)

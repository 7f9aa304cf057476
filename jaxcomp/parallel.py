"""Data parallelism: the ONLY module in jaxcomp that calls `jax.pmap` or `jax.shard_map`.

One calling convention for both backends (`config.parallel = "pmap" | "shard_map"`):

* train state replicated with a leading device axis (`replicate` / `unreplicate`);
* batches shaped `[devices, per_device_batch, ...]` (what `jaxcomp.data.make_loader(num_devices=...)` yields), put on
  the devices with `shard`;
* a per-device step function `step_fn(state, batch, ...)` written as if it ran on one device, which averages its
  gradients and metrics with `pmean` over the named axis `AXIS` and may use `flax.linen.BatchNorm(axis_name=AXIS)`
  for synchronised statistics. `data_parallel(step_fn, backend)` maps it over the device axis.

The `pmap` backend is the design card's choice; `shard_map` over a 1-D mesh runs the same per-device function through
`jit` (pmap is in maintenance mode in current JAX). Both give the same numbers (tests/test_parallel.py).

Multi-host: call `initialize_distributed()` first thing (the launch scripts set the environment it reads); each host
feeds its local devices' batch slices, and only `is_main_process()` writes logs.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcomp.errors import ConfigError

PyTree = Any
Backend = Literal["pmap", "shard_map"]

AXIS = "batch"
"""Name of the data-parallel axis: `lax` collectives and `nn.BatchNorm(axis_name=...)` use it."""

BACKENDS = ("pmap", "shard_map")


def _check_backend(backend: str) -> None:
  if backend not in BACKENDS:
    raise ConfigError(f"config.parallel={backend!r} is not one of {BACKENDS}")


# ----------------------------------------------------------------------------------------------------------------
# Collectives, used inside a per-device step function.


def pmean(x: PyTree) -> PyTree:
  """Mean of every leaf over the data-parallel devices (gradients, metrics)."""
  return jax.lax.pmean(x, AXIS)


def psum(x: PyTree) -> PyTree:
  """Sum of every leaf over the data-parallel devices (counts, bits)."""
  return jax.lax.psum(x, AXIS)


def pmax(x: PyTree) -> PyTree:
  """Maximum of every leaf over the data-parallel devices."""
  return jax.lax.pmax(x, AXIS)


def axis_index() -> jax.Array:
  """Global index of the current device along `AXIS` (inside a mapped step)."""
  return jax.lax.axis_index(AXIS)


def fold_in_device(key: jax.Array) -> jax.Array:
  """A key that differs per device, from a key that is the same on every device (inside a mapped step).

  Keeping one replicated key in the train state and folding in the device index at use keeps runs on different
  device counts comparable and the state identical on all devices.
  """
  return jax.random.fold_in(key, axis_index())


# ----------------------------------------------------------------------------------------------------------------
# Process / device topology.


def initialize_distributed() -> bool:
  """Joins a multi-host job when the environment says there is one; returns True if it did.

  Reads `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` (set by launch/gpu_multihost.sh), or
  `JAXCOMP_DISTRIBUTED=1` to let JAX detect the cluster itself (Cloud TPU VM slices, SLURM; set by launch/tpu_vm.sh).
  A plain single-host run sets none of them and nothing happens. Must run before any other JAX call.
  """
  coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if coordinator:
    num = os.environ.get("JAX_NUM_PROCESSES")
    pid = os.environ.get("JAX_PROCESS_ID")
    if num is None or pid is None:
      raise ConfigError("JAX_COORDINATOR_ADDRESS is set but JAX_NUM_PROCESSES or JAX_PROCESS_ID is missing")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=int(num), process_id=int(pid))
    return True
  if os.environ.get("JAXCOMP_DISTRIBUTED", "") not in ("", "0"):
    jax.distributed.initialize()
    return True
  return False


def is_main_process() -> bool:
  """True on process 0: the only one that writes logs and prints progress."""
  return jax.process_index() == 0


def local_device_count() -> int:
  """Leading-axis size of replicated state and of batches on this host."""
  return jax.local_device_count()


def device_count() -> int:
  """Number of devices across all hosts (the global batch is split over these)."""
  return jax.device_count()


def per_device_batch_size(global_batch_size: int) -> int:
  """Examples per device when `global_batch_size` is split over every device of every host.

  Raises ConfigError naming the value when it does not divide evenly (config.global_batch_size is the culprit).
  """
  n = device_count()
  if global_batch_size <= 0 or global_batch_size % n:
    raise ConfigError(f"config.global_batch_size={global_batch_size} must be a positive multiple of the {n} devices")
  return global_batch_size // n


@functools.lru_cache(maxsize=None)
def _mesh(backend: str) -> Mesh:
  # pmap consumes process-local arrays (local devices); shard_map works on global arrays over every device.
  devices = jax.local_devices() if backend == "pmap" else jax.devices()
  return Mesh(np.asarray(devices), (AXIS,))


def mesh(backend: Backend = "shard_map") -> Mesh:
  """The 1-D data mesh (axis `AXIS`) that `shard` places arrays on."""
  _check_backend(backend)
  return _mesh(backend)


# ----------------------------------------------------------------------------------------------------------------
# Moving data onto and off the devices.


def shard(tree: PyTree, backend: Backend = "pmap") -> PyTree:
  """Places host arrays shaped `[local_devices, ...]` on the devices, slice i on local device i.

  With `shard_map` on several hosts the result is a global array `[devices, ...]` assembled from every host's local
  slices, so the step sees the whole global batch.
  """
  _check_backend(backend)
  sharding = NamedSharding(_mesh(backend), P(AXIS))
  n = local_device_count()

  def put(x):
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    if x.ndim == 0 or x.shape[0] != n:
      raise ValueError(f"expected a leading axis of {n} local devices, got shape {x.shape}")
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, tree)


def replicate(tree: PyTree, backend: Backend = "pmap") -> PyTree:
  """Copies a host pytree onto every local device, adding a leading device axis."""
  n = local_device_count()
  return shard(jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), tree), backend)


def unreplicate(tree: PyTree) -> PyTree:
  """The first local device's copy of a replicated pytree, as host numpy arrays (for logging and checkpoints)."""

  def first(x):
    # To host before indexing: indexing a device array would compile a tiny XLA program per leaf shape.
    if isinstance(x, jax.Array):
      return np.asarray(x.addressable_data(0))[0]
    return np.asarray(x)[0]

  return jax.tree.map(first, tree)


def device_keys(key: jax.Array, backend: Backend = "pmap") -> jax.Array:
  """One PRNG key per local device, folded from `key` with the device's global index; shape `[local_devices, 2]`.

  For step functions that want a distinct key argument per device (rather than `fold_in_device` inside).
  """
  n = local_device_count()
  first = jax.process_index() * n
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(first, first + n))
  return shard(np.asarray(keys), backend)


# ----------------------------------------------------------------------------------------------------------------
# Mapping a per-device step.


def data_parallel(
    step_fn: Callable[..., Any],
    backend: Backend = "pmap",
    donate_argnums: int | Sequence[int] = (0,),
) -> Callable[..., Any]:
  """Maps a per-device function over the leading device axis of all its arguments and results.

  Args:
    step_fn: `step_fn(*args) -> outputs`, written for one device; every argument and output leaf is an array (the
      mapped function adds/strips the device axis). Uses `pmean`/`psum` and `AXIS` for cross-device reductions.
    backend: "pmap" (`jax.pmap`) or "shard_map" (`jax.jit` of `jax.shard_map` over the 1-D mesh).
    donate_argnums: arguments whose buffers XLA may reuse for the outputs (the train state, by default), which
      halves the state's memory; a donated argument must not be used after the call.

  Returns:
    `fn(*args)` taking arrays shaped `[local_devices, ...]` (from `replicate`/`shard`) and returning outputs of the
    same form; pmean-ed outputs are identical along the device axis.
  """
  _check_backend(backend)
  donate = (donate_argnums,) if isinstance(donate_argnums, int) else tuple(donate_argnums)
  if backend == "pmap":
    return jax.pmap(step_fn, axis_name=AXIS, donate_argnums=donate)

  def per_block(*args):
    # shard_map hands each device a [1, ...] block of the device axis; the step sees what pmap would give it.
    out = step_fn(*jax.tree.map(lambda x: x[0], args))
    return jax.tree.map(lambda x: jnp.expand_dims(x, 0), out)

  # check_vma=False keeps pmap's collective semantics (the transpose of a psum is a psum), which synchronised
  # BatchNorm's gradient relies on to equal the global-batch gradient.
  mapped = jax.shard_map(per_block, mesh=_mesh(backend), in_specs=P(AXIS), out_specs=P(AXIS), check_vma=False)
  return jax.jit(mapped, donate_argnums=donate)

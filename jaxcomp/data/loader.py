"""The grain loader: seeded random crops and flips, per-host sharding, batches with an optional device axis.

Reproducibility: grain derives each record's `np.random.Generator` from the loader seed and the record's position
in the global (pre-shard) sampling order, so the order, the crops and the flips depend only on `seed` — not on the
number of worker processes — and resuming from `iterator.get_state()` continues exactly where it left off.

Small-image rule: an image smaller than the crop in height or width is first reflect-padded (`numpy.pad`,
`mode="reflect"`, the edge pixel not repeated) to at least the crop size, with the padding split evenly between the
two sides (the extra pixel of an odd amount goes after). We pad rather than upscale because resampling would blur
the image and make it artificially easy to compress; padding keeps every pixel as captured.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Sequence

import grain.python as grain
import numpy as np

from jaxcomp.errors import ConfigError


def pad_to_at_least(image_HWC: np.ndarray, height: int, width: int) -> np.ndarray:
  """Reflect-pads `image_HWC` so that H >= height and W >= width (the module's small-image rule)."""
  h, w = image_HWC.shape[:2]
  ph, pw = max(height - h, 0), max(width - w, 0)
  if ph == 0 and pw == 0:
    return image_HWC
  # numpy's reflect cannot mirror a 1-pixel axis; repeating the only pixel is the only sensible extension there.
  mode_h = "reflect" if h > 1 else "edge"
  mode_w = "reflect" if w > 1 else "edge"
  out = np.pad(image_HWC, ((ph // 2, ph - ph // 2), (0, 0), (0, 0)), mode=mode_h)
  return np.pad(out, ((0, 0), (pw // 2, pw - pw // 2), (0, 0)), mode=mode_w)


class RandomCropFlip(grain.RandomMapTransform):
  """`{"image": [H, W, C], ...}` -> `{"image": [h, w, C]}`: small-image pad, uniform random crop, optional h-flip.

  Other keys (e.g. the `name` string) are dropped so records batch into plain arrays.
  """

  def __init__(self, patch_size: tuple[int, int], flips: bool = True):
    self.crop_h, self.crop_w = patch_size
    self.flips = flips

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
    img = pad_to_at_least(element["image"], self.crop_h, self.crop_w)
    h, w = img.shape[:2]
    y = int(rng.integers(0, h - self.crop_h + 1))
    x = int(rng.integers(0, w - self.crop_w + 1))
    out = img[y:y + self.crop_h, x:x + self.crop_w]
    # Always draw, so the stream of random numbers (hence later crops) does not depend on `flips`.
    if rng.random() < 0.5 and self.flips:
      out = out[:, ::-1]
    return {"image": np.ascontiguousarray(out)}


class EpochShuffle(grain.MapDataset):
  """Repeats `parent` for `num_epochs` (None: endless); epoch e reads it in the order
  `np.random.default_rng([seed, e]).permutation(len(parent))`, or in order when `shuffle=False`.

  Replaces grain's `shuffle().repeat()`: its per-record Feistel index shuffle cost ~2.5 ms per record on this
  machine, more than cropping a cached image; this permutation is drawn once per epoch.
  """

  def __init__(self, parent: grain.MapDataset, *, seed: int, shuffle: bool = True, num_epochs: int | None = None):
    super().__init__(parent)
    self._n = len(parent)
    self._seed, self._shuffle, self._num_epochs = seed, shuffle, num_epochs
    self._perm: tuple[int, np.ndarray | None] = (-1, None)  # (epoch, permutation) of the last epoch read

  def __len__(self) -> int:
    return sys.maxsize if self._num_epochs is None else self._n * self._num_epochs

  def __str__(self) -> str:
    return f"EpochShuffle(seed={self._seed}, shuffle={self._shuffle}, num_epochs={self._num_epochs})"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, i = divmod(int(index), self._n)
    if self._shuffle:
      last_epoch, perm = self._perm
      if last_epoch != epoch:
        perm = np.random.default_rng([self._seed, epoch]).permutation(self._n)
        self._perm = (epoch, perm)  # one tuple store: safe under grain's reader threads
      i = int(perm[i])
    return self._parent[i]


class SplitDevices(grain.MapTransform):
  """Reshapes every batch leaf `[B, ...]` to `[num_devices, B // num_devices, ...]` for `pmap`."""

  def __init__(self, num_devices: int):
    self.num_devices = num_devices

  def map(self, element: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.reshape((self.num_devices, v.shape[0] // self.num_devices) + v.shape[1:])
            for k, v in element.items()}


def _crop_hw(patch_size: int | Sequence[int]) -> tuple[int, int]:
  hw = (patch_size, patch_size) if isinstance(patch_size, (int, np.integer)) else tuple(patch_size)
  if len(hw) != 2 or any(int(v) != v or v < 1 for v in hw):
    raise ConfigError(f"patch_size={patch_size!r}: must be a positive int or a pair (height, width)")
  return int(hw[0]), int(hw[1])


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  if (shard_index is None) != (shard_count is None):
    raise ConfigError(f"shard_index={shard_index}, shard_count={shard_count}: give both or neither")
  if shard_index is None:
    import jax  # noqa: PLC0415 - only the default needs it; workers never reach this

    shard_index, shard_count = jax.process_index(), jax.process_count()
  if not 0 <= shard_index < shard_count:
    raise ConfigError(f"shard_index={shard_index}: must be in [0, shard_count={shard_count})")
  return int(shard_index), int(shard_count)


def _ensure_absl_flags_parsed() -> None:
  """Grain's worker pool reads absl flags; outside `absl.app.run` (pytest, notebooks, our CLI) nobody parsed them,
  so take the defaults rather than fail."""
  from absl import flags  # noqa: PLC0415

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


@dataclasses.dataclass(frozen=True)
class LoaderOptions:
  """The `make_loader` settings training leaves at their defaults: epochs, order, host shard, prefetching.

  Attributes:
    num_epochs: passes over the data, `None` for endless.
    shuffle: shuffle the order, anew each epoch.
    shard_index, shard_count: this host's shard; default `jax.process_index()`, `jax.process_count()`. Host i
      reads records `i, i + shard_count, ...`; a remainder of records that does not divide by `shard_count` is
      dropped so all hosts take the same number of steps.
    worker_buffer_size: batches each worker prepares ahead.
    read_threads: threads reading and transforming records in each process.
  """
  num_epochs: int | None = None
  shuffle: bool = True
  shard_index: int | None = None
  shard_count: int | None = None
  worker_buffer_size: int = 2
  read_threads: int = 4


def make_loader(source: grain.RandomAccessDataSource, *, patch_size: int | Sequence[int], global_batch_size: int,
                seed: int, flips: bool = True, num_workers: int = 0, num_devices: int | None = None,
                transforms: Sequence[grain.Transformation] = (),
                options: LoaderOptions = LoaderOptions()) -> grain.IterDataset:
  """A grain pipeline of random crops from `source` (records `{"image": uint8 [H, W, C], ...}`).

  `iter(loader)` yields `{"image": uint8 [B, h, w, C], ...}` with `B = global_batch_size // shard_count` (this
  host's share), or `[num_devices, B // num_devices, h, w, C]` when `num_devices` is given; keys added by
  `transforms` (e.g. `jaxcomp.data.transforms.Degrade`) are batched the same way. The iterator's `get_state()` /
  `set_state()` checkpoint and restore the position (`grain.checkpoint.CheckpointSave` / `CheckpointRestore`
  accept it).

  Built on grain's dataset API rather than `grain.DataLoader`: the DataLoader forms each batch inside one worker
  from that worker's records, so batches would change with `num_workers`; here batch i is always records
  `[i B, (i + 1) B)` of the shuffled stream and workers only compute whole batches in turn.

  Args:
    source: e.g. `jaxcomp.data.get_source(...)`.
    patch_size: crop height = width, or `(height, width)`.
    global_batch_size: batch over all hosts; must divide by `shard_count` (and the host batch by `num_devices`).
    seed: fixes the order, crops and flips.
    flips: random horizontal flips (probability 1/2).
    num_workers: grain worker processes (0: read in this process). Does not change the batches.
    num_devices: add a leading device axis for `pmap`.
    transforms: grain transforms (`MapTransform` or `RandomMapTransform`) applied to each cropped record before
      batching.
    options: epochs, shuffling, this host's shard and prefetching (`LoaderOptions`; defaults: endless, shuffled,
      the jax process's shard). Incomplete last batches are dropped (static shapes).

  Raises:
    ConfigError: bad sizes or shard arguments.
  """
  crop_hw = _crop_hw(patch_size)
  num_epochs = options.num_epochs
  shard_index, shard_count = _shard(options.shard_index, options.shard_count)
  if global_batch_size < 1 or global_batch_size % shard_count:
    raise ConfigError(f"global_batch_size={global_batch_size}: must be a positive multiple of "
                      f"shard_count={shard_count}")
  host_batch = global_batch_size // shard_count
  if num_devices is not None and (num_devices < 1 or host_batch % num_devices):
    raise ConfigError(f"num_devices={num_devices}: must divide the per-host batch {host_batch}")
  if num_epochs is not None and num_epochs < 1:
    raise ConfigError(f"num_epochs={num_epochs}: must be >= 1 or None")
  if len(source) < shard_count:
    raise ConfigError(f"{source!r} has {len(source)} record(s), fewer than shard_count={shard_count}")

  ds = grain.MapDataset.source(source)
  ds = ds[: len(source) - len(source) % shard_count][shard_index::shard_count]
  ds = EpochShuffle(ds, seed=seed, shuffle=options.shuffle, num_epochs=num_epochs)
  # Each record's generator comes from (seed, position in the stream): crops differ across epochs, not workers.
  ds = ds.random_map(RandomCropFlip(crop_hw, flips), seed=seed)
  for i, t in enumerate(transforms):
    ds = ds.random_map(t, seed=seed + 1 + i) if isinstance(t, grain.RandomMapTransform) else ds.map(t)
  ds = ds.batch(host_batch, drop_remainder=True)
  if num_devices is not None:
    ds = ds.map(SplitDevices(num_devices))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=options.read_threads, prefetch_buffer_size=2 * host_batch))
  if num_workers:
    _ensure_absl_flags_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                    per_worker_buffer_size=options.worker_buffer_size))
  return it

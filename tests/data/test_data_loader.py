"""grain loader: reproducible seeded crops, workers, per-host shards, device axis, epochs, checkpoint / resume."""

from __future__ import annotations

import dataclasses
import itertools
import json

import chex
import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from jaxcomp.data import LoaderOptions, get_source, make_loader, pad_to_at_least
from jaxcomp.data.transforms import Degrade, Jpeg
from jaxcomp.errors import ConfigError
from data_test_images import random_rgb


class ListSource:
  """In-memory records for the fast tests; same record layout as `get_source`."""

  def __init__(self, images):
    self.images = images

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {"image": self.images[i], "name": f"r{i}"}

  def __repr__(self):
    return f"ListSource({len(self)})"


IMAGES = [random_rgb(100 + i, 20, 24) for i in range(12)]
SRC = ListSource(IMAGES)


def take(loader, n=None):
  it = iter(loader)
  return [b for b in (itertools.islice(it, n) if n else it)]


def kw(**over):
  """`make_loader` keywords; `over` may name `LoaderOptions` fields too (by default this host is shard 0 of 1)."""
  merged = {**dict(patch_size=8, global_batch_size=4, seed=0, shard_index=0, shard_count=1), **over}
  options = {f.name: merged.pop(f.name) for f in dataclasses.fields(LoaderOptions) if f.name in merged}
  return {**merged, "options": LoaderOptions(**options)}


def identify(img, images=IMAGES):
  """(source index, y, x, flipped) of a crop, by exhaustive search: an independent check of the crop rule."""
  h, w = img.shape[:2]
  for k, a in enumerate(images):
    for y in range(a.shape[0] - h + 1):
      for x in range(a.shape[1] - w + 1):
        win = a[y:y + h, x:x + w]
        if np.array_equal(win, img):
          return k, y, x, False
        if np.array_equal(win[:, ::-1], img):
          return k, y, x, True
  raise AssertionError("crop not found in any source image")


def test_batches_are_random_crops_and_flips_of_sources():
  batches = take(make_loader(SRC, **kw(num_epochs=1)))
  assert len(batches) == 3
  found = [identify(img) for b in batches for img in b["image"]]
  chex.assert_shape(batches[0]["image"], (4, 8, 8, 3))
  assert sorted(f[0] for f in found) == list(range(12))  # one epoch: every image once
  assert any(f[3] for f in found) and not all(f[3] for f in found)  # both flipped and not
  assert len({(f[1], f[2]) for f in found}) > 3  # positions vary
  no_flip = take(make_loader(SRC, **kw(num_epochs=1, flips=False)))
  assert not any(identify(img)[3] for b in no_flip for img in b["image"])


def test_same_seed_same_batches_other_seed_differs():
  a, b = take(make_loader(SRC, **kw()), 5), take(make_loader(SRC, **kw()), 5)
  c = take(make_loader(SRC, **kw(seed=1)), 5)
  chex.assert_trees_all_equal(a, b)
  assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))


def test_multiple_epochs_visit_each_image_once_per_epoch():
  batches = take(make_loader(SRC, **kw(num_epochs=3, patch_size=(20, 24), flips=False)))
  ids = [identify(img)[0] for b in batches for img in b["image"]]
  assert len(ids) == 36
  epochs = [ids[i * 12:(i + 1) * 12] for i in range(3)]
  assert all(sorted(e) == list(range(12)) for e in epochs)
  assert epochs[0] != epochs[1]  # reshuffled each epoch
  ordered = take(make_loader(SRC, **kw(num_epochs=1, shuffle=False, patch_size=(20, 24), flips=False)))
  assert [identify(img)[0] for b in ordered for img in b["image"]] == list(range(12))


def test_shards_are_disjoint_and_cover():
  per_shard = []
  for i in range(2):
    bs = take(make_loader(SRC, **kw(num_epochs=1, patch_size=(20, 24), flips=False, shard_index=i, shard_count=2)))
    chex.assert_shape(bs[0]["image"], (2, 20, 24, 3))  # host batch = global 4 / 2 hosts
    per_shard.append([identify(img)[0] for b in bs for img in b["image"]])
  assert len(per_shard[0]) == len(per_shard[1]) == 6
  assert set(per_shard[0]).isdisjoint(per_shard[1]) and set(per_shard[0]) | set(per_shard[1]) == set(range(12))


def test_uneven_shards_drop_the_remainder():
  src = ListSource(IMAGES[:11])
  counts = [sum(len(b["image"]) for b in take(make_loader(src, **kw(num_epochs=1, global_batch_size=2,
                                                                     shard_index=i, shard_count=2))))
            for i in range(2)]
  assert counts == [5, 5]


def test_device_axis_is_a_reshape_of_the_flat_batch():
  flat = take(make_loader(SRC, **kw(global_batch_size=8)), 2)
  dev = take(make_loader(SRC, **kw(global_batch_size=8, num_devices=4,
                                   transforms=(Degrade(Jpeg(50)),))), 2)
  chex.assert_shape(dev[0]["image"], (4, 2, 8, 8, 3))
  chex.assert_shape(dev[0]["degraded"], (4, 2, 8, 8, 3))
  chex.assert_shape(dev[0]["degraded_num_bytes"], (4, 2))
  for f, d in zip(flat, dev):
    np.testing.assert_array_equal(d["image"].reshape(f["image"].shape), f["image"])
  assert (dev[0]["degraded_num_bytes"] > 100).all()


def test_resume_from_state_gives_identical_continuation():
  it = iter(make_loader(SRC, **kw()))
  for _ in range(4):  # crosses the first epoch boundary (3 batches / epoch)
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # what grain's orbax handler writes
  rest = [next(it) for _ in range(5)]
  it2 = iter(make_loader(SRC, **kw()))
  it2.set_state(state)
  chex.assert_trees_all_equal(rest, [next(it2) for _ in range(5)])


def test_orbax_checkpoint_round_trip_of_the_iterator(tmp_path):
  """The harness path: grain's orbax handler saves the iterator state and restores it into a fresh iterator."""
  import grain
  import orbax.checkpoint as ocp

  it = iter(make_loader(SRC, **kw()))
  next(it), next(it)
  mngr = ocp.CheckpointManager(tmp_path, item_handlers={"data": grain.checkpoint.CheckpointHandler()})
  mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  want = [next(it) for _ in range(3)]
  it2 = iter(make_loader(SRC, **kw()))
  mngr.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(it2)))
  chex.assert_trees_all_equal([next(it2) for _ in range(3)], want)


@pytest.mark.slow  # starts 4 worker processes (~10 s on 2 cores)
def test_workers_give_the_same_batches_and_resume(folder12, data_dir):
  """The real tfds source, pickled into 2 grain worker processes, gives what the in-process loader gives."""
  src = get_source(folder12[0], "all", data_dir=data_dir)
  k = kw(num_epochs=2, patch_size=(8, 12))
  serial = take(make_loader(src, **k))
  it = iter(make_loader(src, **k, num_workers=2))
  parallel = [next(it) for _ in range(2)]
  state = json.loads(json.dumps(it.get_state()))  # what grain's orbax handler writes
  it2 = iter(make_loader(src, **k, num_workers=2))
  it2.set_state(state)
  parallel += list(it2)
  assert len(serial) == 6
  chex.assert_trees_all_equal(serial, parallel)


def reflect_index(i: int, n: int) -> int:
  """Closed form of mirror padding without edge repeat: period 2(n - 1)."""
  if n == 1:
    return 0
  p = i % (2 * (n - 1))
  return p if p < n else 2 * (n - 1) - p


@pytest.mark.parametrize("hw", [(5, 7), (1, 3), (2, 30), (20, 24)])
def test_small_image_rule_reflect_pads_evenly(hw):
  a = random_rgb(7, *hw)
  out = pad_to_at_least(a, 12, 16)
  h, w = hw
  H, W = max(h, 12), max(w, 16)
  chex.assert_shape(out, (H, W, 3))
  top, left = (H - h) // 2, (W - w) // 2
  ref = a[[reflect_index(y - top, h) for y in range(H)]][:, [reflect_index(x - left, w) for x in range(W)]]
  np.testing.assert_array_equal(out, ref)


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(h=st.integers(1, 9), w=st.integers(1, 9), ch=st.integers(1, 25), cw=st.integers(1, 25))
def test_small_image_rule_property(h, w, ch, cw):
  a = np.arange(h * w, dtype=np.int32).reshape(h, w, 1)
  out = pad_to_at_least(a, ch, cw)
  H, W = max(h, ch), max(w, cw)
  top, left = (H - h) // 2, (W - w) // 2
  ref = a[[reflect_index(y - top, h) for y in range(H)]][:, [reflect_index(x - left, w) for x in range(W)]]
  np.testing.assert_array_equal(out, ref)


def test_images_smaller_than_the_crop_do_not_crash():
  src = ListSource([random_rgb(1, 5, 7), random_rgb(2, 40, 3)])
  b = take(make_loader(src, **kw(global_batch_size=2, patch_size=16, flips=False)), 1)[0]
  chex.assert_shape(b["image"], (2, 16, 16, 3))
  padded = [pad_to_at_least(src[i]["image"], 16, 16) for i in range(2)]
  identify(b["image"][0], padded)


def test_bad_arguments_raise_config_error():
  for over in [dict(global_batch_size=3, shard_count=2, shard_index=0), dict(num_devices=3),
               dict(shard_index=2, shard_count=2), dict(shard_index=None, shard_count=2), dict(patch_size=0),
               dict(patch_size=(4, 4, 4)), dict(num_epochs=0)]:
    with pytest.raises(ConfigError):
      make_loader(SRC, **kw(**over))


def test_default_shard_is_this_jax_process():
  b = take(make_loader(SRC, patch_size=8, global_batch_size=4, seed=0), 1)[0]
  chex.assert_shape(b["image"], (4, 8, 8, 3))  # one process: the host batch is the global batch

"""tfds folder builder, `sample`, named tfds datasets and `get_source` errors — all without TensorFlow."""

from __future__ import annotations

import io
import pathlib

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxcomp.data import assign_splits, build_folder, get_source, read_image, sample_files
from jaxcomp.data.builders import split_fraction
from jaxcomp.errors import DataError
from data_test_images import png16_bytes, random_rgb, write_images


def records(src) -> dict[str, np.ndarray]:
  return {src[i]["name"]: src[i]["image"] for i in range(len(src))}


def test_folder_round_trip_and_split(folder12, data_dir):
  folder, images = folder12
  train, val = (records(get_source(folder, s, data_dir=data_dir)) for s in ("train", "validation"))
  everything = records(get_source(folder, "all", data_dir=data_dir))
  assert set(train).isdisjoint(val) and set(train) | set(val) == set(everything)
  assert len(everything) == 12 and len(val) >= 1
  for i, a in enumerate(images):
    np.testing.assert_array_equal(everything[f"img_{i:03d}.png"], a)
  # The documented rule, recomputed independently of the builder.
  expected_val = {n for n in everything if split_fraction(n) < 0.1} or {min(everything, key=split_fraction)}
  assert set(val) == expected_val


def test_split_rule_is_per_file_stable():
  names = [f"f{i}.png" for i in range(200)]
  s = assign_splits(names, 0.2)
  assert 20 <= len(s["validation"]) <= 60  # ~40 expected from a uniform hash
  s2 = assign_splits(names + [f"g{i}.png" for i in range(50)], 0.2)
  assert set(s["validation"]) <= set(s2["validation"]) and set(s["train"]) <= set(s2["train"])
  assert assign_splits(["a.png"], 0.1) == {"train": ["a.png"], "validation": []}
  with pytest.raises(DataError):
    assign_splits(names, 1.0)


def test_all_formats_modes_and_bad_files(tmp_path, data_dir):
  """Every supported kind of file lands in canonical form; bad files are skipped, named and counted."""
  folder = tmp_path / "mixed"
  (folder / "sub").mkdir(parents=True)
  a = random_rgb(20)
  Image.fromarray(a).save(folder / "rgb.png")
  Image.fromarray(a).save(folder / "rgb.bmp")
  Image.fromarray(a).save(folder / "sub" / "rgb.tiff")
  Image.fromarray(a).save(folder / "q.jpg", quality=90)
  Image.fromarray(a[..., 0]).save(folder / "gray.png")
  Image.fromarray(np.dstack([a, a[..., :1]])).save(folder / "rgba.png")
  Image.fromarray(a).quantize(16).save(folder / "pal.png")
  (folder / "c16.png").write_bytes(png16_bytes(a.astype(np.uint16) * 257))
  Image.fromarray(a[..., 1].astype(np.uint16) * 257).save(folder / "sub" / "g16.tif")
  # Bad ones:
  (folder / "empty.png").write_bytes(b"")
  (folder / "notes.txt").write_text("not an image")
  buf = io.BytesIO()
  Image.fromarray(random_rgb(21, 64, 64)).save(buf, format="PNG")
  (folder / "truncated.png").write_bytes(buf.getvalue()[:300])
  (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))
  (folder / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored silently

  with pytest.warns(UserWarning) as caught:
    src = get_source(folder, "all", data_dir=data_dir)
  bad = {"empty.png", "notes.txt", "truncated.png", "corrupt.jpg"}
  warned = " ".join(str(w.message) for w in caught)
  assert all(b in warned for b in bad)
  assert src.metadata["num_skipped"] == 4 and set(src.metadata["skipped"]) == bad
  assert src.metadata["num_images"] == 9
  recs = records(src)
  assert set(recs) == {"rgb.png", "rgb.bmp", "sub/rgb.tiff", "q.jpg", "gray.png", "rgba.png", "pal.png", "c16.png",
                       "sub/g16.tif"}
  for name, img in recs.items():
    chex.assert_type(img, np.uint8)
    chex.assert_shape(img, (20, 24, 3))
    np.testing.assert_array_equal(img, read_image(folder / name), err_msg=name)
  for name in ("rgb.png", "rgb.bmp", "sub/rgb.tiff", "rgba.png", "c16.png"):
    np.testing.assert_array_equal(recs[name], a, err_msg=name)

  gray = records(get_source(folder, "all", data_dir=data_dir, grayscale=True))
  chex.assert_shape(list(gray.values()), (20, 24, 1))
  np.testing.assert_array_equal(gray["sub/g16.tif"][..., 0], a[..., 1])


def test_unchanged_folder_is_reused_changed_one_rebuilt(tmp_path, data_dir):
  folder = tmp_path / "f"
  write_images(folder, 3)
  b1 = build_folder(folder, data_dir=data_dir)
  b2 = build_folder(folder, data_dir=data_dir)
  assert b1.builder_config.name == b2.builder_config.name
  write_images(folder / "more", 1, seed0=50)
  b3 = build_folder(folder, data_dir=data_dir)
  assert b3.builder_config.name != b1.builder_config.name
  assert b3.info.metadata["num_images"] == 4
  assert b1.builder_config.name != build_folder(folder, data_dir=data_dir, grayscale=True).builder_config.name


def test_folder_errors(tmp_path, data_dir):
  with pytest.raises(DataError, match="not found"):
    get_source(tmp_path / "missing", data_dir=data_dir)
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="no image files"):
    get_source(tmp_path / "empty", data_dir=data_dir)
  junk = tmp_path / "junk"
  junk.mkdir()
  (junk / "a.png").write_bytes(b"")
  (junk / "b.txt").write_text("x")
  with pytest.warns(UserWarning), pytest.raises(DataError, match="no readable image"):
    get_source(junk, data_dir=data_dir)
  assert not list(pathlib.Path(data_dir, "jaxcomp_image_folder").glob("junk-*/*/dataset_info.json"))
  one = tmp_path / "one"
  write_images(one, 1)
  with pytest.raises(DataError, match="no 'validation' split"):
    get_source(one, "validation", data_dir=data_dir)
  assert len(get_source(one, "train", data_dir=data_dir)) == 1


def test_sample_dataset(data_dir):
  names = sample_files()
  assert {"astronaut.png", "chelsea.png", "coffee.png"} <= set(names)
  train, val = get_source("sample", data_dir=data_dir), get_source("sample", "validation", data_dir=data_dir)
  assert len(train) + len(val) == len(names) and len(val) >= 1
  rec = records(get_source("sample", "all", data_dir=data_dir))
  import skimage.data

  np.testing.assert_array_equal(rec["astronaut.png"], skimage.data.astronaut())
  np.testing.assert_array_equal(rec["camera.png"], np.repeat(skimage.data.camera()[..., None], 3, -1))


def test_default_data_dir_from_env(tmp_path, monkeypatch, folder12):
  monkeypatch.setenv("JAXCOMP_DATA_DIR", str(tmp_path / "cache"))
  get_source(folder12[0])
  assert list((tmp_path / "cache" / "jaxcomp_image_folder").glob("folder12*-rgb-*/1.0.0/dataset_info.json"))


class JaxcompTestNamed(tfds.core.GeneratorBasedBuilder):
  """A stand-in for a named tfds dataset such as `clic`: encoded `Image` features, several keys."""

  VERSION = tfds.core.Version("1.0.0")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "hr": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
        "lr": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
    }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(3), "test": self._generate_examples(1)}

  def _generate_examples(self, n):
    for i in range(n):
      a = random_rgb(30 + i, 16, 16)
      yield i, {"hr": Image.fromarray(a), "lr": Image.fromarray(a[::2, ::2])}


def test_named_tfds_dataset(tmp_path):
  JaxcompTestNamed(data_dir=tmp_path, file_format="array_record").download_and_prepare()
  src = get_source("jaxcomp_test_named", "train", data_dir=tmp_path)
  assert len(src) == 3
  got = sorted((src[i]["image"] for i in range(3)), key=lambda x: x.sum())
  want = sorted((random_rgb(30 + i, 16, 16) for i in range(3)), key=lambda x: x.sum())
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)
  lr = get_source("jaxcomp_test_named:lr", "test", data_dir=tmp_path, grayscale=True)
  chex.assert_shape(lr[0]["image"], (8, 8, 1))
  assert lr[0]["name"] == "jaxcomp_test_named/test[0]"
  with pytest.raises(DataError, match="image feature"):
    get_source("jaxcomp_test_named:nope", data_dir=tmp_path)
  with pytest.raises(DataError, match="jaxcomp_test_named"):
    get_source("jaxcomp_test_named", "validation", data_dir=tmp_path)
  with pytest.raises(DataError, match="neither an existing folder"):
    get_source("no_such_dataset_xyz", data_dir=tmp_path)


def test_cache_returns_the_same_records_and_is_not_pickled(folder12, data_dir):
  plain = get_source(folder12[0], "all", data_dir=data_dir, cache=False)
  cached = get_source(folder12[0], "all", data_dir=data_dir, cache=True)
  assert get_source(folder12[0], "all", data_dir=data_dir).cache  # 12 tiny images: auto-cached
  for _ in range(2):  # second pass served from memory
    for i in range(len(plain)):
      a, b = plain[i], cached[i]
      assert a["name"] == b["name"]
      np.testing.assert_array_equal(a["image"], b["image"])
  assert not cached[0]["image"].flags.writeable
  cached[0]["image"] = None  # callers may replace keys without touching the cache
  assert cached[0]["image"] is not None
  import pickle

  assert pickle.loads(pickle.dumps(cached))._cache == {}

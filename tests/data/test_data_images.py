"""`load_eval_images`: folders and `sample` read directly (no tfds build), the same names / splits / bad-file rule as
`get_source`, tfds names through `get_source`, in-memory images as `jaxcomp.evaluation.load_images` took them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxcomp import evaluation
from jaxcomp.data import EvalImages, get_source, load_eval_images, read_image, sample_files
from jaxcomp.errors import DataError
from data_test_images import random_rgb, write_images


@pytest.fixture
def no_build_dir(tmp_path, monkeypatch):
  """Points every default data dir at an empty folder, to check nothing is built there."""
  d = tmp_path / "data_dir"
  d.mkdir()
  monkeypatch.setenv("JAXCOMP_DATA_DIR", str(d))
  monkeypatch.setenv("TFDS_DATA_DIR", str(d))
  return d


@pytest.fixture
def folder(tmp_path):
  """4 PNGs at the top (20x24) and one in a subfolder (10x12): `(folder, {relative path: pixels})`."""
  d = tmp_path / "photos"
  images = {f"img_{i:03d}.png": a for i, a in enumerate(write_images(d, 4))}
  (d / "sub").mkdir()
  images["sub/small.png"] = random_rgb(7, 10, 12)
  Image.fromarray(images["sub/small.png"]).save(d / "sub" / "small.png")
  return d, images


def test_folder_is_read_directly_in_sorted_order(folder, no_build_dir):
  d, images = folder
  ev = load_eval_images(d)
  assert isinstance(ev, EvalImages) and ev.names == sorted(images) and len(ev) == ev.total == 5
  for (name, a), (name2, b) in zip(ev, ev.images):
    assert name == name2 and a is b
    assert a.dtype == np.uint8
    np.testing.assert_array_equal(a, images[name])
  assert not ev.partial and ev.skipped == () and ev.summary() == f"scored 5 of 5 images of {d}"
  assert load_eval_images(str(d)).names == ev.names  # a path string is a folder too
  assert not any(no_build_dir.iterdir())  # no tfds dataset built for a one-off evaluation


def test_max_images_keeps_the_total(folder, no_build_dir):
  d, images = folder
  ev = load_eval_images(d, max_images=2)
  assert ev.names == sorted(images)[:2] and ev.total == 5 and ev.partial
  assert ev.summary() == f"scored 2 of 5 images of {d}"
  assert len(load_eval_images(d, max_images=9)) == 5


def test_grayscale_is_read_images_luma(folder, no_build_dir):
  d, images = folder
  ev = load_eval_images(d, grayscale=True)
  for name, a in ev:
    assert a.shape == images[name].shape[:2] + (1,)
    np.testing.assert_array_equal(a, read_image(d / name, grayscale=True))
  # In-memory RGB images get the same luma; 1-channel ones are kept.
  given = load_eval_images(dict(ev.images[:1]) | {"rgb": images["img_000.png"]}, grayscale=True)
  np.testing.assert_array_equal(given.images[1][1], read_image(d / "img_000.png", grayscale=True))


def test_bad_files_are_skipped_with_a_warning_and_counted(folder, no_build_dir):
  d, images = folder
  (d / "broken.png").write_bytes(b"")
  (d / "notes.txt").write_text("not an image")
  (d / ".DS_Store").write_bytes(b"\0")  # hidden: ignored silently, as by the folder builder
  with pytest.warns(UserWarning, match="skipping") as record:
    ev = load_eval_images(d)
  assert sorted(str(w.message).split(":")[0].rsplit("/", 1)[-1] for w in record) == ["broken.png", "notes.txt"]
  assert ev.names == sorted(images) and ev.total == 5 and ev.skipped == ("broken.png", "notes.txt")
  assert ev.summary() == f"scored 5 of 5 images of {d} (2 unreadable files skipped)"


def test_sample_validation_is_get_sources(data_dir, no_build_dir):
  val_src = get_source("sample", "validation", data_dir=data_dir)
  want = {val_src[i]["name"]: val_src[i]["image"] for i in range(len(val_src))}
  val = load_eval_images("sample", split="validation")
  assert val.names == sorted(want) and val.total == len(want) and val.label == "sample/validation"
  for name, a in val:
    np.testing.assert_array_equal(a, want[name])
  train = load_eval_images("sample", split="train", max_images=1)
  assert train.total + val.total == len(sample_files()) and not set(train.names) & set(val.names)
  everything = load_eval_images("sample", max_images=2)
  assert everything.names == sorted(sample_files())[:2] and everything.total == len(sample_files())
  assert not any(no_build_dir.iterdir())


def test_folder_splits_match_get_source(folder12, data_dir, no_build_dir):
  d, _ = folder12
  for split in ("train", "validation"):
    src = get_source(d, split, data_dir=data_dir)
    assert load_eval_images(d, split=split).names == sorted(src[i]["name"] for i in range(len(src)))
  both = load_eval_images(d, split="train+validation")
  assert sorted(both.names) == load_eval_images(d).names and both.total == 12


def test_errors_are_one_line_and_name_the_folder(tmp_path, no_build_dir):
  def error(*args, **kw) -> str:
    with pytest.raises(DataError) as e:
      load_eval_images(*args, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)

  assert error(tmp_path / "missing") == f"{tmp_path / 'missing'}: image folder not found"
  (tmp_path / "empty").mkdir()
  assert error(tmp_path / "empty") == f"{tmp_path / 'empty'}: folder contains no image files"
  junk = tmp_path / "junk"
  junk.mkdir()
  (junk / "a.png").write_bytes(b"")
  with pytest.warns(UserWarning, match="a.png"):
    assert error(junk).startswith(f"{junk}: no readable image among 1 file(s) (e.g. a.png: empty file")
  one = tmp_path / "one"
  write_images(one, 1)
  assert error(one, split="validation") == f"{one}: no 'validation' split (it has train; 1 readable image(s))"
  assert "split 'train[:2]'" in error(one, split="train[:2]")
  assert "max_images=-1" in error(one, max_images=-1)
  assert error([]) == "no images given"
  assert "image000: expected a uint8 image" in error([np.zeros((4, 4, 3), np.float32)])
  assert "no splits" in error([np.zeros((4, 4, 3), np.uint8)], split="train")
  assert not any(no_build_dir.iterdir())


def test_in_memory_images_as_evaluation_load_images_took_them():
  a, b = random_rgb(1, 8, 8), random_rgb(2, 8, 8)[..., :1]
  assert load_eval_images({"x": a, "y": b}).names == ["x", "y"]
  ev = load_eval_images([a, b], max_images=1)
  assert ev.names == ["image000"] and ev.total == 2 and ev.partial
  pairs = load_eval_images([("p", a), ("q", b)])
  assert pairs.names == ["p", "q"] and pairs.images[1][1].shape == (8, 8, 1)  # kept as given
  assert load_eval_images(pairs).names == ["p", "q"]  # an EvalImages is accepted again
  # evaluation.load_images is this loader.
  assert [n for n, _ in evaluation.load_images({"x": a})] == ["x"]


def test_tfds_names_go_through_get_source(tmp_path, monkeypatch):
  from test_data_builders import JaxcompTestNamed  # noqa: PLC0415 - the stand-in named dataset

  JaxcompTestNamed(data_dir=tmp_path, file_format="array_record").download_and_prepare()
  monkeypatch.setenv("JAXCOMP_DATA_DIR", str(tmp_path))  # get_source's data_dir for tfds names
  ev = load_eval_images("jaxcomp_test_named", split="train", max_images=2)
  assert len(ev) == 2 and ev.total == 3 and ev.label == "jaxcomp_test_named/train"
  assert ev.names == ["jaxcomp_test_named/train[0]", "jaxcomp_test_named/train[1]"]
  assert load_eval_images("jaxcomp_test_named").total == 4  # split "all": tfds' own "all"
  gray = load_eval_images("jaxcomp_test_named:lr", split="test", grayscale=True)
  assert gray.images[0][1].shape == (8, 8, 1) and gray.total == 1
  with pytest.raises(DataError, match="neither an existing folder"):
    load_eval_images("no_such_dataset_xyz")

"""Evaluation images: every whole image of a folder, `sample`, a tfds dataset or in-memory arrays, in a fixed order.

Evaluation reads each image once, whole, in order; it needs no random access. So folders and `sample` are read
directly with `read_image` (the canonical form of `jaxcomp.data.decode`) and nothing is built under the data dir;
only tfds dataset names go through `get_source`. Names, splits and bad-file handling match `get_source`:

* a folder: every non-hidden file below it (`builders.scan_folder`), sorted by POSIX relative path, which is also the
  image's name. Unreadable files (corrupt, empty, not an image, e.g. `README.txt`) are skipped with a warning naming
  them and listed in `EvalImages.skipped`, as the folder builder does.
* `"sample"`: scikit-image's bundled photographs (`builders.sample_files()`), named by file name.
* `split="train"` / `"validation"` / `"train+validation"` of a folder or `sample`: `builders.assign_splits` over the
  readable files, so `split="validation"` gives the images `get_source(spec, "validation")` gives.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import warnings
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from jaxcomp.data import builders
from jaxcomp.data.decode import canonicalize_array, read_image
from jaxcomp.errors import DataError

log = logging.getLogger(__name__)

FOLDER_SPLITS = ("train", "validation")


@dataclasses.dataclass(frozen=True)
class EvalImages:
  """The images an evaluation scores, and how many the source holds.

  Attributes:
    images: `(name, uint8 [H, W, C])` pairs in the source's order (sorted relative paths for folders).
    total: images the source (split) holds; more than `len(images)` when `max_images` cut the list. Files past the
      first `max_images` readable ones are counted without being opened.
    label: what was read, for messages (`"/data/kodak"`, `"sample/validation"`, `"clic/test"`).
    skipped: relative paths (or record names) of the unreadable files that were skipped.
  """
  images: list[tuple[str, np.ndarray]]
  total: int
  label: str
  skipped: tuple[str, ...] = ()

  def __len__(self) -> int:
    return len(self.images)

  def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
    return iter(self.images)

  @property
  def names(self) -> list[str]:
    return [n for n, _ in self.images]

  @property
  def partial(self) -> bool:
    """True when only the first `len(self)` of `total` images were taken (`max_images`)."""
    return len(self.images) < self.total

  def summary(self) -> str:
    """One line for logs and result files, e.g. "scored 3 of 24 images of kodak (1 unreadable file skipped)"."""
    text = f"scored {len(self.images)} of {self.total} images of {self.label}"
    if self.skipped:
      text += f" ({len(self.skipped)} unreadable file{'s' if len(self.skipped) > 1 else ''} skipped)"
    return text


def _check_max(max_images: int) -> int:
  if int(max_images) != max_images or max_images < 0:
    raise DataError(f"max_images={max_images!r}: must be a whole number >= 0 (0: all)")
  return int(max_images)


def _split_parts(split: str, label: str) -> list[str] | None:
  """The folder splits `split` names, in order; None for "all"."""
  if split == "all":
    return None
  parts = split.split("+")
  bad = [p for p in parts if p not in FOLDER_SPLITS]
  if bad:
    # Slices ("train[:10]") would need the tfds dataset this module avoids building; max_images covers the use.
    raise DataError(f"{label}: split {bad[0]!r} is not one of 'all', 'train', 'validation' (or 'train+validation'); "
                    "use max_images to take the first N")
  return parts


def _read_folder(root: pathlib.Path, files: Sequence[str], split: str, *, grayscale: bool, max_images: int,
                 validation_fraction: float, label: str) -> EvalImages:
  """Reads `files` (sorted relative paths below `root`) of `split`, skipping unreadable ones like the builder."""
  skipped: dict[str, str] = {}

  def read(rel: str) -> np.ndarray | None:
    path = root / rel
    try:
      return read_image(path, grayscale=grayscale)
    except DataError as e:
      if rel not in skipped:  # split reads check every file first: warn once
        skipped[rel] = str(e).removeprefix(f"{path}: ")
        warnings.warn(f"skipping {path}: {skipped[rel]}", stacklevel=4)
      return None

  def none_readable() -> DataError:
    example = next(iter(skipped.items()), None)
    e_g = f" (e.g. {example[0]}: {example[1]})" if example else ""
    return DataError(f"{label}: no readable image among {len(files)} file(s){e_g}")

  parts = _split_parts(split, label)
  if parts is None:
    candidates = list(files)
  else:
    # A folder's split depends on which files are readable (the one-validation-image fallback of `assign_splits`),
    # so every file is decoded once here, as the folder builder does; the chosen ones are read again below.
    readable = []
    for rel in files:  # a loop, not a comprehension: its own frame would shift the warning's stacklevel
      if read(rel) is not None:
        readable.append(rel)
    if not readable:
      raise none_readable()
    splits = builders.assign_splits(readable, validation_fraction)
    candidates = []
    for part in parts:
      if not splits[part]:
        have = ", ".join(k for k in FOLDER_SPLITS if splits[k])
        raise DataError(f"{label}: no {part!r} split (it has {have}; {len(readable)} readable image(s))")
      candidates += splits[part]
  images = []
  for rel in candidates:
    if max_images and len(images) == max_images:
      break
    image = read(rel)
    if image is not None:
      images.append((rel, image))
  if not images:
    raise none_readable()
  if skipped:
    log.warning("%s: %d unreadable file(s) skipped: %s", label, len(skipped), ", ".join(sorted(skipped)))
  total = sum(rel not in skipped for rel in candidates)
  label = label if split == "all" else f"{label}/{split}"
  return EvalImages(images, total, label, tuple(sorted(skipped)))


def _read_tfds(spec: str, split: str, *, grayscale: bool, max_images: int) -> EvalImages:
  source = builders.get_source(spec, split, grayscale=grayscale)
  images, skipped = [], []
  for i in range(len(source)):
    if max_images and len(images) == max_images:
      break
    try:
      rec = source[i]
    except DataError as e:  # a record that does not decode: skipped like a bad file of a folder
      skipped.append(f"{spec}/{split}[{i}]")
      warnings.warn(f"skipping {skipped[-1]}: {e}", stacklevel=3)
      continue
    images.append((str(rec["name"]), np.asarray(rec["image"])))
  if not images:
    raise DataError(f"{spec!r} split {split!r}: no readable image among {len(source)} record(s)")
  return EvalImages(images, len(source) - len(skipped), f"{spec}/{split}", tuple(skipped))


def _from_arrays(given: Any, *, grayscale: bool, max_images: int) -> EvalImages:
  """In-memory images: a name -> image mapping, a list of images, or of `(name, image)` pairs."""
  if isinstance(given, EvalImages):
    pairs, label, skipped = list(given.images), given.label, given.skipped
  else:
    if isinstance(given, Mapping):
      pairs = list(given.items())
    elif isinstance(given, Iterable) and not isinstance(given, (bytes, bytearray)):
      pairs = [a if isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str) else (f"image{i:03d}", a)
               for i, a in enumerate(given)]
    else:
      raise DataError(f"images: expected a folder, 'sample', a dataset name, a mapping or a list of images, got "
                      f"{type(given).__name__}")
    label, skipped = f"{len(pairs)} given images", ()
  if not pairs:
    raise DataError("no images given")
  total = len(pairs)
  out = []
  for name, a in pairs[:max_images or None]:
    a = np.asarray(a)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] not in (1, 3):
      raise DataError(f"{name}: expected a uint8 image [H, W, 1|3], got {a.dtype} {a.shape}")
    if grayscale and a.shape[-1] == 3:
      a = canonicalize_array(a, grayscale=True, name=str(name))  # the luma read_image(grayscale=True) gives
    out.append((str(name), a))
  return EvalImages(out, total, label, skipped)


def load_eval_images(spec: str | os.PathLike | Mapping[str, np.ndarray] | Iterable[Any] | EvalImages, *,
                     grayscale: bool = False, max_images: int = 0, split: str = "all",
                     validation_fraction: float = builders.DEFAULT_VALIDATION_FRACTION) -> EvalImages:
  """The images to evaluate on, each `(name, uint8 [H, W, C])`, read once into memory (see the module docstring).

  Args:
    spec: a folder path; `"sample"`; a tfds dataset name (`"clic"`, `"div2k/bicubic_x4:hr"`, through
      `get_source`); or in-memory images: a name -> uint8 `[H, W, 1|3]` mapping, a list of such images (named
      `image000`, ...) or of `(name, image)` pairs, or an `EvalImages`. A string is a folder when that path exists
      or starts with `/`, `.` or `~` (as in `get_source`).
    grayscale: `[H, W, 1]` ITU-R 601-2 luma (`read_image(path, grayscale=True)`), else `[H, W, 3]` RGB. In-memory
      images are kept as given (1 or 3 channels) unless `grayscale`.
    max_images: the first N images in order (0: all); `total` still counts every image of the split.
    split: `"all"` (default), or for a folder / `sample` `"train"`, `"validation"`, `"train+validation"`
      (`get_source`'s split rule); for a tfds name any split it has. In-memory images have only `"all"`.
    validation_fraction: for the split rule of folders and `sample` (see `assign_splits`).

  Raises:
    DataError: a missing or empty folder, no readable image, a bad array, an unknown name or split.
  """
  max_images = _check_max(max_images)
  if isinstance(spec, (str, os.PathLike)):
    spec_str = os.fspath(spec)
    if spec_str == "sample":
      files = sorted(builders.sample_files())
      return _read_folder(builders.sample_folder(), files, split, grayscale=grayscale, max_images=max_images,
                          validation_fraction=validation_fraction, label="sample")
    if isinstance(spec, os.PathLike) or builders._looks_like_path(spec_str):  # noqa: SLF001 - same package
      files = builders.scan_folder(spec_str)  # sorted; DataError naming the folder if missing or empty
      return _read_folder(pathlib.Path(spec_str).expanduser(), files, split, grayscale=grayscale,
                          max_images=max_images, validation_fraction=validation_fraction, label=spec_str)
    return _read_tfds(spec_str, split, grayscale=grayscale, max_images=max_images)
  if split != "all":
    raise DataError(f"split={split!r}: in-memory images have no splits; use 'all'")
  return _from_arrays(spec, grayscale=grayscale, max_images=max_images)

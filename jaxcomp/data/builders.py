"""Datasets as tfds array_record files, built without TensorFlow, and the random-access sources read from them.

Three kinds of dataset spec are accepted by `get_source`:

* `"sample"`: the natural photographs scikit-image ships inside its package (no download).
* a folder path: every image below it (subfolders included) becomes a record; built once into
  `<data_dir>/jaxcomp_image_folder/<config>/` and reused while the folder is unchanged.
* a tfds dataset name (`"clic"`, `"div2k/bicubic_x4"`, optionally `":key"` to pick the image feature, e.g.
  `"div2k/bicubic_x4:lr"`), read with `tfds.data_source`.

Records are `{"image": uint8 [H, W, C], "name": str}` in the canonical form of `jaxcomp.data.decode`.

Folder datasets store the canonical pixels uncompressed (tfds `Tensor(encoding="bytes")`): reading a record is a
copy, not a PNG decode, which is what makes random crops cheap (PNG decode of a 1276x850 photo: ~28 ms; raw: ~1
ms). `encoding="zlib"` trades ~30% disk for ~14 ms per read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pathlib
import re
import warnings
from typing import Any, Sequence

import grain.python as grain
import numpy as np
import tensorflow_datasets as tfds

from jaxcomp.data.decode import canonicalize_array, decode_image, read_image
from jaxcomp.errors import DataError

log = logging.getLogger(__name__)


def _not_custom_config_notice(record: logging.LogRecord) -> bool:
  # tfds warns on every load that a folder's config is "custom"; for the folder builder that is the normal case.
  return not str(record.msg).startswith("Using custom data configuration")


logging.getLogger("absl").addFilter(_not_custom_config_notice)

# Bump when the canonical form or the record layout changes: every cached folder dataset is then rebuilt.
FORMAT_VERSION = "1.0.0"

# Photographs (not test patterns or binary masks) in `skimage/data/`, in the order they are listed in the docs.
SAMPLE_FILES = (
    "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "hubble_deep_field.jpg", "ihc.png",
    "moon.png", "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
)

DEFAULT_VALIDATION_FRACTION = 0.1

# Folder datasets up to this many bytes on disk (~ raw pixels) are cached in memory by default (per process; see ImageSource).
AUTO_CACHE_BYTES = 512 * 2**20


def default_data_dir() -> str:
  """Where built datasets are cached: `$JAXCOMP_DATA_DIR`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`."""
  d = os.environ.get("JAXCOMP_DATA_DIR") or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
  return os.path.expanduser(d)


def split_fraction(relpath: str) -> float:
  """A number in [0, 1) fixed by the file's relative path alone (SHA-256), so a file never changes split."""
  digest = hashlib.sha256(relpath.encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_splits(relpaths: Sequence[str], validation_fraction: float) -> dict[str, list[str]]:
  """Deterministic train / validation split of relative paths.

  A file goes to validation when `split_fraction(relpath) < validation_fraction`. If that leaves validation empty
  while there are at least two files and the fraction is positive, the file with the smallest `split_fraction`
  moves to validation, so a small folder still has one validation image. Train is never emptied by the fallback.
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise DataError(f"validation_fraction={validation_fraction}: must be in [0, 1)")
  val = [p for p in relpaths if split_fraction(p) < validation_fraction]
  if not val and validation_fraction > 0 and len(relpaths) >= 2:
    val = [min(relpaths, key=split_fraction)]
  val_set = set(val)
  train = [p for p in relpaths if p not in val_set]
  if not train and val:  # a tiny folder whose files all hash low: keep at least one for training
    train, val = val[:1], val[1:]
  return {"train": sorted(train), "validation": sorted(val)}


def scan_folder(folder: str | os.PathLike) -> list[str]:
  """All non-hidden regular files below `folder`, as sorted POSIX relative paths.

  Raises:
    DataError: the folder is missing, is not a folder, or holds no files.
  """
  root = pathlib.Path(folder).expanduser()
  if not root.exists():
    raise DataError(f"{folder}: image folder not found")
  if not root.is_dir():
    raise DataError(f"{folder}: not a folder")
  rel = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # .git, .ipynb_checkpoints, ...
    for f in filenames:
      if f.startswith("."):  # .DS_Store and friends are not images nobody meant to include
        continue
      rel.append(pathlib.Path(dirpath, f).relative_to(root).as_posix())
  if not rel:
    raise DataError(f"{folder}: folder contains no image files")
  return sorted(rel)


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
  """Identity of one built folder dataset; `name` is derived from all other fields by `folder_config`."""

  root: str = ""
  files: tuple[str, ...] = dataclasses.field(default=(), repr=False)  # tfds logs the repr: keep it one line
  grayscale: bool = False
  validation_fraction: float = DEFAULT_VALIDATION_FRACTION
  encoding: str = "bytes"


def folder_config(folder: str | os.PathLike, *, grayscale: bool = False,
                  validation_fraction: float = DEFAULT_VALIDATION_FRACTION, encoding: str = "bytes",
                  files: Sequence[str] | None = None, label: str | None = None) -> ImageFolderConfig:
  """Builds the config of a folder dataset; its name changes whenever a file is added, removed or modified.

  Args:
    folder: the image folder.
    grayscale: store 1-channel luma instead of RGB.
    validation_fraction: expected fraction of files in the validation split (see `assign_splits`).
    encoding: "bytes" (raw pixels) or "zlib".
    files: restrict to these relative paths (default: every file found by `scan_folder`).
    label: readable prefix of the config name (default: the folder's base name).
  """
  if encoding not in ("bytes", "zlib"):
    raise DataError(f"encoding={encoding!r}: must be 'bytes' or 'zlib'")
  root = pathlib.Path(folder).expanduser().resolve()
  rel = list(files) if files is not None else scan_folder(root)
  h = hashlib.sha256()
  h.update(f"{FORMAT_VERSION}|{root}|{grayscale}|{validation_fraction!r}|{encoding}".encode())
  for r in sorted(rel):
    st = (root / r).stat()
    # size + mtime catch edits without reading every file at start-up.
    h.update(f"|{r}|{st.st_size}|{st.st_mtime_ns}".encode())
  slug = re.sub(r"[^A-Za-z0-9]+", "_", label or root.name).strip("_")[:40] or "folder"
  name = f"{slug}-{'gray' if grayscale else 'rgb'}-{h.hexdigest()[:16]}"
  return ImageFolderConfig(name=name, root=str(root), files=tuple(sorted(rel)), grayscale=grayscale,
                           validation_fraction=validation_fraction, encoding=encoding,
                           description=f"images of {root}")


class JaxcompImageFolder(tfds.core.GeneratorBasedBuilder):
  """A folder of images as a tfds dataset (array_record), with no TensorFlow involved.

  Unreadable files are skipped with a warning and recorded in `info.metadata` (`num_skipped`, `skipped`); a folder
  with no readable image raises `DataError` and leaves nothing behind.
  """

  VERSION = tfds.core.Version(FORMAT_VERSION)
  RELEASE_NOTES = {FORMAT_VERSION: "Canonical uint8 pixels, SHA-256 path split."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> None:
    """No source folder: tfds looks there for download checksums (we download nothing), and finding a package's
    folder needs `importlib_resources`, which some tfds installs lack."""
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    cfg: ImageFolderConfig = self.builder_config
    channels = 1 if cfg.grayscale else 3
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"Images of {cfg.root} in jaxcomp canonical form (uint8, {channels} channels).",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(None, None, channels), dtype=np.uint8, encoding=cfg.encoding),
            "name": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    del dl_manager  # everything is local
    cfg: ImageFolderConfig = self.builder_config
    readable, skipped = [], {}
    for rel in cfg.files:
      path = os.path.join(cfg.root, rel)
      try:
        read_image(path, grayscale=cfg.grayscale)
        readable.append(rel)
      except DataError as e:
        skipped[rel] = str(e).removeprefix(f"{path}: ")
        warnings.warn(f"skipping {path}: {skipped[rel]}", stacklevel=1)
    if not readable:
      raise DataError(f"{cfg.root}: no readable image among {len(cfg.files)} file(s) "
                      f"(e.g. {next(iter(skipped))}: {next(iter(skipped.values()))})")
    self.info.metadata.update({"root": cfg.root, "num_images": len(readable), "num_skipped": len(skipped),
                               "skipped": skipped})
    splits = assign_splits(readable, cfg.validation_fraction)
    return {k: self._generate_examples(v) for k, v in splits.items() if v}

  def _generate_examples(self, relpaths: Sequence[str]):
    cfg: ImageFolderConfig = self.builder_config
    for rel in relpaths:
      yield rel, {"image": read_image(os.path.join(cfg.root, rel), grayscale=cfg.grayscale), "name": rel}


def build_folder(folder: str | os.PathLike, *, grayscale: bool = False, data_dir: str | None = None,
                 validation_fraction: float = DEFAULT_VALIDATION_FRACTION, encoding: str = "bytes",
                 files: Sequence[str] | None = None, label: str | None = None) -> JaxcompImageFolder:
  """Builds (or reuses) the array_record dataset of `folder` and returns its prepared tfds builder."""
  cfg = folder_config(folder, grayscale=grayscale, validation_fraction=validation_fraction, encoding=encoding,
                      files=files, label=label)
  builder = JaxcompImageFolder(config=cfg, data_dir=data_dir or default_data_dir(), file_format="array_record")
  # jaxcomp reports what it built (and what it skipped) itself; tfds' per-split progress bars only add noise.
  tfds.display_progress_bar(False)
  builder.download_and_prepare()
  skipped = builder.info.metadata.get("skipped", {})
  if skipped:
    log.warning("%s: %d unreadable file(s) skipped: %s", cfg.root, len(skipped), ", ".join(sorted(skipped)))
  return builder


def sample_folder() -> pathlib.Path:
  """The folder of scikit-image's bundled photographs."""
  import skimage  # noqa: PLC0415 - only the sample dataset needs it

  return pathlib.Path(skimage.__file__).parent / "data"


def sample_files() -> list[str]:
  """The `SAMPLE_FILES` present in this scikit-image installation (some installs fetch a few lazily)."""
  root = sample_folder()
  present = [f for f in SAMPLE_FILES if (root / f).is_file()]
  if not present:
    raise DataError(f"{root}: none of scikit-image's sample photos found; reinstall scikit-image")
  return present


class ImageSource(grain.RandomAccessDataSource):
  """Random-access records `{"image": uint8 [H, W, C], "name": str}` over a tfds data source.

  Picklable, so grain worker processes can open it. `decode=True` means the image feature holds encoded bytes
  (tfds `Image` read with `SkipDecoding`) which are decoded here to the canonical form.

  `cache=True` keeps every record this process has read in memory. Reading a 1276x850 record from array_record
  costs ~25-45 ms (chunk decompression + tf.Example parsing) against ~0.01 ms for a crop, so for datasets that fit
  in RAM the cache turns epochs after the first into pure cropping. Each worker process holds its own cache (the
  cached records are not pickled).
  """

  def __init__(self, tfds_source: Any, *, image_key: str = "image", name_key: str | None = "name",
               decode: bool = False, grayscale: bool = False, label: str = "", metadata: dict | None = None,
               cache: bool = False):
    self._source = tfds_source
    self._image_key = image_key
    self._name_key = name_key
    self._decode = decode
    self._grayscale = grayscale
    self._label = label
    self.metadata = dict(metadata or {})
    self.cache = cache
    self._cache: dict[int, dict[str, Any]] = {}

  def __getstate__(self) -> dict[str, Any]:
    return {**self.__dict__, "_cache": {}}

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if self.cache and index in self._cache:
      return dict(self._cache[index])
    rec = self._source[index]
    name = rec.get(self._name_key) if self._name_key else None
    if isinstance(name, (bytes, np.bytes_)):
      name = bytes(name).decode("utf-8")
    name = str(name) if name is not None else f"{self._label}[{index}]"
    img = rec[self._image_key]
    if self._decode:
      img = decode_image(bytes(img), grayscale=self._grayscale, name=name)
    elif img.dtype != np.uint8 or img.shape[-1] != (1 if self._grayscale else 3):
      img = canonicalize_array(img, grayscale=self._grayscale, name=name)
    out = {"image": img, "name": name}
    if self.cache:
      img.flags.writeable = False  # shared by every later read: nobody may modify it in place
      self._cache[index] = out
      return dict(out)
    return out

  def __repr__(self) -> str:
    return f"ImageSource({self._label!r}, {len(self)} records)"


def _looks_like_path(spec: str) -> bool:
  """Existing paths are folders; so are absolute / ./ / ~ paths (a missing one then fails as a folder)."""
  return os.path.exists(os.path.expanduser(spec)) or spec.startswith(("/", ".", "~"))


def _folder_source(folder: str | os.PathLike, split: str, *, grayscale: bool, data_dir: str | None,
                   validation_fraction: float, cache: bool | None, files: Sequence[str] | None = None,
                   label: str | None = None) -> ImageSource:
  builder = build_folder(folder, grayscale=grayscale, data_dir=data_dir, validation_fraction=validation_fraction,
                         files=files, label=label)
  available = sorted(builder.info.splits.keys())
  if split == "all":
    split = "+".join(available)
  for part in split.split("+"):
    if part.split("[")[0] not in available:
      raise DataError(f"{folder}: no {part!r} split (it has {', '.join(available)}; "
                      f"{builder.info.metadata.get('num_images')} readable image(s))")
  src = builder.as_data_source(split=split)
  if cache is None:  # raw pixels: the stored size is the in-memory size
    cache = builder.info.dataset_size <= AUTO_CACHE_BYTES
  return ImageSource(src, grayscale=grayscale, label=f"{label or folder}/{split}",
                     metadata=dict(builder.info.metadata), cache=cache)


def _tfds_source(spec: str, split: str, *, grayscale: bool, data_dir: str | None, cache: bool) -> ImageSource:
  name, _, key = spec.partition(":")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    raise DataError(f"{spec!r}: neither an existing folder nor a known tfds dataset name ({type(e).__name__})") \
        from e
  features = builder.info.features
  image_keys = [k for k, f in features.items() if isinstance(f, (tfds.features.Image, tfds.features.Tensor))]
  if not key:
    key = next((k for k in ("image", "hr") if k in image_keys), image_keys[0] if len(image_keys) == 1 else "")
  if key not in features:
    raise DataError(f"{spec!r}: pick the image feature with '{name}:KEY', one of {sorted(image_keys)}")
  decode = isinstance(features[key], tfds.features.Image)
  decoders = {key: tfds.decode.SkipDecoding()} if decode else None
  try:
    src = tfds.data_source(name, split=split, data_dir=data_dir, decoders=decoders)
  except Exception as e:  # noqa: BLE001 - tfds raises many kinds (missing split, download failure)
    raise DataError(f"{spec!r} split {split!r}: cannot open tfds data source ({type(e).__name__}: {e})") from e
  name_key = next((k for k in ("name", "file_name", "filename", "id") if k in features), None)
  return ImageSource(src, image_key=key, name_key=name_key, decode=decode, grayscale=grayscale,
                     label=f"{name}/{split}", cache=cache)


def get_source(spec: str | os.PathLike, split: str = "train", *, grayscale: bool = False,
               data_dir: str | None = None, validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
               cache: bool | None = None) -> ImageSource:
  """A random-access source of `{"image": uint8 [H, W, C], "name": str}` records.

  Args:
    spec: `"sample"`, a folder path, or a tfds dataset name (`"clic"`, `"div2k/bicubic_x4:hr"`).
    split: `"train"`, `"validation"`, `"all"` (folders: both), tfds split syntax (`"train[:10]"`, `"a+b"`),
      or any split a named tfds dataset has (`"test"`).
    grayscale: 1-channel luma records instead of RGB.
    data_dir: where built datasets live (default `default_data_dir()`); for named datasets, tfds' data_dir.
    validation_fraction: for folders and `sample`, see `assign_splits`.
    cache: keep decoded records in memory in each process (see `ImageSource`). Default: on for folder / `sample`
      datasets of at most `AUTO_CACHE_BYTES` (512 MiB) of pixels, off for named tfds datasets.

  Raises:
    DataError: missing or empty folder, no readable image, unknown name, or a split the dataset lacks.
  """
  spec_str = os.fspath(spec)
  data_dir = os.path.expanduser(data_dir) if data_dir else None
  if spec_str == "sample":
    return _folder_source(sample_folder(), split, grayscale=grayscale, data_dir=data_dir,
                          validation_fraction=validation_fraction, cache=cache, files=sample_files(),
                          label="sample")
  if isinstance(spec, os.PathLike) or _looks_like_path(spec_str):
    return _folder_source(spec_str, split, grayscale=grayscale, data_dir=data_dir,
                          validation_fraction=validation_fraction, cache=cache)
  return _tfds_source(spec_str, split, grayscale=grayscale,
                      data_dir=data_dir or os.environ.get("JAXCOMP_DATA_DIR"), cache=bool(cache))

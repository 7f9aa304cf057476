"""The contract of `jaxcomp eval` that every method's tests check on their own tiny trained workdir."""

import json
import pathlib

import numpy as np
from PIL import Image

from jaxcomp import cli


def image_folder(folder: pathlib.Path, n: int = 6, size: tuple[int, int] = (64, 48), seed: int = 0) -> pathlib.Path:
  """`n` smooth RGB PNGs (a coarse random grid upsampled), named 0.png .. (n-1).png."""
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  h, w = size
  for i in range(n):
    grid = rng.integers(0, 256, size=(h // 8, w // 8, 3))
    Image.fromarray(np.kron(grid, np.ones((8, 8, 1))).astype(np.uint8)).save(folder / f"{i}.png")
  return folder


def _eval(capsys, workdir, folder, *flags):
  capsys.readouterr()
  assert cli.main(["eval", "--workdir", str(workdir), "--data", str(folder), *flags]) == 0
  out = capsys.readouterr().out
  return json.loads((pathlib.Path(workdir) / "eval" / f"{folder.name}.json").read_text()), out


def check_eval_contract(capsys, workdir, steps: tuple[int, int], folder: pathlib.Path, key: str = "psnr") -> None:
  """A folder of 6 images: all 6 scored without a flag; `--max_images 2` scores 2 and says so; `--step a` and
  `--step b` score those two checkpoints' own parameters (different per-image `key`)."""
  report, out = _eval(capsys, workdir, folder)
  assert (report["num_images"], report["total_images"]) == (6, 6) and "scored" not in out
  assert report["step"] == max(steps) and len(report["images"]) == 6
  report, out = _eval(capsys, workdir, folder, "--max_images", "2")
  assert (report["num_images"], report["total_images"]) == (2, 6) and "scored 2 of 6 images" in out
  by_step = {}
  for s in steps:
    report, out = _eval(capsys, workdir, folder, "--step", str(s), "--max_images", "2")
    assert report["step"] == s and f"step {s};" in out
    by_step[s] = [r[key] for r in report["images"]]
  assert by_step[steps[0]] != by_step[steps[1]], by_step

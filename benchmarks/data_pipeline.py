"""Crops per second of the training input pipeline (`jaxcomp.data.make_loader`) on a folder of photos.

    python benchmarks/data_pipeline.py ../shared/data/photos-train

Builds (or reuses) the folder's array_record dataset, then times random 256x256 crops + flips in batches of 8 with
0, 1 and 2 grain worker processes, reading every record from array_record (cache off) and with the in-memory record
cache on (warmed by one pass over the data first). Worker start-up and the first batches are excluded (warm-up).
Writes the figures and the command into the `data_pipeline` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def crops_per_second(source, num_workers: int, crop: int, batch: int, seconds: float) -> tuple[float, int]:
  """Batches for about `seconds` after warm-up; returns (crops/s, crops timed).

  Warm-up: 2 batches per worker, or with the cache on one full pass over the data in every worker, so the timed
  part measures the steady state of the whole run.
  """
  from jaxcomp.data import make_loader  # noqa: PLC0415

  it = iter(make_loader(source, crop_size=crop, global_batch_size=batch, seed=0, num_workers=num_workers,
                        shard_index=0, shard_count=1))
  warm = 2 * max(num_workers, 1)
  if source.cache:
    warm = max(warm, -(-len(source) // batch) * max(num_workers, 1) + max(num_workers, 1))
  for _ in range(warm):
    next(it)
  n, t0 = 0, time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    n += next(it)["image"].shape[0]
  rate = n / (time.perf_counter() - t0)
  if hasattr(it, "close"):
    it.close()
  return rate, n


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("folder", nargs="?", default="../shared/data/photos-train")
  p.add_argument("--crop", type=int, default=256)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per worker setting")
  p.add_argument("--data_dir", default=None, help="tfds data_dir (default $JAXCOMP_DATA_DIR or ~/tensorflow_datasets)")
  p.add_argument("--no_write", action="store_true", help="print only, leave docs/benchmarks.md alone")
  args = p.parse_args()

  from jaxcomp.data import get_source  # noqa: PLC0415

  t0 = time.perf_counter()
  source = get_source(args.folder, "all", data_dir=args.data_dir, cache=False)
  build_s = time.perf_counter() - t0
  cached = get_source(args.folder, "all", data_dir=args.data_dir, cache=True)
  shapes = {source[i]["image"].shape for i in range(len(source))}
  rows = []
  for workers in (0, 1, 2):
    rates = []
    for src in (source, cached):
      rate, n = crops_per_second(src, workers, args.crop, args.batch, args.seconds)
      rates.append(rate)
      print(f"workers={workers} cache={src.cache}: {rate:7.1f} crops/s ({n} crops of {args.crop}x{args.crop})",
            flush=True)
    rows.append((workers, *rates))

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from _report import machine_line, write_section  # noqa: PLC0415

  cmd = "python benchmarks/data_pipeline.py " + " ".join(sys.argv[1:])
  body = [
      "## Data pipeline: random crops per second (`jaxcomp.data.make_loader`)",
      "",
      f"Command: `{cmd}`  ",
      f"Machine: {machine_line()}  ",
      f"Data: {len(source)} images from `{args.folder}` ({', '.join(f'{h}x{w}' for h, w, _ in sorted(shapes))}),"
      f" stored as raw uint8 array_record (dataset ready in {build_s:.1f} s, build included if not cached).  ",
      f"Random {args.crop}x{args.crop} crops + horizontal flips, batch {args.batch}, ~{args.seconds:g} s timed per"
      " row after warm-up.",
      "",
      "| grain worker processes | crops / s, records read from array_record | crops / s, in-memory record cache |",
      "| --- | --- | --- |",
  ]
  body += [f"| {w}{' (in-process)' if w == 0 else ''} | {r:.0f} | {rc:.0f} |" for w, r, rc in rows]
  body += ["", "The in-memory cache is on by default for folders up to 512 MiB (`get_source(..., cache=None)`). "
           "This machine's 2 cores are shared with the main process, so worker processes add little here; "
           "they pay off on hosts with cores to spare."]
  text = "\n".join(body)
  if not args.no_write:
    write_section("data_pipeline", text)
    print("wrote docs/benchmarks.md section data_pipeline")


if __name__ == "__main__":  # grain workers are spawned: the guard keeps them from re-running the benchmark
  main()

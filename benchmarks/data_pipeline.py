"""Crops per second of the training input pipeline (`jaxcomp.data.make_loader`) on a folder of photos.

    python benchmarks/data_pipeline.py ../shared/data/photos-train

Builds (or reuses) the folder's array_record dataset, then times random 256x256 crops + flips in batches of 8 with
0, 1 and 2 grain worker processes with the in-memory record cache on (warmed by one pass over the data first), and
in-process with the cache off (every record read from array_record); `--all` adds 1 and 2 workers with the cache
off. Worker start-up and the first batches are excluded (warm-up). Writes the figures and the command into the
`data_pipeline` section of docs/benchmarks.md. Takes about 45 s on a 2-core machine.
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
  from jaxcomp.data import LoaderOptions, make_loader  # noqa: PLC0415

  it = iter(make_loader(source, patch_size=crop, global_batch_size=batch, seed=0, num_workers=num_workers,
                        options=LoaderOptions(shard_index=0, shard_count=1)))
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
  p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per worker setting")
  p.add_argument("--data_dir", default=None, help="tfds data_dir (default $JAXCOMP_DATA_DIR or ~/tensorflow_datasets)")
  p.add_argument("--all", action="store_true", help="also time 1 and 2 workers with the cache off (slow start-up)")
  p.add_argument("--no_write", action="store_true", help="print only, leave docs/benchmarks.md alone")
  args = p.parse_args()

  from jaxcomp.data import get_source  # noqa: PLC0415

  load_1min = os.getloadavg()[0]  # other jobs on the machine: context for the figures
  t0 = time.perf_counter()
  source = get_source(args.folder, "all", data_dir=args.data_dir, cache=False)
  build_s = time.perf_counter() - t0
  cached = get_source(args.folder, "all", data_dir=args.data_dir, cache=True)
  megapixels = sorted(source[i]["image"].shape[0] * source[i]["image"].shape[1] / 1e6 for i in range(len(source)))
  settings = [(0, False), (0, True), (1, True), (2, True)]
  if args.all:
    settings += [(1, False), (2, False)]
  rows = []
  for workers, cache in settings:
    t1 = time.perf_counter()
    rate, n = crops_per_second(cached if cache else source, workers, args.crop, args.batch, args.seconds)
    rows.append((workers, cache, rate))
    print(f"workers={workers} cache={cache}: {rate:7.1f} crops/s ({n} crops of {args.crop}x{args.crop}; "
          f"{time.perf_counter() - t1:.1f} s with start-up and warm-up)", flush=True)

  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from _report import machine_line, write_section  # noqa: PLC0415

  cmd = "python benchmarks/data_pipeline.py " + " ".join(sys.argv[1:])
  body = [
      "## Data pipeline: random crops per second (`jaxcomp.data.make_loader`)",
      "",
      f"Command: `{cmd}`  ",
      f"Machine: {machine_line()}, 1-minute load average {load_1min:.1f} at start  ",
      f"Data: {len(source)} images from `{args.folder}` ({megapixels[0]:.2f}-{megapixels[-1]:.2f} megapixels),"
      f" stored as raw uint8 array_record (dataset ready in {build_s:.1f} s, build included if not cached).  ",
      f"Random {args.crop}x{args.crop} crops + horizontal flips, batch {args.batch}, ~{args.seconds:g} s timed per"
      " row after warm-up.",
      "",
      "| grain worker processes | in-memory record cache | crops / s |",
      "| --- | --- | --- |",
  ]
  body += [f"| {w}{' (in-process)' if w == 0 else ''} | {'on' if c else 'off'} | {r:.0f} |" for w, c, r in rows]
  body += ["", "Cache off, every crop reads its whole record from array_record (brotli chunk + tf.Example parse, "
           "25-45 ms for a 1.1 MP photo); the cache (default for folders up to 512 MiB) keeps decoded records in "
           "each process after the first epoch. The 2 cores are shared by the main process, the workers and other "
           "jobs, so worker figures here are noisy and gain little; workers pay off on hosts with spare cores."]
  text = "\n".join(body)
  if not args.no_write:
    write_section("data_pipeline", text)
    print("wrote docs/benchmarks.md section data_pipeline")


if __name__ == "__main__":  # grain workers are spawned: the guard keeps them from re-running the benchmark
  main()

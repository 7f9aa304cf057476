"""RL-SRGAN throughput on this machine: the generator + discriminator training step of `jaxcomp train` against a
PyTorch SRGAN step of the same shapes in the same run (alternating), and compress / decompress time per Kodak image.

  python benchmarks/rl_srgan.py [--batch 16] [--size 96] [--rounds 3] [--steps 3] [--torch-python PYTHON] [--no-write]

The jaxcomp step is the real one (`jaxcomp.methods.rl_srgan.train.make_step`, mapped by `jaxcomp.parallel` on this
host's devices) for the paper's networks (generator 64 features, 5 residual blocks, r = 4; discriminator 64), with the
RL term off (the SRGAN step, the shapes the PyTorch peer has) and on (+ the actor-critic heads and the REINFORCE loss,
applied every step here, the worst case). The PyTorch step (`benchmarks/rl_srgan_torch.py`) runs in `--torch-python`
(an interpreter with torch; by default this one if it imports torch) with OMP_WAIT_POLICY=PASSIVE. Timings are
medians after a warm-up, compile excluded; the two are timed in alternating rounds (the machine is shared and noisy),
and the ratio is the figure to quote. Codec times: `jaxcomp.evaluation.evaluate_codec` on `--kodak` images with a
freshly initialised generator of the paper's size (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._report import machine_line, write_section  # noqa: E402
from jaxcomp import data, parallel  # noqa: E402
from jaxcomp.data import transforms  # noqa: E402
from jaxcomp.evaluation import evaluate_codec  # noqa: E402
from jaxcomp.methods.rl_srgan import codec as sr_codec  # noqa: E402
from jaxcomp.methods.rl_srgan import train as sr_train  # noqa: E402


def _config(batch: int, size: int, rl: bool):
  import importlib.util
  spec = importlib.util.spec_from_file_location("rl_srgan_config", ROOT / "configs" / "rl_srgan.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("default" if rl else "srgan")
  c.vgg.weight = 0.0  # no ImageNet weights here; the PyTorch peer has no VGG term either
  c.global_batch_size, c.patch_size = batch, size
  return c


def jax_step(batch: int, size: int, rl: bool):
  """The mapped train step with its states and one batch; returns (run_once, compile_seconds)."""
  c = _config(batch, size, rl)
  host = sr_train.init_states(c)
  n = parallel.local_device_count()
  rng = np.random.default_rng(0)
  hr = rng.integers(0, 256, (batch, size, size, 3), np.uint8)
  lr = np.stack([transforms.resize(im, 1 / c.scale, "bicubic") for im in hr])
  feed = {"hr": hr.reshape(n, batch // n, *hr.shape[1:]), "lr": lr.reshape(n, batch // n, *lr.shape[1:])}
  if rl:
    feed.update(rl_apply=np.ones(n, np.float32), rl_target=np.full(n, 0.5, np.float32))
  step = parallel.data_parallel(sr_train.make_step(c, None), c.parallel)
  box = {"states": parallel.replicate(host, c.parallel)}
  feed = parallel.shard(feed, c.parallel)

  def run():
    out = step(box["states"], feed, None)
    box["states"] = out[0]
    jax.block_until_ready(out[1])

  t = time.perf_counter()
  run()
  return run, time.perf_counter() - t


def torch_times(python: str, batch: int, size: int, steps: int):
  cmd = [python, "-m", "benchmarks.rl_srgan_torch", "--batch", str(batch), "--size", str(size), "--steps", str(steps)]
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
  if r.returncode:
    raise SystemExit(f"rl_srgan.py: error: the PyTorch peer failed: {r.stderr.strip().splitlines()[-1]}")
  return json.loads(r.stdout.strip().splitlines()[-1])


def codec_times(kodak: str, n: int):
  c = _config(16, 96, False)
  gen = sr_codec.build_generator(c)
  variables = jax.jit(lambda k: gen.init(k, np.zeros((1, 24, 24, 3), np.float32), train=False))(jax.random.key(0))
  codec = sr_codec.SRCodec(c, variables)
  images = list(data.load_eval_images(kodak, max_images=n))
  report = evaluate_codec(codec, images, jpeg=False)
  return report["encode_s"], report["decode_s"], len(images), images[0][1].shape


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--size", type=int, default=96)
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--torch-python", default=None)
  ap.add_argument("--kodak", default=str(ROOT.parent / "shared" / "data" / "kodak"))
  ap.add_argument("--kodak-images", type=int, default=4)
  ap.add_argument("--no-write", action="store_true")
  a = ap.parse_args()
  python = a.torch_python or sys.executable
  has_torch = subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0
  cmd = "python benchmarks/rl_srgan.py" + "".join(
      f" --{k} {v}" for k, v in (("batch", a.batch), ("size", a.size), ("rounds", a.rounds), ("steps", a.steps))
      if v != ap.get_default(k)) + (" --torch-python PYTHON" if a.torch_python else "")

  run_srgan, compile_srgan = jax_step(a.batch, a.size, rl=False)
  run_rl, compile_rl = jax_step(a.batch, a.size, rl=True)
  ts = {"srgan": [], "rl": [], "torch": []}
  torch_version = None
  for _ in range(a.rounds):  # alternate so all see the same machine load
    for key, run in (("srgan", run_srgan), ("rl", run_rl)):
      for _ in range(a.steps):
        t = time.perf_counter()
        run()
        ts[key].append(time.perf_counter() - t)
    if has_torch:
      out = torch_times(python, a.batch, a.size, a.steps)
      ts["torch"] += out["seconds"]
      torch_version = f"{out['torch']}, {out['threads']} threads"
  med = {k: statistics.median(v) for k, v in ts.items() if v}
  lines = [f"Machine: {machine_line()}, 1-min load average {os.getloadavg()[0]:.1f} at the end. Command: `{cmd}`", "",
           "| step (batch of HR crops, generator 64 x 5 blocks, r = 4, discriminator 64, Adam) | median s/step | "
           "images/s |", "| --- | --- | --- |",
           f"| jaxcomp SRGAN step (RL term off), batch {a.batch} of {a.size}^2 (compile {compile_srgan:.1f} s, "
           f"excluded) | {med['srgan']:.3f} | {a.batch / med['srgan']:.1f} |",
           f"| jaxcomp RL-SRGAN step (+ heads and the RL loss every step; compile {compile_rl:.1f} s) | "
           f"{med['rl']:.3f} | {a.batch / med['rl']:.1f} |"]
  print("\n".join(lines[2:]))
  if "torch" in med:
    lines.append(f"| PyTorch SRGAN step, same shapes (torch {torch_version}, OMP_WAIT_POLICY=PASSIVE) | "
                 f"{med['torch']:.3f} | {a.batch / med['torch']:.1f} |")
    lines += ["", f"jaxcomp / PyTorch time ratio (SRGAN step): **{med['srgan'] / med['torch']:.2f}** (< 1: jaxcomp "
              f"faster), medians of {len(ts['srgan'])} steps in {a.rounds} alternating rounds."]
  else:
    lines += ["", "torch not importable by the given interpreter: no PyTorch figure in this run."]
  enc, dec, n, shape = codec_times(a.kodak, a.kodak_images)
  lines += ["", f"Codec, paper-size generator, {n} Kodak images ({shape[1]}x{shape[0]}), `evaluate_codec` timings "
            f"(compile excluded): compress {enc * 1e3:.1f} ms (downsampling + JPEG), decompress {dec * 1e3:.0f} ms "
            "(JPEG decode + generator) per image."]
  print("\n".join(lines[-3:]))
  if not a.no_write:
    write_section("rl_srgan", "## RL-SRGAN training step and codec (`benchmarks/rl_srgan.py`)\n\n" + "\n".join(lines))


if __name__ == "__main__":
  main()

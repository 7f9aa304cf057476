"""CAE-ADMM costs: the training step (distortion + ADMM penalty on an anchor batch, Adam + plateau) and one ADMM
projection step over a dataset (eval encoder pass + jitted top-k projection and dual update).

  python benchmarks/cae_admm.py [--batch 32] [--size 128] [--steps 3] [--records 64] [--variant default]
                                [--remat] [--compile-only] [--no-write]

The step is the one `jaxcomp.methods.cae_admm.train` runs (`_make_step` through `jaxcomp.parallel.data_parallel`
on the local devices), on random images; timings are medians after one warm-up call, compile time reported apart.
Memory: XLA's own plan of the compiled step (`memory_analysis`: arguments, outputs, temporaries) and the peak RSS
of this process. The step is not run when the plan exceeds the memory available (it would be killed), and
`--compile-only` stops after the plan, which is how the remat / no-remat needs are compared.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import resource
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks._report import machine_line, write_section  # noqa: E402
from jaxcomp import parallel  # noqa: E402
from jaxcomp import train as harness  # noqa: E402
from jaxcomp.methods.cae_admm import admm, train  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
GIB = 2.0**30
BSDS500_TRAIN = 500  # the paper's training set: the projection's cost is quoted for it too


def _config(variant: str):
  spec = importlib.util.spec_from_file_location("cae_admm_config", ROOT / "configs" / "cae_admm.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant)


def _median(fn, n: int) -> float:
  ts = []
  for _ in range(n):
    t = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


def _peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux reports KiB


def _available_gib() -> float:
  with open("/proc/meminfo") as f:
    info = dict(line.split(":", 1) for line in f)
  return int(info["MemAvailable"].split()[0]) * 1024 / GIB


def _load() -> str:
  return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--size", type=int, default=128)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--records", type=int, default=64)
  p.add_argument("--variant", default="default")
  p.add_argument("--remat", action="store_true", help="rematerialise the residual blocks (config.model.remat)")
  p.add_argument("--compile-only", action="store_true", help="report XLA's memory plan of the step and stop")
  p.add_argument("--no-write", action="store_true")
  args = p.parse_args()
  niceness = os.nice(0)
  command = (f"nice -n {niceness} " if niceness else "") + "python benchmarks/cae_admm.py " + " ".join(sys.argv[1:])
  load_start = _load()

  config = _config(args.variant)
  config.model.remat = args.remat
  n_dev = parallel.local_device_count()
  model, p_model = train.build_model(config), train.build_model(config, parallel.AXIS)
  rng = np.random.default_rng(0)
  x0 = jnp.zeros((1, args.size, args.size, 3))
  variables = jax.jit(lambda k: model.init({"params": k}, x0, train=False))(jax.random.key(0))
  latent = jax.eval_shape(lambda v: model.apply(v, x0, method="analysis"), variables).shape[1:]
  state = parallel.replicate(harness.TrainState.from_variables(
      variables, tx=train.make_optimizer(config, 16), rng=jax.random.PRNGKey(0)))
  step = parallel.data_parallel(train._make_step(p_model, config, True))
  per = args.batch // n_dev

  def batch():
    img = rng.integers(0, 256, (n_dev, per, args.size, args.size, 3), np.uint8)
    return parallel.shard({"image": img, "anchor": img[:, ::-1].copy(), "warm": np.zeros((n_dev,), np.float32),
                           "z": np.zeros((n_dev, per, *latent), np.float32),
                           "u": np.zeros((n_dev, per, *latent), np.float32)})

  t = time.perf_counter()
  compiled = step.lower(state, batch()).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  plan = {"arguments": mem.argument_size_in_bytes / GIB, "outputs": mem.output_size_in_bytes / GIB,
          "temporaries": mem.temp_size_in_bytes / GIB, "aliased": mem.alias_size_in_bytes / GIB}
  plan_total = plan["arguments"] + plan["outputs"] + plan["temporaries"] - plan["aliased"]
  plan_text = (f"XLA plan per device {plan_total:.2f} GiB (temporaries {plan['temporaries']:.2f}, arguments "
               f"{plan['arguments']:.2f}, outputs {plan['outputs']:.2f}, aliased {plan['aliased']:.2f})")
  print(f"batch {args.batch} x {args.size}^2 on {n_dev} device(s), remat={args.remat}: {plan_text}; "
        f"compile {compile_s:.0f} s; peak RSS so far {_peak_rss_gib():.2f} GiB; load {_load()}", flush=True)
  if args.compile_only:
    return
  if plan_total * n_dev > 0.9 * _available_gib():
    raise SystemExit(f"the step needs {plan_total * n_dev:.1f} GiB, only {_available_gib():.1f} GiB available: "
                     "not running it (try --remat)")

  holder = {"state": state}

  def run():
    holder["state"], terms = compiled(holder["state"], batch())
    jax.block_until_ready(terms)

  t = time.perf_counter()
  run()
  first_s = time.perf_counter() - t
  step_s = _median(run, args.steps)
  step_rss = _peak_rss_gib()

  # One projection over `records` anchors: eval encoder in chunks + the jitted top-k / dual update.
  encode = train._encode_fn(model)
  anchors = rng.integers(0, 256, (args.records, args.size, args.size, 3), np.uint8)
  st = admm.init(args.records, latent)
  keep = admm.keep_count(latent, config.admm.keep_ratio)
  update = jax.jit(admm.update, static_argnames="keep")
  q = train._encode_all(encode, variables, anchors, config.admm.batch_size)  # warm-up / compile
  jax.block_until_ready(update(jnp.asarray(q), jnp.arange(args.records), st, keep=keep))
  enc_s = _median(lambda: train._encode_all(encode, variables, anchors, config.admm.batch_size), 2)
  upd_s = _median(lambda: jax.block_until_ready(update(jnp.asarray(q), jnp.arange(args.records), st,
                                                       keep=keep)), 3)
  per_record = enc_s / args.records

  body = "\n".join([
      "## CAE-ADMM training step and ADMM projection (`benchmarks/cae_admm.py`)",
      "",
      f"CAE-ADMM `{args.variant}` model ({config.model.num_res_blocks} residual blocks, latent {tuple(latent)}, "
      f"remat {'on' if args.remat else 'off'}), {machine_line()}; load average (1/5/15 min) {load_start} "
      f"at the start, {_load()} at the end (2 cores shared with other jobs).",
      "",
      f"Command: `flock /tmp/jaxcomp_timing.lock {command}`",
      "",
      "| measure | value |",
      "| --- | --- |",
      f"| train step, batch {args.batch} of {args.size}x{args.size} (distortion + ADMM penalty on {args.batch} "
      f"anchors, Adam) | {step_s:.1f} s/step, {args.batch / step_s:.2f} images/s (median of {args.steps}) |",
      f"| compile / first step | {compile_s:.0f} s / {first_s:.0f} s |",
      f"| memory of the step | {plan_text}; peak RSS of the process {step_rss:.2f} GiB |",
      f"| ADMM projection over {args.records} records: eval encoder pass | {enc_s:.1f} s "
      f"({1e3 * per_record:.0f} ms/record; {BSDS500_TRAIN} BSDS500 records: {BSDS500_TRAIN * per_record:.0f} s) |",
      f"| ADMM projection: top-k projection + dual update of {args.records} x {int(np.prod(latent))} latents "
      f"(l = {keep}) | {1e3 * upd_s:.1f} ms |",
  ])
  print(body)
  if not args.no_write:
    write_section("cae_admm", body)


if __name__ == "__main__":
  main()

"""Online recurrent learning benchmark for the iterative decoder: BPTT, SAB, UORO, RTRL x five state functions.

Measures, on one machine and one data set (grayscale JPEG patches at 0.35-1.02 bpp):
  1. gradient error against BPTT on a fixed batch (float32),
  2. time per update step (jitted estimator + SGD update), median of repeats,
  3. XLA's compiled temporary memory (`jit(f).lower(...).compile().memory_analysis()`) versus K,
  4. convergence: validation patch PSNR versus steps and wall-clock,
  5. validation PSNR versus K (1, 3, 5, 7, 9, 11), LSTM,
  6. RTRL cost versus hidden size, with the fitted exponent (theory ~ n^4 per step).

Writes a CSV per measurement and plots to docs/online_learning/, and a summary into its section of
docs/benchmarks.md. Run from the repository root:

  python benchmarks/online_learning.py            # the small-scale run reported in docs/online_learning.md
  python benchmarks/online_learning.py --quick    # a smoke run (minutes less; figures are not meaningful)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._report import machine_line, write_section  # noqa: E402
from jaxcomp.data import read_image  # noqa: E402
from jaxcomp.io_utils import write_text_atomic  # noqa: E402
from jaxcomp.methods.rnn_decoder import algorithms, models, patches  # noqa: E402

ALGS = ("bptt", "sab", "uoro", "rtrl")
CELLS = models.CELLS
OUT = ROOT / "docs" / "online_learning"
SAB_KW = {"k_att": 1, "k_top": 2, "k_trunc": 1}


def _images(folder: pathlib.Path, n: int, crop: int) -> list[np.ndarray]:
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")[:n]
  out = []
  for f in files:
    img = read_image(f, grayscale=True)[..., 0]
    h, w = img.shape
    y, x = (h - crop) // 2, (w - crop) // 2
    out.append(img[y:y + crop, x:x + crop])
  return out


def _params(spec, alg, key, dtype=jnp.float32):
  k1, k2 = jax.random.split(key)
  p = models.init_params(k1, spec, dtype=dtype)
  if alg == "sab":
    p["sab"] = algorithms.init_sab(k2, spec, dtype=dtype)
  return p


def _estimator(alg, spec, **sab_kw):
  return algorithms.make_sab(spec, **(sab_kw or SAB_KW)) if alg == "sab" else algorithms.make_estimator(alg, spec)


def _train_step_fn(spec, alg, tx):
  est = _estimator(alg, spec)

  @jax.jit
  def step(params, opt_state, batch, key):
    grads, aux, _ = est.update(params, batch, algorithms.EstimatorState(jnp.zeros((), jnp.int32)), key)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, aux["loss"]

  return step


def _val_psnr(spec, params, val, alg):
  if alg == "sab":
    p_KBD, _ = jax.jit(lambda p, q: algorithms.sab_apply(spec, p, q, k_att=SAB_KW["k_att"], k_top=SAB_KW["k_top"],
                                                         k_trunc=None))(params, val["q"])
    p = jnp.clip(p_KBD[-1], 0, 1)
  else:
    p = jax.jit(lambda pr, q: models.decode(spec, pr, q))(params, val["q"])
  mse = float(jnp.mean((p - val["target"]) ** 2))
  return -10 * np.log10(mse)


def _batches(train, batch, seed):
  rng = np.random.default_rng(seed)
  n = len(train["q"])
  while True:
    idx = rng.integers(0, n, batch)
    yield {"q": jnp.asarray(train["q"][idx]), "target": jnp.asarray(train["target"][idx])}


def _write_csv(name, rows):
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=list(rows[0]))
  w.writeheader()
  w.writerows(rows)
  write_text_atomic(OUT / f"{name}.csv", buf.getvalue())


# ---------------------------------------------------------------------------------------------- measurements


def gradient_error(args, batch_np):
  """Relative L2 error ||g - g_bptt|| / ||g_bptt|| and cosine on one fixed batch, float32."""
  rows = []
  for cell in CELLS:
    spec = models.DecoderSpec(cell=cell, hidden=args.hidden, num_steps=4)
    batch = {k: jnp.asarray(v) for k, v in batch_np.items()}
    params = _params(spec, "bptt", jax.random.key(0))
    st = algorithms.EstimatorState(jnp.zeros((), jnp.int32))
    g_ref = ravel_pytree(algorithms.make_bptt(spec).update(params, batch, st, None)[0])[0]
    for alg in ALGS:
      if alg == "sab":
        # SAB changes the forward pass; its error is against BPTT of the same attention-augmented forward.
        p = _params(spec, "sab", jax.random.key(0))
        ref = ravel_pytree(
            _estimator("sab", spec, k_att=1, k_top=spec.num_steps, k_trunc=None).update(p, batch, st, None)[0])[0]
        g = ravel_pytree(_estimator("sab", spec).update(p, batch, st, None)[0])[0]
      elif alg == "uoro":
        upd = jax.jit(lambda k: ravel_pytree(
            algorithms.make_uoro(spec).update(params, batch, st, k)[0])[0])
        draws = [upd(k) for k in jax.random.split(jax.random.key(1), args.uoro_draws)]
        ref, g = g_ref, draws[0]
        g_mean = jnp.mean(jnp.stack(draws), 0)
        rows.append({"cell": cell, "algorithm": f"uoro_mean{args.uoro_draws}",
                     "rel_error": float(jnp.linalg.norm(g_mean - ref) / jnp.linalg.norm(ref)),
                     "cosine": float(jnp.vdot(g_mean, ref) / jnp.linalg.norm(g_mean) / jnp.linalg.norm(ref))})
      else:
        ref, g = g_ref, ravel_pytree(_estimator(alg, spec).update(params, batch, st, None)[0])[0]
      rows.append({"cell": cell, "algorithm": alg, "rel_error": float(jnp.linalg.norm(g - ref) / jnp.linalg.norm(ref)),
                   "cosine": float(jnp.vdot(g, ref) / jnp.linalg.norm(g) / jnp.linalg.norm(ref))})
  return rows


def _interleaved(fns, rounds, block_s, seed):
  """Median seconds per call of each zero-argument jitted fn, measured in alternation.

  Every fn is called once (compiled, warm) before the clock starts. Each round visits all fns in a fresh random
  order and times a block of calls long enough (~block_s) to swamp timer and dispatch noise; a burst of load from
  other processes then hits every fn alike instead of one fn's whole series. Returns ({name: median s/call},
  {name: [s/call per round]}).
  """
  inner = {}
  for name, fn in fns.items():
    jax.block_until_ready(fn())
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    inner[name] = max(1, int(block_s / max(time.perf_counter() - t0, 1e-6)))
  rng = np.random.default_rng(seed)
  samples = {name: [] for name in fns}
  order = list(fns)
  for _ in range(rounds):
    rng.shuffle(order)
    for name in order:
      fn, n = fns[name], inner[name]
      t0 = time.perf_counter()
      for _ in range(n):
        out = fn()
      jax.block_until_ready(out)
      samples[name].append((time.perf_counter() - t0) / n)
  return {name: float(np.median(v)) for name, v in samples.items()}, samples


def step_time(args, examples, hidden, batch_size, algs):
  """Time per update step (estimator + clipped SGD), every cell x algorithm at one size, measured in alternation.

  x_bptt is the median over rounds of the ratio to the same cell's BPTT timed in the same round (robust to load
  drifting between rounds); x_bptt_lo / x_bptt_hi are its 25th / 75th percentiles, the noise that is left.
  """
  tx = optax.chain(optax.clip_by_global_norm(13.0), optax.sgd(args.lr, momentum=0.9))
  if len(examples["q"]) < batch_size:
    raise ValueError(f"step_time needs {batch_size} examples, got {len(examples['q'])}")
  batch = {k: jnp.asarray(v[:batch_size]) for k, v in examples.items()}
  fns, compile_s = {}, {}
  for cell in CELLS:
    spec = models.DecoderSpec(cell=cell, hidden=hidden, num_steps=4)
    for alg in algs:
      params = _params(spec, alg, jax.random.key(0))
      step = _train_step_fn(spec, alg, tx)
      opt = tx.init(params)
      t0 = time.perf_counter()
      jax.block_until_ready(step(params, opt, batch, jax.random.key(2)))
      compile_s[(cell, alg)] = time.perf_counter() - t0
      fns[(cell, alg)] = (lambda st=step, p=params, o=opt: st(p, o, batch, jax.random.key(2)))
  load0 = os.getloadavg()[0]
  med, samples = _interleaved(fns, args.rounds, args.block_s, seed=hidden)
  load1 = os.getloadavg()[0]
  rows = []
  for (cell, alg), sec in med.items():
    ratio = np.asarray(samples[(cell, alg)]) / np.asarray(samples[(cell, "bptt")])
    rows.append({"cell": cell, "algorithm": alg, "hidden": hidden, "batch": batch_size, "K": 4,
                 "ms_per_step": 1e3 * sec, "x_bptt": float(np.median(ratio)),
                 "x_bptt_lo": float(np.percentile(ratio, 25)), "x_bptt_hi": float(np.percentile(ratio, 75)),
                 "rounds": args.rounds, "compile_s": compile_s[(cell, alg)],
                 "load_1min_start": load0, "load_1min_end": load1})
  return rows


def memory_vs_k(args, batch_np):
  rows = []
  batch = {k: jnp.asarray(v) for k, v in batch_np.items()}
  for k in (1, 3, 5, 7, 9, 11):
    spec = models.DecoderSpec(cell="lstm", hidden=args.hidden, num_steps=k)
    for alg in ALGS:
      params = _params(spec, alg, jax.random.key(0))
      est = _estimator(alg, spec)
      st = algorithms.EstimatorState(jnp.zeros((), jnp.int32))
      compiled = jax.jit(lambda p, b, key: est.update(p, b, st, key)[0]).lower(
          params, batch, jax.random.key(0)).compile()
      mem = compiled.memory_analysis()
      rows.append({"algorithm": alg, "K": k, "temp_bytes": int(mem.temp_size_in_bytes),
                   "argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes)})
  return rows


def convergence(args, train, val):
  rows = []
  tx = optax.chain(optax.clip_by_global_norm(13.0), optax.sgd(args.lr, momentum=0.9))
  for cell in CELLS:
    spec = models.DecoderSpec(cell=cell, hidden=args.hidden, num_steps=4)
    for alg in ALGS:
      rows += _train_curve(spec, alg, tx, train, val, args.steps, args.eval_every, args.batch, cell)
  return rows


def _train_curve(spec, alg, tx, train, val, steps, eval_every, batch, cell):
  params = _params(spec, alg, jax.random.key(0))
  opt = tx.init(params)
  step = _train_step_fn(spec, alg, tx)
  data = _batches(train, batch, seed=0)
  key = jax.random.key(3)
  jax.block_until_ready(step(params, opt, next(_batches(train, batch, 99)), key))  # compile outside the clock
  rows = [{"cell": cell, "algorithm": alg, "K": spec.num_steps, "step": 0, "seconds": 0.0,
           "val_psnr": _val_psnr(spec, params, val, alg)}]
  elapsed = 0.0
  for i in range(1, steps + 1):
    key, sub = jax.random.split(key)
    b = next(data)
    t0 = time.perf_counter()
    params, opt, loss = step(params, opt, b, sub)
    jax.block_until_ready(loss)
    elapsed += time.perf_counter() - t0
    if i % eval_every == 0 or i == steps:
      rows.append({"cell": cell, "algorithm": alg, "K": spec.num_steps, "step": i, "seconds": elapsed,
                   "val_psnr": _val_psnr(spec, params, val, alg)})
  return rows


def psnr_vs_k(args, train, val):
  rows = []
  tx = optax.chain(optax.clip_by_global_norm(13.0), optax.sgd(args.lr, momentum=0.9))
  for k in (1, 3, 5, 7, 9, 11):
    spec = models.DecoderSpec(cell="lstm", hidden=args.hidden, num_steps=k)
    for alg in ALGS:
      curve = _train_curve(spec, alg, tx, train, val, args.steps, args.steps, args.batch, "lstm")
      rows.append({"algorithm": alg, "K": k, "val_psnr": curve[-1]["val_psnr"], "train_seconds": curve[-1]["seconds"]})
  return rows


def rtrl_scaling(args):
  """Time of one RTRL step per example versus hidden size n (Elman and LSTM), measured in alternation.

  The carried term (dF/dz) M_{t-1} costs Z * (Z-side width of dF/dz) * P multiply-adds ("carried_macs"): Elman
  n * n * (n^2 + 2n), LSTM n * 4n * (4n^2 + 5n) (z = [s, c], only s enters the gate matmul); that is the n^4 of
  full RTRL. One example per call by default: repeated calls (`_interleaved` times blocks of them) amortise the
  fixed per-call cost. `--rtrl-macs` > 0 instead vmaps a batch of examples per call (about that many carried
  multiply-adds, at most 256 examples); on CPU that was slower per example (the batch's B x Z x P influence
  matrices leave the cache), see docs/online_learning.md.
  """
  rows, fns, meta = [], {}, {}
  for cell in ("elman", "lstm"):
    sizes = args.rtrl_sizes if cell == "elman" else [n // 2 for n in args.rtrl_sizes]
    for n in sizes:
      spec = models.DecoderSpec(cell=cell, hidden=n, num_steps=1)
      params = models.init_params(jax.random.key(0), spec)
      flat, unravel = ravel_pytree(params["cell"])
      f = algorithms._recurrent_fn(spec, unravel, flat.shape[0])
      phi = jnp.concatenate([flat, 0.1 * jnp.ones((n,))])
      macs = n * (4 * n if cell == "lstm" else n) * int(phi.shape[0])
      b = int(min(256, max(1, round(args.rtrl_macs / macs)))) if args.rtrl_macs > 0 else 1
      trace = algorithms.rtrl_init(spec, phi.shape[0])
      lead = (b,) if args.rtrl_macs > 0 else ()
      trace = algorithms.RTRLTrace(jnp.full((*lead, *trace.z.shape), 0.1),
                                   jnp.full((*lead, *trace.influence.shape), 1e-3))
      step = lambda tr, ph=phi, f=f: algorithms.rtrl_step(f, ph, tr)
      fn = jax.jit(jax.vmap(step) if lead else step)
      fns[(cell, n)] = (lambda fn=fn, tr=trace: fn(tr))
      meta[(cell, n)] = {"cell": cell, "hidden": n, "num_params": int(phi.shape[0]), "state": spec.state_size,
                         "carried_macs": macs, "examples_per_call": b}
  load0 = os.getloadavg()[0]
  med, _ = _interleaved(fns, args.rtrl_rounds, args.block_s, seed=7)
  load1 = os.getloadavg()[0]
  for key, sec in med.items():
    b = meta[key]["examples_per_call"]
    rows.append({**meta[key], "ms_per_example_step": 1e3 * sec / b,
                 "gmacs_per_s": meta[key]["carried_macs"] * b / sec / 1e9,
                 "load_1min_start": load0, "load_1min_end": load1})
  return rows


def rtrl_fits(rows):
  """Slope of log time on log n per cell: over all sizes, over the largest four, and between neighbouring sizes."""
  fits = {}
  for cell in ("elman", "lstm"):
    rs = [r for r in rows if r["cell"] == cell]
    ns, ts = np.log([r["hidden"] for r in rs]), np.log([r["ms_per_example_step"] for r in rs])
    local = np.diff(ts) / np.diff(ns)
    ms = np.log([r["carried_macs"] for r in rs])
    fits[cell] = {"all": float(np.polyfit(ns, ts, 1)[0]), "upper": float(np.polyfit(ns[-4:], ts[-4:], 1)[0]),
                  "macs_all": float(np.polyfit(ns, ms, 1)[0]), "macs_upper": float(np.polyfit(ns[-4:], ms[-4:], 1)[0]),
                  "n_all": (rs[0]["hidden"], rs[-1]["hidden"]), "n_upper": (rs[-4]["hidden"], rs[-1]["hidden"]),
                  "local": [float(x) for x in local]}
  return fits


# ------------------------------------------------------------------------------------------------- plotting


def _plots(conv, kpsnr, mem, scal):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for alg in ALGS:
    rs = [r for r in conv if r["algorithm"] == alg and r["cell"] == "lstm"]
    axes[0].plot([r["step"] for r in rs], [r["val_psnr"] for r in rs], label=alg)
    axes[1].plot([r["seconds"] for r in rs], [r["val_psnr"] for r in rs], label=alg)
  axes[0].set_xlabel("step"); axes[1].set_xlabel("seconds"); axes[0].set_ylabel("validation PSNR (dB)")
  axes[0].legend(); fig.suptitle("LSTM decoder: convergence"); fig.tight_layout()
  _save(fig, "convergence.png")

  fig, axes = plt.subplots(1, 3, figsize=(14, 4))
  for alg in ALGS:
    rs = [r for r in kpsnr if r["algorithm"] == alg]
    axes[0].plot([r["K"] for r in rs], [r["val_psnr"] for r in rs], "o-", label=alg)
    rs = [r for r in mem if r["algorithm"] == alg]
    axes[1].plot([r["K"] for r in rs], [r["temp_bytes"] / 2**20 for r in rs], "o-", label=alg)
  axes[0].set_xlabel("K"); axes[0].set_ylabel("validation PSNR (dB)"); axes[0].legend()
  axes[1].set_xlabel("K"); axes[1].set_ylabel("XLA temp memory (MiB)"); axes[1].legend()
  for cell in ("elman", "lstm"):
    rs = [r for r in scal if r["cell"] == cell]
    ns, ts = np.array([r["hidden"] for r in rs], float), np.array([r["ms_per_example_step"] for r in rs])
    line = axes[2].loglog(ns, ts, "o-", label=f"RTRL {cell}")[0]
    axes[2].loglog(ns, ts[-1] * (ns / ns[-1]) ** 4, ":", color=line.get_color(), label=f"n^4 through {cell}'s last")
  axes[2].set_xlabel("hidden units n"); axes[2].set_ylabel("ms per RTRL step and example"); axes[2].legend()
  fig.tight_layout()
  _save(fig, "k_memory_scaling.png")


def _save(fig, name):
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=90)
  from jaxcomp.io_utils import write_bytes_atomic
  write_bytes_atomic(OUT / name, buf.getvalue())


def _table(rows, cols, fmt=None):
  fmt = fmt or {}
  head = "| " + " | ".join(cols) + " |\n| " + " | ".join("---" for _ in cols) + " |\n"
  body = "".join("| " + " | ".join(fmt.get(c, "{}").format(r[c]) for c in cols) + " |\n" for r in rows)
  return head + body




MEASUREMENTS = ("gradient_error", "step_time", "memory_vs_k", "rtrl_scaling", "convergence", "psnr_vs_k")
BIG_ALGS = ("bptt", "sab", "uoro")  # RTRL at 512 hidden units: a ~4 GB influence matrix per example


def _parse(value: str):
  for cast in (int, float):
    try:
      return cast(value)
    except ValueError:
      pass
  return value


def _read_csv(name):
  path = OUT / f"{name}.csv"
  if not path.exists():
    raise SystemExit(f"{path} is missing: run the benchmark without --only (or with --only {name}) first")
  with open(path, newline="") as f:
    return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _load(value) -> str:
  return f"{value:.1f}" if isinstance(value, (int, float)) else str(value)


def _report(results, runs, args, data_line):
  """The Markdown section of docs/benchmarks.md, built from the rows of every measurement."""
  small_hidden = min(r["hidden"] for r in results["step_time"])  # the rows may come from an earlier run's CSV
  small = [r for r in results["step_time"] if r["hidden"] == small_hidden]
  big = [r for r in results["step_time"] if r["hidden"] != small_hidden]
  times = {(r["cell"], r["algorithm"]): r for r in small}
  final = {}
  for r in results["convergence"]:
    final[(r["cell"], r["algorithm"])] = r
  summary = [{"cell": c, "algorithm": a, "ms_per_step": times[(c, a)]["ms_per_step"],
              "x_bptt": f"{times[(c, a)]['x_bptt']:.2f} ({times[(c, a)]['x_bptt_lo']:.2f}-"
                        f"{times[(c, a)]['x_bptt_hi']:.2f})",
              "final_val_psnr": final[(c, a)]["val_psnr"], "train_s": final[(c, a)]["seconds"],
              "grad_rel_error": next(r["rel_error"] for r in results["gradient_error"]
                                     if r["cell"] == c and r["algorithm"] == a)}
             for c in CELLS for a in ALGS]
  mem = {(r["algorithm"], r["K"]): r["temp_bytes"] for r in results["memory_vs_k"]}
  mem_rows = [{"algorithm": a, **{f"K={k}": f"{mem[(a, k)] / 2**20:.2f}" for k in (1, 3, 5, 7, 9, 11)}} for a in ALGS]
  kp = {(r["algorithm"], r["K"]): r["val_psnr"] for r in results["psnr_vs_k"]}
  k_rows = [{"algorithm": a, **{f"K={k}": f"{kp[(a, k)]:.2f}" for k in (1, 3, 5, 7, 9, 11)}} for a in ALGS]
  target = []
  for rows in (small, big):
    for r in rows:
      if r["algorithm"] == "uoro":
        bp = next(x for x in rows if x["cell"] == r["cell"] and x["algorithm"] == "bptt")
        target.append({"hidden": r["hidden"], "batch": r["batch"], "cell": r["cell"], "bptt_ms": bp["ms_per_step"],
                       "uoro_ms": r["ms_per_step"], "x_bptt": f"{r['x_bptt']:.2f}",
                       "iqr": f"{r['x_bptt_lo']:.2f}-{r['x_bptt_hi']:.2f}",
                       "met": "yes" if r["x_bptt"] <= 3.0 else "no"})
  big_rows = [{**r, "x": f"{r['x_bptt']:.2f} ({r['x_bptt_lo']:.2f}-{r['x_bptt_hi']:.2f})"} for r in big]
  fits = rtrl_fits(results["rtrl_scaling"])
  fit_text = "; ".join(
      f"{c}: {f['all']:.2f} over n = {f['n_all'][0]}..{f['n_all'][1]} (carried multiply-adds: {f['macs_all']:.2f}), "
      f"{f['upper']:.2f} over n = {f['n_upper'][0]}..{f['n_upper'][1]} ({f['macs_upper']:.2f}); between "
      f"neighbouring sizes {', '.join(f'{x:.1f}' for x in f['local'])}"
      for c, f in fits.items())
  run_lines = "".join(f"- {name}: `{m['command']}`, {m['utc']}, 1-min load {_load(m['load_1min'])}\n"
                      for name, m in runs.items())
  return (f"## Online recurrent learning (rnn_decoder)\n\n{machine_line()}. Measurements (command, time, load):\n\n"
          f"{run_lines}\n{data_line}\n\n"
          "Small scale, every algorithm (step time: median over alternating rounds; x_bptt: median of the per-round "
          "ratio to the same cell's BPTT, its interquartile range in brackets):\n\n"
          + _table(summary, ["cell", "algorithm", "ms_per_step", "x_bptt", "grad_rel_error", "final_val_psnr",
                             "train_s"],
                   {"ms_per_step": "{:.2f}", "grad_rel_error": "{:.2e}", "final_val_psnr": "{:.2f}",
                    "train_s": "{:.1f}"})
          + (f"\nPaper-size model (hidden {big[0]['hidden']}, batch {big[0]['batch']}, K = 4; RTRL left out: its "
             "influence matrix would be ~4 GB per example):\n\n"
             + _table(big_rows, ["cell", "algorithm", "ms_per_step", "x"], {"ms_per_step": "{:.1f}"}) if big else "")
          + "\nTarget: UORO step time <= 3x BPTT's (same model, same K):\n\n"
          + _table(target, ["hidden", "batch", "cell", "bptt_ms", "uoro_ms", "x_bptt", "iqr", "met"],
                   {"bptt_ms": "{:.2f}", "uoro_ms": "{:.2f}"})
          + "\nXLA temporary memory of one LSTM gradient (MiB) versus K:\n\n"
          + _table(mem_rows, ["algorithm"] + [f"K={k}" for k in (1, 3, 5, 7, 9, 11)])
          + "\nValidation PSNR (dB) of the LSTM trained at each K:\n\n"
          + _table(k_rows, ["algorithm"] + [f"K={k}" for k in (1, 3, 5, 7, 9, 11)])
          + "\nRTRL step time per example versus hidden size (measured in alternation):\n\n"
          + _table(results["rtrl_scaling"], ["cell", "hidden", "num_params", "carried_macs", "examples_per_call",
                                              "ms_per_example_step", "gmacs_per_s"],
                   {"ms_per_example_step": "{:.3f}", "gmacs_per_s": "{:.1f}"})
          + f"\nFitted exponent of RTRL time in n (theory: 4): {fit_text}.\n")


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="smoke run: few steps, small sizes")
  ap.add_argument("--only", nargs="+", choices=MEASUREMENTS,
                  help="re-measure only these; the report takes the others from docs/online_learning/*.csv")
  ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
  ap.add_argument("--hidden", type=int, default=16)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--big-hidden", type=int, default=512, help="step time also at this size (0: skip)")
  ap.add_argument("--big-batch", type=int, default=256)
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--eval-every", type=int, default=25)
  ap.add_argument("--lr", type=float, default=1e-3)
  ap.add_argument("--rounds", type=int, default=15, help="alternating timing rounds for the step time")
  ap.add_argument("--block-s", type=float, default=0.05, help="seconds of calls per timed block")
  ap.add_argument("--uoro-draws", type=int, default=200)
  ap.add_argument("--rtrl-sizes", type=int, nargs="+", default=[32, 64, 96, 128, 192, 256, 320],
                  help="Elman hidden sizes; the LSTM (state 2n) uses half of each")
  ap.add_argument("--rtrl-rounds", type=int, default=5)
  ap.add_argument("--rtrl-macs", type=float, default=0.0,
                  help="vmap a batch of examples with about this many carried multiply-adds per call (0: one example)")
  ap.add_argument("--report-only", action="store_true",
                  help="measure nothing: rebuild the report and plots from docs/online_learning/*.csv")
  ap.add_argument("--no-report", action="store_true", help="do not write docs/")
  args = ap.parse_args(argv)
  if args.quick:
    args.hidden, args.batch, args.steps, args.eval_every, args.rounds = 8, 16, 10, 5, 3
    args.big_hidden, args.big_batch, args.rtrl_rounds = 16, 64, 3
    args.uoro_draws, args.rtrl_sizes = 10, [8, 16, 24, 32]
  if len(args.rtrl_sizes) < 4:
    ap.error("--rtrl-sizes: the exponent fit needs at least four sizes")
  command = "python benchmarks/online_learning.py " + " ".join(argv if argv is not None else sys.argv[1:])
  todo = () if args.report_only else (args.only or MEASUREMENTS)

  data = pathlib.Path(args.data)
  t0 = time.time()
  train = patches.build_examples(_images(data / "photos-train", 6 if not args.quick else 2, 256), seed=0)
  val = patches.build_examples(_images(data / "kodak", 2, 256), seed=1)
  val = {k: jnp.asarray(v) for k, v in val.items() if k != "bpp"}
  examples = {k: v for k, v in train.items() if k != "bpp"}
  fixed = {k: v[:args.batch] for k, v in examples.items()}
  plain = float(-10 * np.log10(np.mean((np.asarray(val["q"][:, 4]) - np.asarray(val["target"])) ** 2)))
  data_line = (f"Data: train {len(train['q'])} patches of {6 if not args.quick else 2} photos-train crops (256x256, "
               f"JPEG at {train['bpp'].min():.2f}-{train['bpp'].max():.2f} bpp), validation {len(val['q'])} patches "
               f"of 2 Kodak crops (plain JPEG: {plain:.2f} dB). Small scale: hidden {args.hidden}, batch {args.batch},"
               f" K = 4 unless stated, {args.steps} SGD steps (lr {args.lr}, momentum 0.9, clip 13). SAB: k_att 1, "
               "k_top 2, k_trunc 1; its gradient error is against BPTT of the same attention-augmented forward. UORO: "
               f"one draw (the mean of {args.uoro_draws} draws is in docs/online_learning/gradient_error.csv).")
  print(f"{data_line} ({time.time() - t0:.0f} s)")

  jobs = {"gradient_error": lambda: gradient_error(args, fixed),
          "step_time": lambda: (step_time(args, examples, args.hidden, args.batch, ALGS)
                                + (step_time(args, examples, args.big_hidden, args.big_batch, BIG_ALGS)
                                   if args.big_hidden else [])),
          "memory_vs_k": lambda: memory_vs_k(args, fixed),
          "rtrl_scaling": lambda: rtrl_scaling(args),
          "convergence": lambda: convergence(args, train, val),
          "psnr_vs_k": lambda: psnr_vs_k(args, train, val)}
  runs_path = OUT / "runs.json"
  runs = json.loads(runs_path.read_text()) if runs_path.exists() and len(todo) < len(MEASUREMENTS) else {}
  results = {}
  for name in MEASUREMENTS:
    if name not in todo:
      results[name] = _read_csv(name)
      continue
    t, load = time.time(), os.getloadavg()[0]
    results[name] = jobs[name]()
    runs[name] = {"command": command.strip(), "utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "load_1min": load, "seconds": round(time.time() - t)}
    print(f"[{name}] {time.time() - t:.0f} s, 1-min load {load:.1f} -> {os.getloadavg()[0]:.1f}")
  runs = {name: runs[name] for name in MEASUREMENTS if name in runs}

  body = _report(results, runs, args, data_line)
  print(body)
  if not args.no_report:
    for name in todo:
      _write_csv(name, results[name])
    write_text_atomic(runs_path, json.dumps(runs, indent=1) + "\n")
    _plots(results["convergence"], results["psnr_vs_k"], results["memory_vs_k"], results["rtrl_scaling"])
    write_section("online_learning", body)


if __name__ == "__main__":
  main()

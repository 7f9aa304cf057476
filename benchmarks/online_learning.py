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


def _timeit(fn, repeats):
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return float(np.median(ts))


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


def step_time(args, batch_np):
  rows = []
  tx = optax.chain(optax.clip_by_global_norm(13.0), optax.sgd(args.lr, momentum=0.9))
  batch = {k: jnp.asarray(v) for k, v in batch_np.items()}
  for cell in CELLS:
    spec = models.DecoderSpec(cell=cell, hidden=args.hidden, num_steps=4)
    for alg in ALGS:
      params = _params(spec, alg, jax.random.key(0))
      step = _train_step_fn(spec, alg, tx)
      opt = tx.init(params)
      key = jax.random.key(2)
      t0 = time.perf_counter()
      jax.block_until_ready(step(params, opt, batch, key))
      compile_s = time.perf_counter() - t0
      sec = _timeit(lambda: step(params, opt, batch, key), args.repeats)
      rows.append({"cell": cell, "algorithm": alg, "hidden": args.hidden, "batch": args.batch, "K": 4,
                   "ms_per_step": 1e3 * sec, "compile_s": compile_s})
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
  """Time of one RTRL step (one example) versus hidden size n, Elman and LSTM; slope of log time on log n."""
  rows, fits = [], {}
  for cell in ("elman", "lstm"):
    sizes = args.rtrl_sizes if cell == "elman" else [n // 2 for n in args.rtrl_sizes]
    for n in sizes:
      spec = models.DecoderSpec(cell=cell, hidden=n, num_steps=1)
      params = models.init_params(jax.random.key(0), spec)
      flat, unravel = ravel_pytree(params["cell"])
      f = algorithms._recurrent_fn(spec, unravel, flat.shape[0])
      phi = jnp.concatenate([flat, 0.1 * jnp.ones((n,))])
      trace = algorithms.rtrl_init(spec, phi.shape[0])
      trace = algorithms.RTRLTrace(trace.z + 0.1, trace.influence + 1e-3)
      fn = jax.jit(lambda ph, tr: algorithms.rtrl_step(f, ph, tr))
      jax.block_until_ready(fn(phi, trace))
      sec = _timeit(lambda: fn(phi, trace), args.repeats)
      rows.append({"cell": cell, "hidden": n, "num_params": int(phi.shape[0]), "state": spec.state_size,
                   "ms_per_step": 1e3 * sec})
    ns = np.log([r["hidden"] for r in rows if r["cell"] == cell])
    ts = np.log([r["ms_per_step"] for r in rows if r["cell"] == cell])
    fits[cell] = float(np.polyfit(ns, ts, 1)[0])
  return rows, fits


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
    axes[2].loglog([r["hidden"] for r in rs], [r["ms_per_step"] for r in rs], "o-", label=f"RTRL {cell}")
  axes[2].set_xlabel("hidden units n"); axes[2].set_ylabel("ms per RTRL step"); axes[2].legend()
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


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--quick", action="store_true", help="smoke run: few steps, small sizes")
  ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
  ap.add_argument("--hidden", type=int, default=16)
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=300)
  ap.add_argument("--eval-every", type=int, default=25)
  ap.add_argument("--lr", type=float, default=1e-3)
  ap.add_argument("--repeats", type=int, default=10)
  ap.add_argument("--uoro-draws", type=int, default=200)
  ap.add_argument("--rtrl-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
  ap.add_argument("--no-report", action="store_true", help="do not write docs/")
  args = ap.parse_args(argv)
  if args.quick:
    args.hidden, args.batch, args.steps, args.eval_every, args.repeats = 8, 16, 10, 5, 3
    args.uoro_draws, args.rtrl_sizes = 10, [8, 16, 32, 64]
  command = "python benchmarks/online_learning.py " + " ".join(argv if argv is not None else sys.argv[1:])

  data = pathlib.Path(args.data)
  t0 = time.time()
  train = patches.build_examples(_images(data / "photos-train", 6 if not args.quick else 2, 256), seed=0)
  val = patches.build_examples(_images(data / "kodak", 2, 256), seed=1)
  val = {k: jnp.asarray(v) for k, v in val.items() if k != "bpp"}
  fixed = {k: v[:args.batch] for k, v in train.items() if k != "bpp"}
  print(f"data: {len(train['q'])} train / {len(val['q'])} validation patches, "
        f"train rates {train['bpp'].min():.2f}-{train['bpp'].max():.2f} bpp ({time.time() - t0:.0f} s)")
  plain = float(-10 * np.log10(np.mean((np.asarray(val["q"][:, 4]) - np.asarray(val["target"])) ** 2)))
  print(f"validation PSNR of the plain JPEG patches: {plain:.2f} dB")

  results = {}
  for name, fn in (("gradient_error", lambda: gradient_error(args, fixed)),
                   ("step_time", lambda: step_time(args, fixed)),
                   ("memory_vs_k", lambda: memory_vs_k(args, fixed)),
                   ("rtrl_scaling", lambda: rtrl_scaling(args)),
                   ("convergence", lambda: convergence(args, train, val)),
                   ("psnr_vs_k", lambda: psnr_vs_k(args, train, val))):
    t = time.time()
    results[name] = fn()
    print(f"[{name}] {time.time() - t:.0f} s")
  scal, fits = results["rtrl_scaling"]
  results["rtrl_scaling"] = scal

  times = {(r["cell"], r["algorithm"]): r["ms_per_step"] for r in results["step_time"]}
  for r in results["step_time"]:
    r["x_bptt"] = r["ms_per_step"] / times[(r["cell"], "bptt")]
  final = {}
  for r in results["convergence"]:
    final[(r["cell"], r["algorithm"])] = r
  summary = [{"cell": c, "algorithm": a, "ms_per_step": times[(c, a)], "x_bptt": times[(c, a)] / times[(c, "bptt")],
              "final_val_psnr": final[(c, a)]["val_psnr"], "train_s": final[(c, a)]["seconds"],
              "grad_rel_error": next(r["rel_error"] for r in results["gradient_error"]
                                     if r["cell"] == c and r["algorithm"] == a)}
             for c in CELLS for a in ALGS]
  mem = {(r["algorithm"], r["K"]): r["temp_bytes"] for r in results["memory_vs_k"]}
  mem_rows = [{"algorithm": a, **{f"K={k}": f"{mem[(a, k)] / 2**20:.2f}" for k in (1, 3, 5, 7, 9, 11)}} for a in ALGS]
  kp = {(r["algorithm"], r["K"]): r["val_psnr"] for r in results["psnr_vs_k"]}
  k_rows = [{"algorithm": a, **{f"K={k}": f"{kp[(a, k)]:.2f}" for k in (1, 3, 5, 7, 9, 11)}} for a in ALGS]

  body = (f"## Online recurrent learning (rnn_decoder)\n\n`{command}` — {machine_line()}; hidden {args.hidden}, "
          f"batch {args.batch}, K = 4 unless stated, {args.steps} SGD steps (lr {args.lr}, momentum 0.9, clip 13); "
          f"train {len(train['q'])} patches of 6 photos-train crops, validation {len(val['q'])} patches of 2 Kodak "
          f"crops (plain JPEG: {plain:.2f} dB). SAB: k_att 1, k_top 2, k_trunc 1; its gradient error is against "
          f"BPTT of the same attention-augmented forward. UORO: one draw "
          f"(mean of {args.uoro_draws} draws in docs/online_learning/gradient_error.csv).\n\n"
          + _table(summary, ["cell", "algorithm", "ms_per_step", "x_bptt", "grad_rel_error", "final_val_psnr",
                             "train_s"],
                   {"ms_per_step": "{:.2f}", "x_bptt": "{:.2f}", "grad_rel_error": "{:.2e}",
                    "final_val_psnr": "{:.2f}", "train_s": "{:.1f}"})
          + "\nXLA temporary memory of one LSTM gradient (MiB) versus K:\n\n"
          + _table(mem_rows, ["algorithm"] + [f"K={k}" for k in (1, 3, 5, 7, 9, 11)])
          + "\nValidation PSNR (dB) of the LSTM trained at each K:\n\n"
          + _table(k_rows, ["algorithm"] + [f"K={k}" for k in (1, 3, 5, 7, 9, 11)])
          + "\nRTRL step time versus hidden size (one example):\n\n"
          + _table(scal, ["cell", "hidden", "num_params", "state", "ms_per_step"], {"ms_per_step": "{:.3f}"})
          + "\nFitted exponent of RTRL time in n: "
          + ", ".join(f"{c} {e:.2f}" for c, e in fits.items()) + " (theory 4 for large n).\n")
  print(body)
  if not args.no_report:
    for name, rows in results.items():
      _write_csv(name, rows)
    _plots(results["convergence"], results["psnr_vs_k"], results["memory_vs_k"], scal)
    write_section("online_learning", body)


if __name__ == "__main__":
  main()

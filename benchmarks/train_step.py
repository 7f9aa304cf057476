"""Training-step throughput of the ProxIQA compression network (BLS with CompressAI's bmshj2018 layout, N=128, M=192)
against CompressAI's `bmshj2018_factorized(quality=3)` in the same run, and the transposed-convolution gradient
micro-benchmark behind `jaxcomp.nn.ConvTranspose`.

  python benchmarks/train_step.py [--size 256] [--batch 8] [--steps 5] [--no-write]

Both steps do the same work: forward with uniform noise, rate + 255^2 * lambda * MSE, backward, Adam on the
transforms and Adam on the quantiles (aux loss). Timings are medians after a warm-up; compile time is excluded and
reported separately. The two implementations are timed alternately (the machine is shared and noisy) and the ratio is
the figure to quote. PyTorch runs with OMP_WAIT_POLICY=PASSIVE (see ../shared/notes/performance.md). torch and
CompressAI are optional: without them only the JAX figures are written. The JAX step is timed twice, with XLA's
default CPU options and with `jaxcomp.nn.cpu_compiler_options()` (convolutions on Eigen instead of YNNPACK).
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax import lax  # noqa: E402

from benchmarks._report import machine_line, write_section  # noqa: E402
from jaxcomp.entropy import rate_bits  # noqa: E402
from jaxcomp.methods.proxiqa import models  # noqa: E402
from jaxcomp.nn import conv_transpose, cpu_compiler_options  # noqa: E402

LMBDA = 0.0067  # CompressAI's lambda for quality 3


def _median_time(fn, steps: int) -> float:
  ts = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t)
  return statistics.median(ts)


def jax_step(batch: int, size: int, compiler_options: dict | None = None):
  """A jitted BLS training step, the state donated; returns (run_once, compile_seconds)."""
  model = models.BLS(N=128, M=192, layout="bmshj2018")
  x = jax.random.uniform(jax.random.key(0), (batch, size, size, 3))
  params = jax.jit(lambda k: model.init({"params": k, "noise": k}, x[:1, :64, :64], training=True))(
      jax.random.key(1))["params"]
  labels = jax.tree_util.tree_map_with_path(lambda p, _: "aux" if p[-1].key == "quantiles" else "main", params)
  tx = optax.multi_transform({"main": optax.adam(1e-4), "aux": optax.adam(1e-3)}, labels)
  opt = tx.init(params)

  def loss_fn(p, x, key):
    out = model.apply({"params": p}, x, training=True, rngs={"noise": key})
    bpp = rate_bits(out["likelihoods"]["y"]) / (x.shape[0] * x.shape[1] * x.shape[2])
    mse = jnp.mean((out["x_hat"] - x) ** 2)
    return LMBDA * 255 ** 2 * mse + bpp + model.apply({"params": p}, method=models.BLS.aux_loss)

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(p, opt, x, key):
    g = jax.grad(loss_fn)(p, x, key)
    upd, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, upd), opt

  t = time.perf_counter()
  compiled = step.lower(params, opt, x, jax.random.key(2)).compile(compiler_options=compiler_options or {})
  compile_s = time.perf_counter() - t
  state = {"p": params, "opt": opt, "i": 0}

  def run():
    state["i"] += 1
    state["p"], state["opt"] = compiled(state["p"], state["opt"], x, jax.random.key(state["i"]))
    jax.block_until_ready(state["p"])

  run()
  return run, compile_s


def torch_step(batch: int, size: int):
  """CompressAI bmshj2018_factorized(quality=3) step, as its examples/train.py does; None without torch."""
  try:
    import torch
  except ImportError:
    return None
  try:
    from compressai.zoo import bmshj2018_factorized
  except ImportError:
    return None
  except RuntimeError as e:
    # A torchvision wheel built for another torch (e.g. the CUDA wheel beside a +cpu torch) fails to register its
    # C ops. CompressAI only reads torchvision.transforms into a registry of data transforms that this step never
    # uses, so empty modules stand in for it; the model code timed here does not touch torchvision.
    print(f"note: torchvision unusable ({e}); importing CompressAI without it")
    import types
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.") or
                 m.startswith("compressai")]:
      del sys.modules[name]
    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tv.transforms})
    from compressai.zoo import bmshj2018_factorized
  torch.manual_seed(0)
  net = bmshj2018_factorized(quality=3, pretrained=False).train()
  main = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
  aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
  opt, aux_opt = torch.optim.Adam(main, lr=1e-4), torch.optim.Adam(aux, lr=1e-3)
  x = torch.rand(batch, 3, size, size)

  def run():
    opt.zero_grad()
    aux_opt.zero_grad()
    out = net(x)
    bpp = sum(-torch.log2(l).sum() for l in out["likelihoods"].values()) / (batch * size * size)
    loss = LMBDA * 255 ** 2 * torch.mean((out["x_hat"] - x) ** 2) + bpp
    loss.backward()
    opt.step()
    aux_loss = net.aux_loss()
    aux_loss.backward()
    aux_opt.step()

  run()
  return run, torch.__version__


def conv_transpose_grad(steps: int):
  """Gradient (input + kernel) of a 5x5 stride-2 transposed conv, 8x32x32x128 -> 8x64x64x128."""
  x = jax.random.normal(jax.random.key(0), (8, 32, 32, 128))
  k = jax.random.normal(jax.random.key(1), (5, 5, 128, 128)) * 0.01
  pad = ((2, 3), (2, 3))
  native = lambda x, k: lax.conv_transpose(x, k, (2, 2), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  fast = lambda x, k: conv_transpose(x, k, (2, 2), pad)
  out = {}
  for name, f in (("fast", fast), ("native", native)):
    g = jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k) ** 2), argnums=(0, 1)))
    jax.block_until_ready(g(x, k))
    out[name] = _median_time(lambda: jax.block_until_ready(g(x, k)), steps)
  return out


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--size", type=int, default=256)
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--no-write", action="store_true")
  args = ap.parse_args()
  cmd = "python benchmarks/train_step.py" + "".join(
      f" --{k} {v}" for k, v in (("size", args.size), ("batch", args.batch), ("steps", args.steps))
      if v != ap.get_default(k))

  ct = conv_transpose_grad(max(3, args.steps))
  print(f"conv_transpose grad: fast {ct['fast'] * 1e3:.0f} ms, native {ct['native'] * 1e3:.0f} ms, "
        f"speedup {ct['native'] / ct['fast']:.1f}x")

  run_jax, compile_s = jax_step(args.batch, args.size)
  opts = cpu_compiler_options()
  run_opt, compile_opt = jax_step(args.batch, args.size, opts) if opts else (None, 0.0)
  peer = torch_step(args.batch, args.size)
  jax_ts, opt_ts, torch_ts = [], [], []
  for _ in range(args.steps):  # alternate so all see the same machine load
    jax_ts.append(_median_time(run_jax, 1))
    if run_opt is not None:
      opt_ts.append(_median_time(run_opt, 1))
    if peer is not None:
      torch_ts.append(_median_time(peer[0], 1))
  tj = statistics.median(jax_ts)
  to = statistics.median(opt_ts) if opt_ts else None
  n_img = args.batch
  load = os.getloadavg()[0]
  lines = [f"Machine: {machine_line()}, 1-min load average {load:.1f} at the end of the run (other jobs shared "
           f"the cores: compare the alternating rows, not absolute times across runs). Command: `{cmd}`", "",
           "| what | median s/step | images/s |", "| --- | --- | --- |",
           f"| jaxcomp BLS (bmshj2018 layout, N=128, M=192), batch {n_img} of {args.size}^2, Adam + aux "
           f"(compile {compile_s:.1f} s, excluded), XLA's default CPU options | {tj:.3f} | {n_img / tj:.1f} |"]
  print(f"jaxcomp BLS: {tj:.3f} s/step, {n_img / tj:.1f} images/s (compile {compile_s:.1f} s)")
  if to is not None:
    lines.append(f"| same, `jax.jit(..., compiler_options=jaxcomp.nn.cpu_compiler_options())` (compile "
                 f"{compile_opt:.1f} s) | {to:.3f} | {n_img / to:.1f} |")
    print(f"jaxcomp BLS with cpu_compiler_options: {to:.3f} s/step, {n_img / to:.1f} images/s")
  if peer is not None:
    tt = statistics.median(torch_ts)
    lines.append(f"| CompressAI bmshj2018_factorized(quality=3), torch {peer[1]}, OMP_WAIT_POLICY=PASSIVE | "
                 f"{tt:.3f} | {n_img / tt:.1f} |")
    ratio = f"**{tj / tt:.2f}** with XLA's default options"
    if to is not None:
      ratio += f", **{to / tt:.2f}** with `cpu_compiler_options()`"
    lines += ["", f"jaxcomp / CompressAI time ratio: {ratio} (< 1: jaxcomp faster), medians of {args.steps} "
              "alternating steps."]
    print(f"CompressAI: {tt:.3f} s/step, {n_img / tt:.1f} images/s; ratio jax/torch {tj / tt:.2f}"
          + (f", tuned {to / tt:.2f}" if to is not None else ""))
  else:
    lines += ["", "torch / CompressAI not installed: no peer figure in this run."]
  lines += ["", "Transposed convolution 5x5 stride 2, 8x32x32x128 -> 8x64x64x128, gradient w.r.t. input and kernel "
            "(jit, median):", "",
            "| implementation | ms |", "| --- | --- |",
            f"| `jaxcomp.nn.conv_transpose` (kernel gradient via the strided conv's weight gradient) | "
            f"{ct['fast'] * 1e3:.0f} |",
            f"| `lax.conv_transpose` autodiff (what `flax.linen.ConvTranspose` does) | {ct['native'] * 1e3:.0f} |",
            "", f"Speedup {ct['native'] / ct['fast']:.1f}x."]
  if not args.no_write:
    write_section("train_step", "## ProxIQA training step (`benchmarks/train_step.py`)\n\n" + "\n".join(lines))


if __name__ == "__main__":
  main()

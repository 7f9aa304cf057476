"""Entropy-coding stage on a BLS-sized latent (one Kodak image, 768x512 -> 48x32x192 = 294,912 symbols).

Measures (medians over repeats, after a warm-up):
- factorized prior (`EntropyBottleneck` tables, one per channel): table lookup + range coding, encode and decode;
- scale hyperprior (`GaussianConditional`, 64 tables, a table index per element): the same;
- constriction alone on the same pre-grouped symbols, to show what the numpy glue adds;
- actual stream bits against the entropy model's estimate (-sum log2 of its likelihoods);
- the whole `Codec.compress` / `decompress` (uint8 image in -> file bytes -> uint8 image out) of one Kodak image
  with a BLS model of CompressAI's bmshj2018-factorized size (N=128, M=192, randomly initialised: the time does not
  depend on training), alternated with CompressAI's `bmshj2018_factorized(quality=3)` `compress` / `decompress`
  (after `update()`, also randomly initialised) when `import compressai` works: run the script with
  the python of a venv with torch + CompressAI that also sees jaxcomp to get both.

The latent is synthetic but shaped like a trained BLS model's: per-channel Laplacians whose scales are log-uniform
from 0.05 to 6 (many channels nearly always 0, a few wide ones) around small per-channel offsets; the
`EntropyBottleneck` is fitted to it for a few hundred Adam steps (density + quantiles), as in training. For the
hyperprior, elements are Gaussian with log-uniform scales from 0.11 to 20 and the model's scales are the truth.

usage: python benchmarks/entropy_coding.py [--repeats 20] [--whole-repeats 7] [--image KODAK_PNG] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # stable PyTorch timings here (shared/notes/performance.md)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a plain script

import jax
import jax.numpy as jnp
import numpy as np
import optax

import constriction
from benchmarks._report import machine_line, write_section
from jaxcomp.entropy import EntropyBottleneck, GaussianConditional, rate_bits
from jaxcomp.entropy.coder import RangeCoder
from jaxcomp.entropy.models import SCALE_TABLE, build_indexes
from jaxcomp.entropy.tables import bottleneck_tables, gaussian_tables

H, W, C = 32, 48, 192
KODAK = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak" / "kodim01.png"


def _interleaved_ms(fns, repeats: int) -> list[float]:
  """Median ms of each function, timed in alternation so machine noise hits all of them alike."""
  for fn in fns:
    fn()
  times = [[] for _ in fns]
  for _ in range(repeats):
    for fn, ts in zip(fns, times):
      t = time.perf_counter()
      fn()
      ts.append(time.perf_counter() - t)
  return [1e3 * float(np.median(ts)) for ts in times]


def fitted_bottleneck(y_hwC: np.ndarray, steps: int = 300, aux_steps: int = 1000):
  eb = EntropyBottleneck(channels=C)
  params = eb.init(jax.random.PRNGKey(0), jnp.zeros((1, C)), training=False)["params"]
  data = jnp.asarray(y_hwC.reshape(-1, C))
  opt = optax.adam(2e-2)

  def loss(p, k):
    sub = data[jax.random.randint(k, (512,), 0, data.shape[0])]
    _, lik = eb.apply({"params": p}, sub, training=True, key=k)
    return rate_bits(lik) / 512 + eb.apply({"params": p}, method="aux_loss")

  @jax.jit
  def run(p):
    def body(i, c):
      p, s = c
      g = jax.grad(loss)(p, jax.random.PRNGKey(i))
      u, s = opt.update(g, s)
      return optax.apply_updates(p, u), s
    return jax.lax.fori_loop(0, steps, body, (p, opt.init(p)))[0]

  params = run(params)
  # Training runs the aux loss for 100k+ steps; here the quantiles catch up with the fitted density quickly
  # through aux-only steps at a larger learning rate (they start at +-10, the wide channels need ~+-100).
  aux_opt = optax.adam(0.5)

  @jax.jit
  def run_aux(p):
    def body(i, c):
      q, s = c
      g = jax.grad(lambda q: eb.apply({"params": {**p, "quantiles": q}}, method="aux_loss"))(q)
      u, s = aux_opt.update(g, s)
      return optax.apply_updates(q, u), s
    return jax.lax.fori_loop(0, aux_steps, body, (p["quantiles"], aux_opt.init(p["quantiles"])))[0]

  return eb, {"params": {**params, "quantiles": run_aux(params)}}


def _stub_module(name: str) -> None:
  import importlib.machinery
  import types
  m = types.ModuleType(name)
  m.__spec__ = importlib.machinery.ModuleSpec(name, None)
  sys.modules[name] = m


def _compressai_zoo():
  """CompressAI's `bmshj2018_factorized` and torch, or None when they are not importable here.

  Two packages CompressAI imports only for features this benchmark never touches are replaced by empty modules
  when they are broken or missing: pandas (its point-cloud datasets) and a torchvision built for another torch
  (its data transforms; the same workaround as benchmarks/train_step.py)."""
  try:
    import torch
  except ImportError:
    return None
  for _ in range(3):
    try:
      from compressai.zoo import bmshj2018_factorized
      return torch, bmshj2018_factorized
    except ModuleNotFoundError as e:
      if e.name != "pandas":
        return None
      _stub_module("pandas")
    except RuntimeError:
      for name in [m for m in sys.modules if m.startswith(("torchvision", "compressai"))]:
        del sys.modules[name]
      _stub_module("torchvision")
      _stub_module("torchvision.transforms")
      sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    for name in [m for m in sys.modules if m.startswith("compressai")]:
      del sys.modules[name]
  return None


def whole_codec(image_path: pathlib.Path, repeats: int) -> str:
  """Times image -> bytes -> image for jaxcomp's Codec and (when importable) CompressAI, in alternation."""
  from jaxcomp.data import read_image
  from jaxcomp.entropy.codec import Codec, finalize
  from jaxcomp.methods.proxiqa import models

  image = read_image(image_path)
  h, w = image.shape[:2]
  model = models.build_model("bls", 128, 192, "bmshj2018")
  t0 = time.perf_counter()
  variables = jax.jit(lambda k: model.init({"params": k, "noise": k}, jnp.zeros((1, 64, 64, 3)), training=True))(
      jax.random.PRNGKey(0))
  codec = Codec(model, variables, finalize(model, variables))
  data = codec.compress(image)
  out = codec.decompress(data)
  warm_s = time.perf_counter() - t0
  assert out.shape == image.shape
  x = jnp.asarray(image[None].astype(np.float32) / 255.0)
  y = codec._analysis(codec.variables, x)
  y_hat = jnp.asarray(codec.quantized_latents(image)["y_hat"])
  fns = {"jaxcomp compress": lambda: codec.compress(image),
         "jaxcomp decompress": lambda: codec.decompress(data),
         "jaxcomp g_a alone (jit, on device)": lambda: codec._analysis(codec.variables, x).block_until_ready(),
         "jaxcomp g_s alone (jit, on device)": lambda: codec._synthesis(codec.variables, y_hat).block_until_ready()}
  del y
  peer = _compressai_zoo()
  cai_note = "CompressAI not importable in this interpreter: no peer rows (run it with a torch + CompressAI venv)."
  if peer is not None:
    torch, bmshj2018_factorized = peer
    import compressai
    torch.manual_seed(0)
    net = bmshj2018_factorized(quality=3, pretrained=False).eval()
    net.update()

    def cai_compress():
      with torch.no_grad():
        t = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255.0)
        out = net.compress(t)
      return out

    enc = cai_compress()

    def cai_decompress():
      with torch.no_grad():
        x_hat = net.decompress(enc["strings"], enc["shape"])["x_hat"]
      return x_hat.clamp(0, 1).mul(255).round().byte()[0].permute(1, 2, 0).numpy()

    assert cai_decompress().shape == image.shape
    cai_bytes = sum(len(s[0]) for s in enc["strings"])
    fns.update({"CompressAI compress": cai_compress, "CompressAI decompress": cai_decompress})
    cai_note = (f"CompressAI {compressai.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads, "
                f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}); its file: {cai_bytes:,} bytes of strings.")
  ms = dict(zip(fns, _interleaved_ms(list(fns.values()), repeats)))
  load = os.getloadavg()[0]
  programs = (codec._analysis._cache_size(), codec._synthesis._cache_size())
  glue = (f"Outside the transforms (entropy coding, host copies, padding, container): compress "
          f"{ms['jaxcomp compress'] - ms['jaxcomp g_a alone (jit, on device)']:+.0f} ms, decompress "
          f"{ms['jaxcomp decompress'] - ms['jaxcomp g_s alone (jit, on device)']:+.0f} ms (differences of medians). "
          f"Compiled programs after all the calls: g_a {programs[0]}, g_s {programs[1]} (no per-call retracing).")
  rows = "\n".join(f"| {k} | {v:.0f} |" for k, v in ms.items())
  ratio = ""
  if peer is not None:
    rc = ms["jaxcomp compress"] / ms["CompressAI compress"]
    rd = ms["jaxcomp decompress"] / ms["CompressAI decompress"]
    ratio = f"\nRatio jaxcomp / CompressAI (< 1: jaxcomp faster): compress **{rc:.2f}**, decompress **{rd:.2f}**.\n"
  return f"""### Whole codec on one Kodak image ({image_path.name}, {w}x{h})

BLS in CompressAI's bmshj2018-factorized layout (N=128, M=192), **randomly initialised** (timing only; a trained
model codes fewer bits but runs the same operations), `Codec.compress` (uint8 image -> file bytes, incl. the
container and CRC) and `Codec.decompress` (bytes -> uint8 image); jaxcomp file: {len(data):,} bytes. Jit
compilation and table building are excluded ({warm_s:.1f} s once, at load). {cai_note}
Medians of {repeats} alternating repeats; 1-minute load average {load:.1f} at the end (the cores are shared: compare
rows of one run).

| what | median ms |
| --- | --- |
{rows}

{glue}
{ratio}"""


def main(argv=None) -> str:
  ap = argparse.ArgumentParser()
  ap.add_argument("--repeats", type=int, default=20)
  ap.add_argument("--whole-repeats", type=int, default=7)
  ap.add_argument("--image", type=pathlib.Path, default=KODAK)
  ap.add_argument("--no-write", action="store_true")
  args = ap.parse_args(argv)
  rng = np.random.default_rng(0)

  # ---- factorized prior ----
  ch_scale = np.exp(rng.uniform(np.log(0.05), np.log(6.0), C)).astype(np.float32)
  ch_shift = rng.uniform(-0.4, 0.4, C).astype(np.float32)
  y = (rng.laplace(size=(H, W, C)) * ch_scale + ch_shift).astype(np.float32)
  t0 = time.perf_counter()
  eb, variables = fitted_bottleneck(y)
  tables = bottleneck_tables(eb, variables)
  fit_s = time.perf_counter() - t0
  coder = RangeCoder(tables)
  med = tables["medians"]
  idx = np.repeat(np.arange(C, dtype=np.int32), H * W)

  # What `Codec` does for a factorized latent: symbols around the medians, channel-major rows, one table each.
  def encode():
    sym = np.rint(y - med).astype(np.int32)
    return coder.encode_rows(np.ascontiguousarray(sym.reshape(-1, C).T))

  data = encode()
  assert data == coder.encode(np.moveaxis(np.rint(y - med).reshape(-1, C), -1, 0), idx)  # generic path agrees

  def decode():
    return (coder.decode_rows(data, H * W).T.reshape(H, W, C) + med).astype(np.float32)

  y_hat = decode()
  assert np.array_equal(y_hat, (np.rint(y - med) + med).astype(np.float32)), "factorized round trip is not exact"
  est = float(rate_bits(eb.apply(variables, jnp.asarray(y_hat), method="likelihood")))
  actual = 8 * len(data)

  # constriction alone: same pre-grouped symbols and models, no numpy glue.
  sym_CN = np.moveaxis(np.rint(y - med).reshape(-1, C), -1, 0).astype(np.int64) - tables["offset"][:, None]
  L = tables["cdf_length"][:, None] - 2
  sym_CN = np.where((sym_CN < 0) | (sym_CN >= L), L, sym_CN).astype(np.int32)

  def raw():
    enc = constriction.stream.queue.RangeEncoder()
    for c in range(C):
      enc.encode(sym_CN[c], coder._models[c])
    dec = constriction.stream.queue.RangeDecoder(enc.get_compressed())
    for c in range(C):
      dec.decode(coder._models[c], H * W)

  enc_ms, dec_ms, raw_ms = _interleaved_ms([encode, decode, raw], args.repeats)

  # ---- scale hyperprior ----
  scales = np.exp(rng.uniform(np.log(0.11), np.log(20.0), (H, W, C))).astype(np.float32)
  yg = np.rint(rng.normal(size=(H, W, C)) * scales).astype(np.float32)
  gc = GaussianConditional()
  gcoder = RangeCoder(gaussian_tables(gc))

  def g_encode():
    gidx = build_indexes(scales, SCALE_TABLE)
    return gcoder.encode(yg.astype(np.int64), gidx)

  gdata = g_encode()

  def g_decode():
    gidx = build_indexes(scales, SCALE_TABLE)
    return gcoder.decode(gdata, gidx)

  assert np.array_equal(g_decode(), yg.astype(np.int32)), "hyperprior round trip is not exact"
  genc_ms, gdec_ms = _interleaved_ms([g_encode, g_decode], args.repeats)
  table_scales = np.asarray(SCALE_TABLE, np.float32)[build_indexes(scales, SCALE_TABLE)]
  g_est_true = float(rate_bits(gc.apply({}, jnp.asarray(yg), jnp.asarray(scales), method="likelihood")))
  g_est_table = float(rate_bits(gc.apply({}, jnp.asarray(yg), jnp.asarray(table_scales), method="likelihood")))
  g_actual = 8 * len(gdata)

  whole = whole_codec(args.image, args.whole_repeats) if args.image.exists() else \
      f"(whole-codec timing skipped: {args.image} not found)\n"
  # The recorded command names no machine path: a placeholder for the CompressAI venv when the peer rows ran.
  interpreter = "/path/to/compressai-venv/bin/python" if importlib.util.find_spec("compressai") else "python"
  cmd = (f"flock /tmp/jaxcomp_timing.lock {interpreter} benchmarks/entropy_coding.py"
         + (f" --repeats {args.repeats}" if args.repeats != 20 else "")
         + (f" --whole-repeats {args.whole_repeats}" if args.whole_repeats != 7 else ""))
  n = H * W * C
  body = f"""## Entropy coding stage (`benchmarks/entropy_coding.py`)

Command: `{cmd}` — {machine_line()}; constriction {getattr(constriction, '__version__', '0.5')};
medians of {args.repeats} runs after a warm-up, the rows of each table timed in alternation (the machine is
shared and noisy: compare rows of one run). One Kodak image's BLS-sized latent: {H}x{W}x{C} = {n:,} symbols.

Factorized prior: synthetic BLS-like latent (per-channel Laplacians, scales log-uniform 0.05-6), an
`EntropyBottleneck(192)` fitted to it for 300 Adam steps, then 1000 aux-loss steps for its quantiles (fit + table build {fit_s:.1f} s, done once).
Hyperprior: Gaussian elements with log-uniform scales 0.11-20, 64-entry scale table, one table index per element.

| stage | encode ms | decode ms | total ms |
| --- | --- | --- | --- |
| factorized: table lookup + range coding (`RangeCoder`, 192 tables) | {enc_ms:.1f} | {dec_ms:.1f} | {enc_ms + dec_ms:.1f} |
| same symbols, constriction calls alone (no numpy glue) | | | {raw_ms:.1f} |
| glue overhead (ratio of the two rows above) | | | {(enc_ms + dec_ms) / raw_ms:.2f}x |
| hyperprior: index selection + grouping + range coding (64 tables) | {genc_ms:.1f} | {gdec_ms:.1f} | {genc_ms + gdec_ms:.1f} |

| bits | estimate (-sum log2 p) | actual stream | gap |
| --- | --- | --- | --- |
| factorized | {est:,.0f} | {actual:,} | {100 * (actual - est) / est:+.3f} % |
| hyperprior, vs likelihood at the tables' scales | {g_est_table:,.0f} | {g_actual:,} | {100 * (g_actual - g_est_table) / g_est_table:+.3f} % |
| hyperprior, vs likelihood at the exact predicted scales | {g_est_true:,.0f} | {g_actual:,} | {100 * (g_actual - g_est_true) / g_est_true:+.3f} % |

Stream bits exclude the container header (`bitstream.overhead_bytes(S)` = 27 + 4 S bytes). The hyperprior's
last row includes the cost of coding with the next table scale up (CompressAI's rule), not a coder loss.

{whole}"""
  print(body)
  if not args.no_write:
    write_section("entropy_coding", body)
  return body


if __name__ == "__main__":
  sys.exit(main() and 0)

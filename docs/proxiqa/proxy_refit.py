"""Can the ProxIQA network learn the metric's gradient from the codec's reconstructions alone? (docs/proxiqa.md,
"Why MS-SSIM_p gains nothing here", the refit rows.)

  python docs/proxiqa/proxy_refit.py CODEC_WORKDIR --metric ms_ssim --modes none interp mask \
      [--steps 2000 [...]] [--fraction 0.5] [--lr 1e-3] [--batches 16] [--out OUT.md]

Holds the codec of CODEC_WORKDIR fixed and trains a fresh ProxIQA network on its reconstructions by eq. 11 for
the largest of `--steps` batches (Adam `--lr`, the data stream of the run's config with seed + 1), once per mode;
after each number of `--steps` it measures the proxy with `proxy_gradients.analyse` on the run's first `--batches`
batches (seed as trained), as in the table of the alternating runs. What the proxy is fitted on, per mode (in a
`--fraction` of each batch's pairs; the rest are the codec's own pairs (x, x_hat), as in the paper):
  none      the codec's pairs only (the paper's eq. 11; --fraction unused);
  pristine  pairs (x, x), the authors' script;
  interp    x + t (x_hat - x), t ~ U(0, 2) per image: the same content at other distortion levels;
  mask      x + w * (x_hat - x), w a smooth random field in [0, 2] (4x4 values, bilinear): the same error
            re-weighted region by region, so the score's dependence on *where* the error is can be learned.
Not in the paper; the modes ask whether the alternating runs' proxies fail for lack of such variation, since with
one codec x_hat is nearly a function of x and a proxy can fit M(x, x_hat) from x alone.
A missing workdir or step, or bad training data in its config, ends the script with one line
(`proxy_refit.py: error: ...`, exit code 2).
"""
import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import proxy_gradients
from jaxcomp.errors import run_script
from jaxcomp.io_utils import write_text_atomic
from jaxcomp.methods.proxiqa import models
from jaxcomp.methods.proxiqa import train as proxiqa

MODES = ("none", "pristine", "interp", "mask")


def augment(mode, key, x, x_hat, fraction):
  """The proxy's training reconstructions for `mode` (module docstring)."""
  if mode == "none":
    return x_hat
  k_pick, k_val = jax.random.split(key)
  b, h, w, _ = x.shape
  if mode == "pristine":
    other = x
  elif mode == "interp":
    other = x + jax.random.uniform(k_val, (b, 1, 1, 1), maxval=2.0) * (x_hat - x)
  elif mode == "mask":
    field = jax.image.resize(jax.random.uniform(k_val, (b, 4, 4, 1), maxval=2.0), (b, h, w, 1), "linear")
    other = x + field * (x_hat - x)
  else:
    raise ValueError(mode)
  pick = jax.random.bernoulli(k_pick, fraction, (b, 1, 1, 1))
  return jnp.where(pick, jnp.clip(other, 0.0, 1.0), x_hat)


def refit(config, codec_params, metric_name, mode, steps, fraction, lr, seed):
  """Yields `(step, proxy params, mean fit loss over the last 200 steps)` at each step of `steps` (sorted)."""
  model, proxy = proxiqa.build_model(config), models.ProxIQANet()
  metric = proxiqa.device_metric(metric_name, config.patch_size)
  codec_params = jax.tree.map(jnp.asarray, codec_params)
  x0 = jnp.zeros((1, config.patch_size, config.patch_size, 3))
  params = proxy.init(jax.random.key(seed), x0, x0)["params"]
  tx = optax.adam(lr, config.adam_b1, config.adam_b2)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, images, key):
    k_noise, k_aug = jax.random.split(key)
    x = images.astype(jnp.float32) / 255.0
    out = model.apply({"params": codec_params}, x, training=True, quantizer=config.quantizer,
                      rngs={"noise": k_noise})
    x_hat = augment(mode, k_aug, x, jnp.clip(out["x_hat"], 0.0, 1.0), fraction)
    m = metric(x, x_hat)
    loss, grads = jax.value_and_grad(
        lambda p: jnp.mean(jnp.square(proxy.apply({"params": p}, x, x_hat) - m)))(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  fit_config = config.copy_and_resolve_references()
  with fit_config.unlocked():
    fit_config.seed = int(config.seed) + 1  # another data order than the analysis batches
  key = jax.random.key(seed)
  losses = []
  for i, batch in zip(range(max(steps)), iter(proxiqa.make_train_loader(fit_config))):
    images = np.asarray(batch["image"]).reshape(-1, *np.asarray(batch["image"]).shape[-3:])
    params, opt, loss = step(params, opt, images, jax.random.fold_in(key, i))
    losses.append(float(loss))
    if i + 1 in steps:
      yield i + 1, params, float(np.mean(losses[-200:]))


def main(argv=None):
  p = argparse.ArgumentParser(prog="proxy_refit.py")
  p.add_argument("workdir", help="codec workdir[@STEP] (any loss; its codec is held fixed)")
  p.add_argument("--metric", default="ms_ssim", choices=("ssim", "ms_ssim"))
  p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
  p.add_argument("--steps", type=int, nargs="+", default=[2000], help="measure the proxy after each of these")
  p.add_argument("--fraction", type=float, default=0.5)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--alpha", type=float, default=3e-3, help="only scales the reported norms")
  p.add_argument("--batches", type=int, default=16)
  p.add_argument("--out", default="")
  a = p.parse_args(argv)
  if not 0.0 < a.fraction <= 1.0:
    p.error(f"--fraction {a.fraction:g} must be in (0, 1]")
  if min(a.steps) < 1 or a.batches < 1:
    p.error("--steps and --batches must be positive")
  return run_script(p.prog, run, a)


def run(a):
  """Everything `main` does once the arguments are checked; raises `JaxcompError` on bad input."""
  config, state = proxy_gradients.load_run(a.workdir)
  rows = []
  for mode in a.modes:
    start = time.time()
    for step, params, fit_loss in refit(config, state["codec"]["params"], a.metric, mode, sorted(a.steps),
                                        a.fraction, a.lr, int(config.seed)):
      name = f"{a.workdir}, refit {mode}" + (f" {a.fraction:g}" if mode != "none" else "") + f" @{step}"
      row = proxy_gradients.analyse(name, config, state["codec"]["params"], params, a.batches,
                                    metric_name=a.metric, alpha=a.alpha, m_max=1.0)
      print(row, f"fit loss (last 200) {fit_loss:.2e}, {time.time() - start:.0f} s", flush=True)
      rows.append(row)
  text = proxy_gradients.table(rows)
  steps = " ".join(str(s) for s in sorted(a.steps))
  text += (f"\n\nProxies refitted (Adam {a.lr:g}) on the fixed codec of {a.workdir}, measured after {steps} steps: "
           f"`python docs/proxiqa/proxy_refit.py {a.workdir} --metric {a.metric} --modes {' '.join(a.modes)} "
           f"--steps {steps} --fraction {a.fraction:g} --lr {a.lr:g} --batches {a.batches}`")
  print(text)
  if a.out:
    write_text_atomic(pathlib.Path(a.out), text + "\n")


if __name__ == "__main__":
  sys.exit(main())

"""How well does the trained ProxIQA network steer the codec? (docs/proxiqa.md, "Why MS-SSIM_p gains little".)

  python docs/proxiqa/proxy_gradients.py WORKDIR[@STEP] [WORKDIR[@STEP] ...] [--batches 16] [--out OUT.md]

For each perceptual workdir (ssim_p / msssim_p; its checkpoint at STEP, else its latest), on `--batches` training batches drawn as in
training (its config: data, crop size, batch size, seed), with x_hat the codec's reconstruction (uniform-noise
quantisation, clipped, as in the codec step), the gradients with respect to x_hat of
  - the proxy term   alpha (M_max - M_hat(x, x_hat))      what the codec is trained on (eq. 9-10),
  - the true term    alpha (M_max - M(x, x_hat))          what the proxy stands in for (same metric and window),
  - the pixel term   (1 - alpha) MSE(x, x_hat)
per image, and of the same three batch-mean terms with respect to the codec's parameters (what Adam is given).
Reports the cosine between proxy and true gradients in both spaces (1: the proxy points the codec where the
metric would; random directions in these dimensions give about 0), the norm ratio proxy / true, the norm ratio proxy / pixel term (how much of the codec's distortion
gradient the proxy supplies), the Pearson correlation of M_hat with M across all images (does the proxy rank
reconstructions?), besides the mean absolute error the training logs show, and the proxy on pristine pairs
M_hat(x, x) (M = M_max there) with its correlation to M_hat(x, x_hat): a proxy that scores the source image's
content rather than the distortion gives pristine pairs the scores of their reconstructions.
A missing workdir or step, or a run that is not a perceptual ProxIQA run, ends the script with one line
(`proxy_gradients.py: error: ...`, exit code 2).
"""
import argparse
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp import train as harness
from jaxcomp.errors import CheckpointError, ConfigError, JaxcompError, run_script
from jaxcomp.io_utils import write_text_atomic
from jaxcomp.methods.proxiqa import models
from jaxcomp.methods.proxiqa import train as proxiqa


def cosine(u, v):
  return jnp.sum(u * v, axis=(1, 2, 3)) / (jnp.linalg.norm(u.reshape(len(u), -1), axis=1)
                                            * jnp.linalg.norm(v.reshape(len(v), -1), axis=1) + 1e-30)


def norm(u):
  return jnp.linalg.norm(u.reshape(len(u), -1), axis=1)


def load_run(spec):
  """`(config, state)` of a ProxIQA workdir given as WORKDIR[@STEP]; `JaxcompError` naming `spec` on bad input."""
  path, _, step = spec.partition("@")
  if step and not step.isdigit():
    raise ConfigError(f"{spec}: STEP must be a checkpoint step number")
  try:
    config, state = harness.load_for_eval(path, int(step) if step else None)
  except JaxcompError as e:
    raise type(e)(f"{spec}: {e}") from None
  if config.get("method") != "proxiqa":
    raise CheckpointError(f"{spec}: not a ProxIQA workdir (method {config.get('method')!r})")
  return config, state


def analyse(wd, config, codec_params, proxy_params, batches, metric_name=None, alpha=None, m_max=None):
  """One row of the table: `proxy_params` (a ProxIQA network) against the true metric on `batches` training
  batches of `config`'s data, with x_hat from the codec with `codec_params`; metric, alpha and M_max default to
  `config`'s (pass them for an MSE codec, whose config has none)."""
  model, proxy = proxiqa.build_model(config), models.ProxIQANet()
  metric_name = metric_name or config.metric
  metric = proxiqa.device_metric(metric_name, config.patch_size)
  codec_params = jax.tree.map(jnp.asarray, codec_params)
  proxy_params = jax.tree.map(jnp.asarray, proxy_params)
  alpha = float(config.alpha if alpha is None else alpha)
  m_max = float(config.m_max if m_max is None else m_max)

  @jax.jit
  def analyse_batch(images, key):
    x = images.astype(jnp.float32) / 255.0
    out = model.apply({"params": codec_params}, x, training=True, quantizer=config.quantizer, rngs={"noise": key})
    x_hat = jnp.clip(out["x_hat"], 0.0, 1.0)
    # per-image terms summed, so each image's gradient is its own
    g_proxy = jax.grad(lambda xh: jnp.sum(alpha * (m_max - proxy.apply({"params": proxy_params}, x, xh))))(x_hat)
    g_true = jax.grad(lambda xh: jnp.sum(alpha * (m_max - metric(x, xh))))(x_hat)
    g_pix = jax.grad(lambda xh: jnp.sum((1 - alpha) * jnp.mean(jnp.square(x - xh), axis=(1, 2, 3))))(x_hat)

    def param_grad(term):
      def f(params):
        o = model.apply({"params": params}, x, training=True, quantizer=config.quantizer, rngs={"noise": key})
        return term(jnp.clip(o["x_hat"], 0.0, 1.0))
      return jnp.concatenate([g.ravel() for g in jax.tree.leaves(jax.grad(f)(codec_params))])

    p_proxy = param_grad(lambda xh: alpha * (m_max - jnp.mean(proxy.apply({"params": proxy_params}, x, xh))))
    p_true = param_grad(lambda xh: alpha * (m_max - jnp.mean(metric(x, xh))))
    p_pix = param_grad(lambda xh: (1 - alpha) * jnp.mean(jnp.square(x - xh)))
    pcos = lambda u, v: jnp.dot(u, v) / (jnp.linalg.norm(u) * jnp.linalg.norm(v) + 1e-30)  # noqa: E731
    return {"param_cos_proxy_true": pcos(p_proxy, p_true)[None], "param_cos_true_pixel": pcos(p_true, p_pix)[None],
            "param_cos_proxy_pixel": pcos(p_proxy, p_pix)[None],
            "param_proxy_over_pixel": (jnp.linalg.norm(p_proxy) / jnp.linalg.norm(p_pix))[None],
            "param_true_over_pixel": (jnp.linalg.norm(p_true) / jnp.linalg.norm(p_pix))[None],
            "cos_proxy_true": cosine(g_proxy, g_true), "proxy_over_true": norm(g_proxy) / norm(g_true),
            "proxy_over_pixel": norm(g_proxy) / norm(g_pix), "true_over_pixel": norm(g_true) / norm(g_pix),
            "m": metric(x, x_hat), "m_hat": proxy.apply({"params": proxy_params}, x, x_hat),
            "m_hat_pristine": proxy.apply({"params": proxy_params}, x, x)}

  loader = proxiqa.make_train_loader(config)
  key = jax.random.key(config.seed)
  acc = {}
  for i, batch in zip(range(batches), iter(loader)):
    images = np.asarray(batch["image"]).reshape(-1, *np.asarray(batch["image"]).shape[-3:])
    r = jax.device_get(analyse_batch(images, jax.random.fold_in(key, i)))
    for k, v in r.items():
      acc.setdefault(k, []).append(np.asarray(v))
  acc = {k: np.concatenate(v) for k, v in acc.items()}
  row = {"workdir": wd, "metric": metric_name, "alpha": alpha, "lambda": float(config.lmbda),
         "patch": int(config.patch_size), "images": len(acc["m"]),
         "cos": float(np.median(acc["cos_proxy_true"])),
         "cos_q": tuple(float(q) for q in np.quantile(acc["cos_proxy_true"], [0.25, 0.75])),
         "proxy_over_true": float(np.median(acc["proxy_over_true"])),
         "proxy_over_pixel": float(np.median(acc["proxy_over_pixel"])),
         "true_over_pixel": float(np.median(acc["true_over_pixel"])),
         "pearson": float(np.corrcoef(acc["m"], acc["m_hat"])[0, 1]),
         "mae": float(np.mean(np.abs(acc["m"] - acc["m_hat"]))), "m_mean": float(np.mean(acc["m"])),
         "m_std": float(np.std(acc["m"])), "m_hat_pristine": float(np.mean(acc["m_hat_pristine"])),
         # how much of M_hat's spread is the source image's content: M_hat(x, x) should be constant (M_max)
         "pearson_pristine": float(np.corrcoef(acc["m_hat_pristine"], acc["m_hat"])[0, 1])}
  for k in ("param_cos_proxy_true", "param_cos_true_pixel", "param_cos_proxy_pixel", "param_proxy_over_pixel",
            "param_true_over_pixel"):
    row[k] = float(np.median(acc[k]))
  return row


def table(rows):
  """The markdown table of `analyse` rows."""
  lines = ["| workdir | metric (window) | alpha | lambda | crop | images | x_hat space: cos(proxy, true) median "
           "[IQR] | norm proxy / true | norm proxy / pixel | norm true / pixel | parameter space (median over batches): "
           "cos(proxy, true) | cos(true, pixel) | cos(proxy, pixel) | norm proxy / pixel | norm true / pixel | "
           "Pearson(M_hat, M) | mean abs error | M mean (std) | M_hat(x, x) mean | Pearson(M_hat(x, x), M_hat(x, x_hat)) |",
           "|---" * 20 + "|"]
  for r in rows:
    win = proxiqa.ms_ssim_window(r["patch"]) if r["metric"] == "ms_ssim" else 11
    lines.append(f"| {r['workdir']} | {r['metric']} ({win}x{win}) | {r['alpha']:g} | {r['lambda']:g} | {r['patch']} | "
                 f"{r['images']} | {r['cos']:.3f} [{r['cos_q'][0]:.3f}, {r['cos_q'][1]:.3f}] | "
                 f"{r['proxy_over_true']:.2f} | {r['proxy_over_pixel']:.3f} | {r['true_over_pixel']:.3f} | "
                 f"{r['param_cos_proxy_true']:.3f} | {r['param_cos_true_pixel']:.3f} | {r['param_cos_proxy_pixel']:.3f} | "
                 f"{r['param_proxy_over_pixel']:.3f} | {r['param_true_over_pixel']:.3f} | "
                 f"{r['pearson']:.3f} | {r['mae']:.4f} | {r['m_mean']:.4f} ({r['m_std']:.4f}) | {r['m_hat_pristine']:.4f} | "
                 f"{r['pearson_pristine']:.3f} |")
  return "\n".join(lines)


def run(a):
  """Everything `main` does once the arguments are parsed; raises `JaxcompError` on bad input."""
  rows = []
  for wd in a.workdirs:
    config, state = load_run(wd)
    if not proxiqa.perceptual(config):
      raise ConfigError(f"{wd}: not a perceptual run (config.metric is empty)")
    row = analyse(wd, config, state["codec"]["params"], state["proxy"]["params"], a.batches)
    print(row, flush=True)
    rows.append(row)
  text = table(rows)
  print(text)
  if a.out:
    write_text_atomic(pathlib.Path(a.out), text + "\n")


def main(argv=None):
  p = argparse.ArgumentParser(prog="proxy_gradients.py")
  p.add_argument("workdirs", nargs="+")
  p.add_argument("--batches", type=int, default=16)
  p.add_argument("--out", default="")
  a = p.parse_args(argv)
  if a.batches < 1:
    p.error("--batches must be positive")
  return run_script(p.prog, run, a)


if __name__ == "__main__":
  sys.exit(main())

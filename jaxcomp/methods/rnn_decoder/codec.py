"""The iterative decoder as a decoder of a workdir: the plain codec's file, refined by the trained network.

`evaluate(config, state, images)` is what `jaxcomp eval` and the end of `jaxcomp train` run for this method: each
image is compressed by the plain codec (`config.codec`) at `config.eval_bpp` to a real file, decoded by the codec
and by the network (whole images reassembled from patches), and both are scored against the original.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp.methods.rnn_decoder import algorithms, models, patches

GRAYSCALE = True
"""The paper's decoders refine luma (8-bit grayscale): evaluation reads images as 1-channel."""


def decoder_spec(config: ml_collections.ConfigDict) -> models.DecoderSpec:
  return models.DecoderSpec(cell=config.cell, hidden=config.hidden, num_steps=config.num_steps,
                            patch=config.patch_size, alpha=config.alpha)


def make_decode_fn(config: ml_collections.ConfigDict, params: models.Params, num_steps: int | None = None):
  """Jitted q_BNd -> p_BD (final refinement, clipped to [0, 1]); SAB models decode with their attention."""
  spec = decoder_spec(config)
  if "sab" in params:
    sab = config.sab

    def fn(p, q):
      s = spec if num_steps is None else models.DecoderSpec(**{**spec.__dict__, "num_steps": num_steps})
      out, _ = algorithms.sab_apply(s, p, q, k_att=sab.k_att, k_top=sab.k_top, k_trunc=None)
      return jnp.clip(out[-1], 0.0, 1.0)
  else:
    def fn(p, q):
      return models.decode(spec, p, q, num_steps)
  jitted = jax.jit(fn)
  return lambda q: jitted(params, jnp.asarray(q))


def _mean(values: Sequence[Any]) -> float | None:
  finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
  return float(np.mean(finite)) if finite else None


def evaluate(config: ml_collections.ConfigDict, state, images: Sequence[tuple[str, np.ndarray]], *,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
  """Whole-image results at `config.eval_bpp`: network vs original, plain codec vs original, and the gain.

  Per image (`images`: name, bpp of the real codec file, `psnr` / `ssim` / `ms_ssim` of the network's output,
  `codec_*` of the plain decode, `vs_codec_*` network vs plain decode, `gain_psnr`) and their means at the top.
  """
  params = jax.tree.map(jnp.asarray, state["params"])
  decode_fn = make_decode_fn(config, params)
  records = []
  for name, image in images:
    rec = {"name": name, "height": int(image.shape[0]), "width": int(image.shape[1]),
           **patches.evaluate_image(decode_fn, image, codec=config.codec, bpp=config.eval_bpp,
                                    patch=config.patch_size, batch_size=config.eval_batch_size)}
    records.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()})
    if progress:
      progress(f"{name}: {rec['bpp']:.4f} bpp, {rec['psnr']:.2f} dB (codec {rec['codec_psnr']:.2f} dB)")
  keys = [k for k in records[0] if k not in ("name", "height", "width")]
  return {**{k: _mean([r[k] for r in records]) for k in keys}, "images": records}

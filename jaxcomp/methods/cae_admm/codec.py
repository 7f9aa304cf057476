"""CAE-ADMM's codec from a workdir: the autoencoder with a static per-channel model of its integer latent.

CAE-ADMM has no learned entropy model. After training, and refreshed at every checkpoint, the per-channel histogram
of the integer latents of the anchor crops is stored in the checkpoint (`codec/counts`, a fixed `[C, 2 R + 2]`
shape, R = `codec.max_symbol`); `build_codec` turns it into integer CDF tables (add-1/2 smoothing, an escape symbol
for values beyond +-R) for the generic `jaxcomp.entropy.codec.Codec`, so compress/decompress write real files and
`jaxcomp eval` reports bpp as file size, and the zero ratio of the latent (`image_metrics`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp import errors
from jaxcomp.entropy import codec as codec_lib
from jaxcomp.entropy import tables as tables_lib
from jaxcomp.methods.cae_admm import models


def build_model(config: ml_collections.ConfigDict, axis_name: str | None = None) -> models.CAE:
  m = config.model
  return models.CAE(latent_channels=m.latent_channels, stem_features=tuple(m.stem_features),
                    stem_kernels=tuple(m.stem_kernels), stem_strides=tuple(m.stem_strides),
                    num_res_blocks=m.num_res_blocks, down_features=tuple(m.down_features),
                    down_kernel=m.down_kernel, final_kernel=m.final_kernel, subpix_kernel=m.subpix_kernel,
                    bn_axis_name=axis_name, remat=m.get("remat", False))  # absent in older checkpoints


def symbol_counts(q_NhwC: np.ndarray, max_symbol: int) -> np.ndarray:
  """Histogram `[C, 2 R + 2]`: counts of -R..R per channel, then the count of values beyond +-R (escapes)."""
  q = np.asarray(q_NhwC).reshape(-1, q_NhwC.shape[-1]).astype(np.int64)
  c = q.shape[1]
  inside = np.abs(q) <= max_symbol
  rows = np.broadcast_to(np.arange(c), q.shape)
  counts = np.zeros((c, 2 * max_symbol + 2), np.int64)
  np.add.at(counts, (rows[inside], q[inside] + max_symbol), 1)
  counts[:, -1] = np.sum(~inside, axis=0)
  return counts.astype(np.int32)


def tables_from_counts(counts: np.ndarray, precision: int = tables_lib.DEFAULT_PRECISION) -> dict:
  """Integer CDF tables for `jaxcomp.entropy.codec.Codec` from `symbol_counts` (add-1/2 smoothing).

  The table of channel c covers the integers its counts saw (trimmed to the observed range), the escape symbol
  takes the beyond-range count plus 1/2; the medians are 0, so the codec codes `round(z)` itself.
  """
  counts = np.asarray(counts, np.float64)
  c, width = counts.shape
  r = (width - 2) // 2
  body = counts[:, :-1]
  seen = body > 0
  lo = np.where(seen.any(1), np.argmax(seen, 1), r)
  hi = np.where(seen.any(1), width - 2 - np.argmax(seen[:, ::-1], 1), r)
  lengths = hi - lo + 1
  pmf = np.zeros((c, int(lengths.max())))
  for t in range(c):
    pmf[t, : lengths[t]] = body[t, lo[t]:hi[t] + 1] + 0.5
  tails = counts[:, -1] + 0.5
  total = pmf.sum(1) + tails
  return tables_lib.make_tables(pmf / total[:, None], lengths, lo - r, tails / total, precision,
                                medians=np.zeros(c, np.float32))


def build_codec(config: ml_collections.ConfigDict, state: Mapping[str, Any]) -> codec_lib.Codec:
  """A `Codec` (`compress(uint8 HWC) -> bytes`, `decompress`) from a restored state (`train.load_for_eval`)."""
  try:
    variables = {"params": state["model"]["params"], **state["model"]["mutable"]}
    counts = np.asarray(state["codec"]["counts"])
  except (KeyError, TypeError) as e:
    raise errors.CheckpointError(f"not a cae_admm checkpoint state (missing {e})") from None
  if counts.sum() == 0:
    raise errors.CheckpointError("this cae_admm checkpoint has no fitted symbol counts (saved before any fit)")
  variables = jax.tree.map(jnp.asarray, variables)
  tables = {"entropy_bottleneck": tables_from_counts(counts, config.codec.precision)}
  return codec_lib.Codec(build_model(config), variables, tables)


def image_metrics(config: ml_collections.ConfigDict, codec: codec_lib.Codec) -> dict[str, Callable[[np.ndarray], float]]:
  """Per-image numbers `jaxcomp eval` adds for CAE-ADMM: `zeros`, the fraction of zeros in the coded latent."""
  del config
  return {"zeros": lambda image: float(np.mean(codec.quantized_latents(image)["y_hat"] == 0))}

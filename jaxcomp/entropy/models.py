"""Entropy models as flax linen modules: the factorized `EntropyBottleneck` and the `GaussianConditional`.

Layout: latents are channels-last, `y_BHWC` (any leading dims, channels last). Both modules return
`(y_hat, likelihoods)` from `__call__`, CompressAI-style, with likelihoods of the same shape as `y`; the rate in
bits is `-sum(log2(likelihoods))` (`rate_bits`).

References:
- Ballé, Minnen, Singh, Hwang, Johnston 2018, "Variational image compression with a scale hyperprior", appendix 6.1
  (the univariate non-parametric density: a cumulative built from K layers of small positive-weight matrices,
  softplus-reparameterized, with tanh "factors"), sec. 3 (the Gaussian conditional with a hyperprior).
- CompressAI's `EntropyBottleneck` / `GaussianConditional` (the conventions reproduced here: parameter shapes, the
  sign trick in the likelihood, the quantile auxiliary loss, the 64-entry scale table).
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from jaxcomp.entropy import quantizers


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def lower_bound(x: jax.Array, bound: float) -> jax.Array:
  """`max(x, bound)` whose gradient still flows where it would push `x` up (Ballé's `lower_bound`).

  A plain `maximum` would zero the gradient below the bound and could leave a variable stuck there.
  """
  return jnp.maximum(x, bound)


def _lower_bound_fwd(x, bound):
  return jnp.maximum(x, bound), x


def _lower_bound_bwd(bound, x, g):
  # Gradient descent moves along -g: let it through where x is above the bound or where the step raises x.
  pass_through = (x >= bound) | (g < 0)
  return (jnp.where(pass_through, g, jnp.zeros_like(g)),)


lower_bound.defvjp(_lower_bound_fwd, _lower_bound_bwd)


def rate_bits(likelihoods: jax.Array) -> jax.Array:
  """Total information content `-sum(log2 p)` in bits."""
  return -jnp.sum(jnp.log2(likelihoods))


def _std_cdf(x: jax.Array) -> jax.Array:
  return 0.5 * jax.scipy.special.erfc(-x / math.sqrt(2.0))


def _quantize(y, training, key, quantizer, offset):
  if training:
    return quantizers.quantize(y, quantizer, key=key, offset=offset)
  return quantizers.round_offset(y, offset)


class EntropyBottleneck(nn.Module):
  """Ballé et al. 2018's factorized prior: one learned univariate density per channel (appendix 6.1).

  The cumulative `c(x) = sigmoid(f_K(...f_1(x)))` is monotone because every matrix is `softplus` of a free
  parameter (positive) and every factor `tanh(a)` is in (-1, 1) (so `x + tanh(a) tanh(x)` is monotone). The
  density of a quantized (or noisy) value is `c(y + 1/2) - c(y - 1/2)`, computed on the side of the median where
  the sigmoids are not saturated (the sign trick) and lower-bounded by `likelihood_bound`.

  Parameters (CompressAI shapes, C = `channels`): `matrix{i}` [C, f_{i+1}, f_i], `bias{i}` [C, f_{i+1}, 1],
  `factor{i}` [C, f_{i+1}, 1] (not for the last layer), `quantiles` [C, 1, 3] (lower tail quantile, median,
  upper tail quantile; learned by `aux_loss` only).

  Attributes:
    channels: number of latent channels C.
    filters: widths of the hidden layers; the paper's (3, 3, 3).
    init_scale: expected initial spread of the density (10 in the paper).
    tail_mass: total mass outside the learned quantiles; defines the range of the coding tables.
    likelihood_bound: lower bound on likelihoods (keeps `log` finite).
  """
  channels: int
  filters: Sequence[int] = (3, 3, 3)
  init_scale: float = 10.0
  tail_mass: float = 1e-9
  likelihood_bound: float = 1e-9

  def setup(self):
    dims = (1,) + tuple(self.filters) + (1,)
    scale = self.init_scale ** (1.0 / (len(self.filters) + 1))
    C = self.channels
    matrices, biases, factors = [], [], []
    for i in range(len(self.filters) + 1):
      init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
      matrices.append(self.param(f"matrix{i}", nn.initializers.constant(init), (C, dims[i + 1], dims[i])))
      biases.append(self.param(f"bias{i}", lambda k, s: jax.random.uniform(k, s, jnp.float32, -0.5, 0.5),
                               (C, dims[i + 1], 1)))
      if i < len(self.filters):
        factors.append(self.param(f"factor{i}", nn.initializers.zeros, (C, dims[i + 1], 1)))
    self._matrices, self._biases, self._factors = matrices, biases, factors
    s = self.init_scale
    self.quantiles = self.param(
        "quantiles", lambda k, shape: jnp.broadcast_to(jnp.array([-s, 0.0, s], jnp.float32), shape),
        (C, 1, 3))

  def _logits_cumulative(self, x_C1N: jax.Array, stop_gradient: bool = False) -> jax.Array:
    """Logits of the cumulative for each channel: [C, 1, N] -> [C, 1, N]."""
    logits = x_C1N
    for i, (matrix, bias) in enumerate(zip(self._matrices, self._biases)):
      if stop_gradient:
        matrix, bias = jax.lax.stop_gradient(matrix), jax.lax.stop_gradient(bias)
      logits = jnp.einsum("cij,cjn->cin", nn.softplus(matrix), logits) + bias
      if i < len(self._factors):
        factor = self._factors[i]
        if stop_gradient:
          factor = jax.lax.stop_gradient(factor)
        logits = logits + jnp.tanh(factor) * jnp.tanh(logits)
    return logits

  def medians(self) -> jax.Array:
    """Learned medians, [C]."""
    return self.quantiles[:, 0, 1]

  def likelihood(self, y: jax.Array) -> jax.Array:
    """Probability mass of the unit interval around each value of `y` [..., C] under its channel's density."""
    shape = y.shape
    y_C1N = jnp.moveaxis(y.reshape(-1, self.channels), -1, 0)[:, None, :]
    lower = self._logits_cumulative(y_C1N - 0.5)
    upper = self._logits_cumulative(y_C1N + 0.5)
    # Subtract sigmoids on the side where they are not saturated (left of the median: as is; right: mirrored).
    sign = jax.lax.stop_gradient(jnp.where(lower + upper > 0, -1.0, 1.0))
    lik = jnp.abs(nn.sigmoid(sign * upper) - nn.sigmoid(sign * lower))
    lik = jnp.moveaxis(lik[:, 0, :], 0, -1).reshape(shape)
    return lower_bound(lik, self.likelihood_bound)

  def __call__(self, y: jax.Array, *, training: bool, key: Optional[jax.Array] = None,
               quantizer: str = "noise") -> tuple[jax.Array, jax.Array]:
    """Quantizes `y` [..., C] and returns `(y_hat, likelihoods)`, both of `y`'s shape.

    Args:
      y: latents, channels last.
      training: True: quantize with `quantizer` ("noise" / "stochastic" are random; "ste" rounds around the
        medians with a straight-through gradient); False: round around the medians (what the codec writes).
      key: PRNG key for the random quantizers; when None they draw from the flax rng stream "noise"
        (`apply(..., rngs={"noise": key})`).
      quantizer: one of `quantizers.MODES`.
    """
    if y.shape[-1] != self.channels:
      raise ValueError(f"EntropyBottleneck(channels={self.channels}) got a latent with {y.shape[-1]} channels")
    if training and key is None and quantizer in ("noise", "stochastic"):
      key = self.make_rng("noise")
    y_hat = _quantize(y, training, key, quantizer, self.medians())
    return y_hat, self.likelihood(y_hat)

  def aux_loss(self) -> jax.Array:
    """Quantile loss that makes `quantiles` the tail_mass/2, 1/2, 1 - tail_mass/2 quantiles of each density.

    Gradients reach only `quantiles` (the density parameters are held fixed), so this may simply be added to the
    main loss: the two gradients are disjoint (the main loss never reaches `quantiles` during training).
    """
    target = math.log(2.0 / self.tail_mass - 1.0)
    target = jnp.array([-target, 0.0, target], jnp.float32)
    logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
    return jnp.sum(jnp.abs(logits - target))

  def table_pmf(self, samples_CN: jax.Array) -> jax.Array:
    """Likelihood of integer offsets `samples_CN` [C, N] (used to build coding tables), no lower bound."""
    x = samples_CN[:, None, :]
    lower = self._logits_cumulative(x - 0.5)
    upper = self._logits_cumulative(x + 0.5)
    sign = jnp.where(lower + upper > 0, -1.0, 1.0)
    return jnp.abs(nn.sigmoid(sign * upper) - nn.sigmoid(sign * lower))[:, 0, :]


def default_scale_table(min_scale: float = 0.11, max_scale: float = 256.0, levels: int = 64) -> tuple[float, ...]:
  """CompressAI's scale table: `levels` log-spaced scales from `min_scale` to `max_scale` (as float32 values)."""
  table = np.exp(np.linspace(np.log(min_scale), np.log(max_scale), levels)).astype(np.float32)
  return tuple(float(s) for s in table)


SCALE_TABLE = default_scale_table()


class GaussianConditional(nn.Module):
  """Conditional Gaussian entropy model of the scale hyperprior (Ballé et al. 2018, sec. 3; eq. 9-10).

  Each element `y_i` is modelled as `N(mu_i, sigma_i^2)` convolved with U(-1/2, 1/2): its likelihood is
  `Phi((1/2 - |y - mu|) / sigma) - Phi((-1/2 - |y - mu|) / sigma)` (computed on the negative side for accuracy), with
  `sigma` lower-bounded by `scale_bound`. For coding, scales are mapped to the nearest table entry at or above
  them (`build_indexes`) and each table entry has one integer CDF.

  No parameters. Attributes:
    scale_table: increasing scales of the coding tables (default CompressAI's 64 from 0.11 to 256).
    scale_bound: lower bound on scales (the smallest table entry).
    tail_mass: mass outside each table (coded through the escape path).
    likelihood_bound: lower bound on likelihoods.
  """
  scale_table: Sequence[float] = SCALE_TABLE
  scale_bound: float = 0.11
  tail_mass: float = 1e-9
  likelihood_bound: float = 1e-9

  def likelihood(self, y: jax.Array, scales: jax.Array, means: Optional[jax.Array] = None) -> jax.Array:
    """Likelihood of `y` (any shape) under `N(means, scales)` convolved with a unit box."""
    values = y - means if means is not None else y
    scales = lower_bound(scales, self.scale_bound)
    values = jnp.abs(values)
    upper = _std_cdf((0.5 - values) / scales)
    lower = _std_cdf((-0.5 - values) / scales)
    return lower_bound(upper - lower, self.likelihood_bound)

  def __call__(self, y: jax.Array, scales: jax.Array, means: Optional[jax.Array] = None, *, training: bool,
               key: Optional[jax.Array] = None, quantizer: str = "noise") -> tuple[jax.Array, jax.Array]:
    """Quantizes `y` and returns `(y_hat, likelihoods)`; at test time rounds around `means` (or 0)."""
    if training and key is None and quantizer in ("noise", "stochastic"):
      key = self.make_rng("noise")
    y_hat = _quantize(y, training, key, quantizer, means)
    return y_hat, self.likelihood(y_hat, scales, means)

  def build_indexes(self, scales: jax.Array) -> jax.Array:
    """Index of the smallest table scale >= each scale (last entry for larger ones), int32 of `scales`' shape."""
    return build_indexes(scales, self.scale_table)


def build_indexes(scales, scale_table: Sequence[float]):
  """`#{i < T-1 : table[i] < scale}`: CompressAI's rule, so a table never has a smaller scale than the prediction.

  Works on numpy (float32 compares, used by the codec) and on jax arrays; a binary search (`searchsorted`, left
  side), equal to CompressAI's sum of comparisons for every non-NaN scale.
  """
  table = np.asarray(scale_table, np.float32)
  if isinstance(scales, jax.Array):
    return jnp.searchsorted(jnp.asarray(table[:-1]), scales.astype(jnp.float32), side="left").astype(jnp.int32)
  scales = np.asarray(scales, np.float32)
  last = table.size - 1
  # Guess from the log-spacing (2-3x faster than a binary search), then let float32 comparisons decide: the
  # result depends only on the compares, never on the accuracy of log.
  step = (np.log(table[-1]) - np.log(table[0])) / max(last, 1)
  with np.errstate(divide="ignore", invalid="ignore"):
    guess = np.floor((np.log(np.maximum(scales, table[0] / 2)) - np.log(table[0])) / step) + 1
  idx = np.clip(np.nan_to_num(guess, nan=last), 0, last).astype(np.int32)
  for _ in range(last + 1):
    up = (idx < last) & (table[np.minimum(idx, last - 1)] < scales)
    down = (idx > 0) & (table[np.maximum(idx - 1, 0)] >= scales)
    if not (up.any() or down.any()):
      break
    idx = idx + up - down
  return idx


def gaussian_table_pmfs(scale_table: Sequence[float], tail_mass: float):
  """Float64 pmfs of each table scale over its integer support (CompressAI's `update_scale_table`).

  Returns `(pmf [T, Lmax], lengths [T], offsets [T], tails [T])`: table t covers the integers
  `offsets[t] .. offsets[t] + lengths[t] - 1` and leaves mass `tails[t]` outside.
  """
  scales = np.asarray(scale_table, np.float64)
  multiplier = -scipy.stats.norm.ppf(tail_mass / 2)
  center = np.ceil(scales * multiplier).astype(np.int64)
  lengths = 2 * center + 1
  samples = np.abs(np.arange(lengths.max())[None, :] - center[:, None]).astype(np.float64)
  upper = scipy.stats.norm.cdf((0.5 - samples) / scales[:, None])
  lower = scipy.stats.norm.cdf((-0.5 - samples) / scales[:, None])
  pmf = upper - lower
  pmf[np.arange(lengths.max())[None, :] >= lengths[:, None]] = 0.0
  tails = 2 * scipy.stats.norm.cdf((-0.5 - center) / scales)
  return pmf, lengths.astype(np.int32), (-center).astype(np.int32), tails

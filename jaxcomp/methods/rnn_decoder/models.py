"""The hybrid recurrent iterative decoder (Mali, Ororbia, Kifer, Giles; papers/recurrent-learning-iterative-decoder).

The estimator refines one 8x8 target patch over K steps from the 9 decoded (quantized) patches of its 3x3
neighbourhood (Sec. 2):

  e   = W_1 q_1 + ... + W_9 q_9                  transformation function, phi_e = identity
  s_k = s(e, s_{k-1})                            state function: LSTM, GRU, Delta-RNN, Elman RNN or stateless MLP
  p_k = U s_k + c                                reconstruction function, phi_d = identity

Everything here is a pure function of a parameter pytree (a plain dict, so optax and the gradient estimators see
one tree). The state function is written once, as `step(cell, theta_cell, z_prev, e) -> z_next` over a flat
recurrent state z (the LSTM's z = [s, c]); BPTT, RTRL, UORO and SAB all call that same function.

Shapes: q_BNd (B examples, N = 9 patches, d = 64 pixels), e_BH and s_BH (H hidden units), z_BZ (Z = H, or 2H for
the LSTM), p_BD (D = 64 pixels), p_KBD (K refinement steps).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxcomp.errors import ConfigError

Params = dict[str, Any]

CELLS = ("lstm", "gru", "delta_rnn", "elman", "mlp")
ALPHA = 0.235  # MAE/MSE trade-off of eq. 17 (Sec. 2, "alpha = 0.235")
INIT_SCALE = 0.054  # U(-0.054, 0.054) weight initialisation (Sec. 3.2)


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
  """Static (hashable) description of a decoder: safe to close over in jitted functions.

  Attributes:
    cell: state function, one of `CELLS`.
    hidden: hidden units H (512 in the paper).
    num_steps: refinement steps K (4 in the paper).
    patch: patch side d (8 for JPEG blocks, 64 for JPEG 2000 tiles); a patch has d*d pixels.
    num_patches: neighbourhood size N (9 = 3x3).
    alpha: MAE/MSE trade-off of eq. 17.
  """

  cell: str = "lstm"
  hidden: int = 512
  num_steps: int = 4
  patch: int = 8
  num_patches: int = 9
  alpha: float = ALPHA

  def __post_init__(self):
    if self.cell not in CELLS:
      raise ConfigError(f"unknown state function cell={self.cell!r}; expected one of {', '.join(CELLS)}")
    for name in ("hidden", "num_steps", "patch", "num_patches"):
      if int(getattr(self, name)) < 1:
        raise ConfigError(f"{name}={getattr(self, name)!r} must be a positive integer")
    if not 0.0 <= self.alpha <= 1.0:
      raise ConfigError(f"alpha={self.alpha!r} must lie in [0, 1] (convex combination of eq. 17)")

  @property
  def pixels(self) -> int:
    return self.patch * self.patch

  @property
  def state_size(self) -> int:
    """Size Z of the flat recurrent state z: [s, c] for the LSTM, s otherwise."""
    return 2 * self.hidden if self.cell == "lstm" else self.hidden


def _uniform(key: jax.Array, shape: tuple[int, ...], scale: float, dtype) -> jax.Array:
  return jax.random.uniform(key, shape, dtype, -scale, scale)


def init_cell(key: jax.Array, spec: DecoderSpec, scale: float = INIT_SCALE, dtype=jnp.float32) -> Params:
  """State-function parameters Theta_s. Matrices ~ U(-scale, scale), biases 0.

  The Delta-RNN's gating vectors alpha, beta_1, beta_2 start at 1 so that at initialisation eq. 1 passes both the
  recurrent and the input term through (a zero or tiny start would silence d_k^1 and d_k^2).
  """
  h = spec.hidden
  zeros = jnp.zeros((h,), dtype)
  if spec.cell == "lstm":  # eqs. 5-7: one recurrent matrix and bias per gate, e shared across gates
    ks = jax.random.split(key, 4)
    return {f"V_{g}": _uniform(k, (h, h), scale, dtype) for g, k in zip("fico", ks)} | {
        f"b_{g}": zeros for g in "fico"}
  if spec.cell == "gru":  # eqs. 8-9
    ks = jax.random.split(key, 3)
    return {f"V_{g}": _uniform(k, (h, h), scale, dtype) for g, k in zip("zrs", ks)} | {
        f"b_{g}": zeros for g in "zrs"}
  if spec.cell == "delta_rnn":  # eqs. 1-3
    ones = jnp.ones((h,), dtype)
    return {"V": _uniform(key, (h, h), scale, dtype), "b": zeros, "b_r": zeros,
            "alpha": ones, "beta_1": ones, "beta_2": ones}
  if spec.cell == "elman":  # eq. 4
    return {"V": _uniform(key, (h, h), scale, dtype), "b": zeros}
  return {"b": zeros}  # mlp, eq. 10


def init_params(key: jax.Array, spec: DecoderSpec, scale: float = INIT_SCALE, dtype=jnp.float32) -> Params:
  """All decoder parameters {"embed": {"W"}, "cell": Theta_s, "readout": {"U", "c"}}.

  W_Nd H stacks the N transformation matrices W_i (Theta_t); U_HD, c_D are Theta_d.
  """
  k_w, k_s, k_u = jax.random.split(key, 3)
  return {
      "embed": {"W": _uniform(k_w, (spec.num_patches, spec.pixels, spec.hidden), scale, dtype)},
      "cell": init_cell(k_s, spec, scale, dtype),
      "readout": {"U": _uniform(k_u, (spec.hidden, spec.pixels), scale, dtype),
                  "c": jnp.zeros((spec.pixels,), dtype)},
  }


def embed(embed_params: Params, q_BNd: jax.Array) -> jax.Array:
  """Transformation function e = W_1 q_1 + ... + W_N q_N (identity phi_e). q_BNd -> e_BH (any leading dims)."""
  return jnp.einsum("...nd,ndh->...h", q_BNd, embed_params["W"])


def hidden_of(spec: DecoderSpec, z_Z: jax.Array) -> jax.Array:
  """The state s (what the readout sees) inside the flat recurrent state z."""
  return z_Z[..., :spec.hidden]


def with_hidden(spec: DecoderSpec, z_Z: jax.Array, s_H: jax.Array) -> jax.Array:
  """z with its s part replaced (used by SAB, which adds the attended summary to the state)."""
  if spec.cell == "lstm":
    return jnp.concatenate([s_H, z_Z[..., spec.hidden:]], axis=-1)
  return s_H


def step(spec: DecoderSpec, theta: Params, z_prev: jax.Array, e: jax.Array) -> jax.Array:
  """One state-function step z_k = s(e, z_{k-1}; Theta_s) on the flat state (leading batch dims broadcast).

  Args:
    spec: decoder description (selects the state function).
    theta: Theta_s, as made by `init_cell`.
    z_prev: z_{k-1}, [..., Z].
    e: transformation output, [..., H].

  Returns:
    z_k, [..., Z].
  """
  h = spec.hidden
  sig, tanh = jax.nn.sigmoid, jnp.tanh
  if spec.cell == "lstm":
    s, c = z_prev[..., :h], z_prev[..., h:]
    f = sig(e + s @ theta["V_f"] + theta["b_f"])  # eq. 5
    i = sig(e + s @ theta["V_i"] + theta["b_i"])  # eq. 5
    c_tilde = tanh(e + s @ theta["V_c"] + theta["b_c"])  # eq. 6
    c = f * c + i * c_tilde  # eq. 6 (the printed c_t on the right is c_{t-1})
    o = sig(e + s @ theta["V_o"] + theta["b_o"])  # eq. 7
    return jnp.concatenate([o * tanh(c), c], axis=-1)  # eq. 7, phi_s = tanh
  s = z_prev
  if spec.cell == "gru":
    zg = sig(e + s @ theta["V_z"] + theta["b_z"])  # eq. 8
    r = sig(e + s @ theta["V_r"] + theta["b_r"])  # eq. 8
    s_tilde = tanh(e + (r * s) @ theta["V_s"] + theta["b_s"])  # eq. 9
    return zg * s_tilde + (1.0 - zg) * s  # eq. 9
  if spec.cell == "delta_rnn":
    vs = s @ theta["V"]
    d1 = theta["alpha"] * vs * e  # eq. 1
    d2 = theta["beta_1"] * vs + theta["beta_2"] * e  # eq. 1
    s_tilde = tanh(d1 + d2 + theta["b"])  # eq. 2
    r = sig(e + theta["b_r"])  # eq. 3
    return tanh((1.0 - r) * s_tilde + r * s)  # eq. 3, Phi = tanh
  if spec.cell == "elman":
    return tanh(e + s @ theta["V"] + theta["b"])  # eq. 4, phi_s = tanh
  return tanh(e + theta["b"]) + 0.0 * s  # eq. 10: stateless; `0 * s` keeps z's shape/dtype contract explicit


def readout(readout_params: Params, s_H: jax.Array) -> jax.Array:
  """Reconstruction function p_k = U s_k + c (identity phi_d). s_BH -> p_BD."""
  return s_H @ readout_params["U"] + readout_params["c"]


def initial_state(spec: DecoderSpec, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> jax.Array:
  """z_0 = 0."""
  return jnp.zeros((*batch_shape, spec.state_size), dtype)


def step_distortion(spec: DecoderSpec, p_BD: jax.Array, target_BD: jax.Array, batch_size: int) -> jax.Array:
  """The step-k term of D (eqs. 17-19), summed over the examples given.

  D = sum_k [(1 - alpha) / (2K) sum_b sum_i |p - p*| + alpha / (2BK) sum_b sum_i (p - p*)^2].
  As printed, eq. 18 (MAE) is not divided by the batch size B while eq. 19 (MSE) is; we follow the equations.
  `batch_size` is B of eq. 19, passed explicitly so that per-example (RTRL) and per-shard pieces add up to the
  whole-batch loss.
  """
  diff = p_BD - target_BD
  k = spec.num_steps
  return ((1.0 - spec.alpha) / (2.0 * k) * jnp.sum(jnp.abs(diff))
          + spec.alpha / (2.0 * batch_size * k) * jnp.sum(diff * diff))


def apply(spec: DecoderSpec, params: Params, q_BNd: jax.Array, num_steps: int | None = None) -> jax.Array:
  """Runs the decoder for K steps (lax.scan). Returns all reconstructions p_KBD.

  `num_steps` overrides spec.num_steps (the K sweep of Table 1 evaluates one model at several K).
  """
  e_BH = embed(params["embed"], q_BNd)
  z0 = initial_state(spec, q_BNd.shape[:-2], e_BH.dtype)

  def body(z, _):
    z = step(spec, params["cell"], z, e_BH)
    return z, readout(params["readout"], hidden_of(spec, z))

  _, p_KBD = jax.lax.scan(body, z0, None, length=num_steps or spec.num_steps)
  return p_KBD


def loss(spec: DecoderSpec, params: Params, q_BNd: jax.Array, target_BD: jax.Array) -> jax.Array:
  """Distortion D of eq. 17 over the K outputs of one batch (the BPTT objective)."""
  p_KBD = apply(spec, params, q_BNd)
  b = q_BNd.shape[0]
  return jnp.sum(jax.vmap(lambda p: step_distortion(spec, p, target_BD, b))(p_KBD))


def decode(spec: DecoderSpec, params: Params, q_BNd: jax.Array, num_steps: int | None = None) -> jax.Array:
  """Final reconstruction p_K (the decoder's output), clipped to the image range [0, 1]. -> p_BD."""
  return jnp.clip(apply(spec, params, q_BNd, num_steps)[-1], 0.0, 1.0)

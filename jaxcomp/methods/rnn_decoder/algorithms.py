"""Gradient estimators for the iterative decoder: BPTT, RTRL, UORO and SAB, as optax-style pure-function pairs.

Each `make_*` returns a `GradientEstimator(init, update)`:

  state = estimator.init(params)
  grads, aux, state = estimator.update(params, batch, state, key)

for the same model (`models.step`) and the same objective (eq. 17), so their gradients can be compared
coordinate by coordinate and fed to any optax optimizer. `batch = {"q": q_BNd, "target": target_BD}`; `aux` holds
the loss and per-step reconstructions' PSNR. A batch is one K-step refinement episode per example, starting at
z_0 = 0, so no recurrent quantity survives from one batch to the next and the estimator state only counts updates.
The online algorithms expose their per-step recursions too (`rtrl_step`, `uoro_step`) for researchers who want to
drive them step by step.

Memory: BPTT stores the K states for the backward pass (linear in K). RTRL and UORO run the K steps in a
`lax.scan` whose carry is all they keep (state, influence or rank-one factors, gradient accumulator): memory does
not depend on K.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxcomp.errors import ConfigError
from jaxcomp.methods.rnn_decoder import models
from jaxcomp.methods.rnn_decoder.models import DecoderSpec, Params

Batch = dict[str, jax.Array]
ALGORITHMS = ("bptt", "rtrl", "uoro", "sab")


class EstimatorState(NamedTuple):
  """Carried between batches: the number of updates made (episodes are independent, see module docstring)."""
  count: jax.Array


class GradientEstimator(NamedTuple):
  """An optax-style pair: `init(params) -> state`, `update(params, batch, state, key) -> (grads, aux, state)`."""
  init: Callable[[Params], EstimatorState]
  update: Callable[[Params, Batch, EstimatorState, jax.Array | None], tuple[Params, dict[str, jax.Array],
                                                                             EstimatorState]]


def _init(params: Params) -> EstimatorState:
  del params
  return EstimatorState(count=jnp.zeros((), jnp.int32))


def _next(state: EstimatorState) -> EstimatorState:
  return EstimatorState(count=state.count + 1)


def _psnr_K(p_KBD: jax.Array, target_BD: jax.Array) -> jax.Array:
  """PSNR (data range 1) of each step's reconstruction over the batch, [K]; monitoring only."""
  mse = jnp.mean((jnp.clip(p_KBD, 0.0, 1.0) - target_BD) ** 2, axis=(1, 2))
  return -10.0 * jnp.log10(jnp.maximum(mse, 1e-12))


# ----------------------------------------------------------------------------------------------------------- BPTT


def make_bptt(spec: DecoderSpec, batch_size: int | None = None) -> GradientEstimator:
  """Backpropagation through time: the K steps as `lax.scan` (models.apply), gradient by reverse mode.

  `batch_size`: B of eq. 19 (default: the batch's own size); see `make_estimator`.
  """

  def update(params, batch, state, key=None):
    del key

    def objective(p):
      p_KBD = models.apply(spec, p, batch["q"])
      b = batch_size or batch["q"].shape[0]
      return jnp.sum(jax.vmap(lambda x: models.step_distortion(spec, x, batch["target"], b))(p_KBD)), p_KBD

    (value, p_KBD), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return grads, {"loss": value, "psnr_K": _psnr_K(p_KBD, batch["target"])}, _next(state)

  return GradientEstimator(_init, update)


# ----------------------------------------------------------------------------------------------------------- RTRL


class RTRLTrace(NamedTuple):
  """Per-example RTRL carry: state z_Z and influence matrix M_ZP = dz/dphi (eq. 14)."""
  z: jax.Array
  influence: jax.Array


def _recurrent_fn(spec: DecoderSpec, unravel: Callable[[jax.Array], Params], num_cell: int):
  """F(phi_P, z_Z) with phi = [ravel(Theta_s), e]: the state map as a function of one flat vector.

  The transformation output e is constant over the K steps, so it enters the recurrence exactly like a parameter.
  RTRL tracks dz/de (Z x H) instead of dz/dW (Z x 9*64*H) and recovers dL/dW = (dL/de) de/dW with one vjp at the
  end: exact, and the influence matrix is 9*64 times narrower for the transformation weights.
  """

  def f(phi_P, z_Z):
    return models.step(spec, unravel(phi_P[:num_cell]), z_Z, phi_P[num_cell:])

  return f


def rtrl_init(spec: DecoderSpec, num_phi: int, dtype=jnp.float32) -> RTRLTrace:
  """z_0 = 0 and M_0 = dz_0/dphi = 0 for one example."""
  return RTRLTrace(models.initial_state(spec, (), dtype), jnp.zeros((spec.state_size, num_phi), dtype))


def rtrl_step(f: Callable, phi_P: jax.Array, trace: RTRLTrace) -> RTRLTrace:
  """One RTRL step (eq. 14): z_t = F(phi, z_{t-1}), M_t = dF/dphi + (dF/dz) M_{t-1}.

  The carried term (dF/dz) M_{t-1} is forward mode: one `jax.jvp` of F along z per column of M, batched over the P
  columns with `vmap`; it costs Z*Z*P = O(n^4) for n hidden units, RTRL's known cost. The immediate Jacobian
  dF/dphi (Z x P) comes from `jax.jacrev` (Z reverse passes, since Z << P): a one-hot forward Jacobian would
  materialise a P x P tangent basis, while everything here stays within RTRL's own Z x P memory.
  """
  f_z = lambda z: f(phi_P, z)
  z_new, carried = jax.vmap(lambda dz: jax.jvp(f_z, (trace.z,), (dz,)), in_axes=1, out_axes=(None, 1))(
      trace.influence)
  immediate = jax.jacrev(f, argnums=0)(phi_P, trace.z)
  return RTRLTrace(z_new, immediate + carried)


def make_rtrl(spec: DecoderSpec, batch_size: int | None = None) -> GradientEstimator:
  """Real-time recurrent learning (Williams & Zipser 1989; eqs. 12-14): exact gradient, forward in time.

  Per example the influence matrix M_t = dz_t/dphi is carried forward (eq. 14) and each step's loss gradient is
  dL_t/dphi = dL_t/dz_t M_t (eq. 13); readout parameters U, c get their direct gradient. Memory is B*Z*P and
  does not grow with K; time per step is O(n^4).
  """

  def update(params, batch, state, key=None):
    del key
    q_BNd, target_BD = batch["q"], batch["target"]
    b = batch_size or q_BNd.shape[0]
    flat_cell, unravel = ravel_pytree(params["cell"])
    num_cell = flat_cell.shape[0]
    e_BH, embed_vjp = jax.vjp(lambda w: models.embed(w, q_BNd), params["embed"])
    f = _recurrent_fn(spec, unravel, num_cell)

    def step_loss(z_Z, ro, target_D):
      p_D = models.readout(ro, models.hidden_of(spec, z_Z))
      return models.step_distortion(spec, p_D, target_D, b), p_D

    def episode(e_H, target_D):
      phi_P = jnp.concatenate([flat_cell, e_H])
      trace0 = rtrl_init(spec, phi_P.shape[0], phi_P.dtype)

      def body(carry, _):
        trace, g_phi, g_ro, total = carry
        trace = rtrl_step(f, phi_P, trace)
        (value, p_D), (dl_dz, dl_dro) = jax.value_and_grad(step_loss, argnums=(0, 1), has_aux=True)(
            trace.z, params["readout"], target_D)
        g_phi = g_phi + dl_dz @ trace.influence  # eq. 13
        g_ro = jax.tree.map(jnp.add, g_ro, dl_dro)
        return (trace, g_phi, g_ro, total + value), p_D

      zeros_ro = jax.tree.map(jnp.zeros_like, params["readout"])
      carry0 = (trace0, jnp.zeros_like(phi_P), zeros_ro, jnp.zeros((), phi_P.dtype))
      (_, g_phi, g_ro, total), p_KD = jax.lax.scan(body, carry0, None, length=spec.num_steps)
      return g_phi, g_ro, total, p_KD

    g_phi_BP, g_ro_B, total_B, p_BKD = jax.vmap(episode)(e_BH, target_BD)
    grads = {
        "cell": unravel(jnp.sum(g_phi_BP[:, :num_cell], axis=0)),
        "embed": embed_vjp(g_phi_BP[:, num_cell:])[0],
        "readout": jax.tree.map(lambda g: jnp.sum(g, axis=0), g_ro_B),
    }
    aux = {"loss": jnp.sum(total_B), "psnr_K": _psnr_K(jnp.swapaxes(p_BKD, 0, 1), target_BD)}
    return grads, aux, _next(state)

  return GradientEstimator(_init, update)


# ----------------------------------------------------------------------------------------------------------- UORO


class UOROTrace(NamedTuple):
  """Rank-one factors of the influence estimate Z_tilde = z_tilde (x) theta_tilde (eq. 15), plus the state."""
  z: jax.Array
  z_tilde: jax.Array
  theta_tilde: Params


def uoro_init(spec: DecoderSpec, recurrent_params: Params, batch: int, dtype=jnp.float32) -> UOROTrace:
  """z_0 = 0, z_tilde_0 = 0, theta_tilde_0 = 0: unbiased at t = 0 (Tallec & Ollivier 2017)."""
  z = models.initial_state(spec, (batch,), dtype)
  return UOROTrace(z, jnp.zeros_like(z), jax.tree.map(jnp.zeros_like, recurrent_params))


def _norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))


def uoro_step(f: Callable, theta: Params, trace: UOROTrace, key: jax.Array, eps: float = 1e-7) -> UOROTrace:
  """One UORO step (eqs. 15-16).

  (dF/dz) z_tilde comes from `jax.jvp`, nu^T dF/dtheta from `jax.vjp`, nu is a vector of independent random signs:

    z_tilde'     = rho_0 (dF/dz) z_tilde + rho_1 nu
    theta_tilde' = theta_tilde / rho_0 + nu^T (dF/dtheta) / rho_1
    rho_0 = sqrt(|theta_tilde| / |(dF/dz) z_tilde|),  rho_1 = sqrt(|nu^T dF/dtheta| / |nu|)   (eq. 16)

  `eps` keeps the ratios finite when a factor is zero (at t = 0 both are); any positive rho keeps the estimate
  unbiased, so this changes only the variance.
  """
  nu = jax.random.rademacher(key, trace.z.shape, dtype=trace.z.dtype)
  z_new, jz_zt = jax.jvp(lambda z: f(theta, z), (trace.z,), (trace.z_tilde,))
  _, vjp_theta = jax.vjp(lambda th: f(th, trace.z), theta)
  nu_jtheta = vjp_theta(nu)[0]
  rho0 = jnp.sqrt((_norm(trace.theta_tilde) + eps) / (_norm(jz_zt) + eps))
  rho1 = jnp.sqrt((_norm(nu_jtheta) + eps) / (_norm(nu) + eps))
  z_tilde = rho0 * jz_zt + rho1 * nu
  theta_tilde = jax.tree.map(lambda a, b: a / rho0 + b / rho1, trace.theta_tilde, nu_jtheta)
  return UOROTrace(z_new, z_tilde, theta_tilde)


def make_uoro(spec: DecoderSpec, eps: float = 1e-7, batch_size: int | None = None) -> GradientEstimator:
  """Unbiased online recurrent optimisation (Tallec & Ollivier 2017; eqs. 15-16).

  The batch is treated as one recurrent system (state z_BZ, parameters theta = {W, Theta_s} shared), so one
  rank-one estimate z_tilde_BZ (x) theta_tilde serves the whole batch: memory is one parameter copy plus B*Z,
  independent of K and of the batch size. Each step's gradient estimate is
  (dL_t/dz_t . z_tilde_t) theta_tilde_t (eq. 13 with the unbiased Z_tilde), plus the exact readout gradient.
  `update` needs a PRNG key (the signs nu).
  """

  def update(params, batch, state, key=None):
    if key is None:
      raise ConfigError("UORO needs a PRNG key for its random signs: pass key= to update()")
    q_BNd, target_BD = batch["q"], batch["target"]
    b = batch_size or q_BNd.shape[0]
    theta = {"embed": params["embed"], "cell": params["cell"]}

    def f(th, z_BZ):
      return models.step(spec, th["cell"], z_BZ, models.embed(th["embed"], q_BNd))

    def step_loss(z_BZ, ro):
      p_BD = models.readout(ro, models.hidden_of(spec, z_BZ))
      return models.step_distortion(spec, p_BD, target_BD, b), p_BD

    def body(carry, key_t):
      trace, g_theta, g_ro, total = carry
      trace = uoro_step(f, theta, trace, key_t, eps)
      (value, p_BD), (dl_dz, dl_dro) = jax.value_and_grad(step_loss, argnums=(0, 1), has_aux=True)(
          trace.z, params["readout"])
      sigma = jnp.vdot(dl_dz, trace.z_tilde)
      g_theta = jax.tree.map(lambda g, t: g + sigma * t, g_theta, trace.theta_tilde)
      g_ro = jax.tree.map(jnp.add, g_ro, dl_dro)
      return (trace, g_theta, g_ro, total + value), p_BD

    dtype = target_BD.dtype
    carry0 = (uoro_init(spec, theta, q_BNd.shape[0], dtype), jax.tree.map(jnp.zeros_like, theta),
              jax.tree.map(jnp.zeros_like, params["readout"]), jnp.zeros((), dtype))
    keys = jax.random.split(key, spec.num_steps)
    (_, g_theta, g_ro, total), p_KBD = jax.lax.scan(body, carry0, keys)
    grads = {"embed": g_theta["embed"], "cell": g_theta["cell"], "readout": g_ro}
    return grads, {"loss": total, "psnr_K": _psnr_K(p_KBD, target_BD)}, _next(state)

  return GradientEstimator(_init, update)


# ------------------------------------------------------------------------------------------------------------ SAB


def init_sab(key: jax.Array, spec: DecoderSpec, att_hidden: int | None = None,
             scale: float = models.INIT_SCALE, dtype=jnp.float32) -> Params:
  """Attention parameters of SAB: score(s, m) = v . tanh(s A_s + m A_m + b)  (Ke et al. 2018, Sec. 3)."""
  a = att_hidden or spec.hidden
  k1, k2, k3 = jax.random.split(key, 3)
  return {"A_s": models._uniform(k1, (spec.hidden, a), scale, dtype),
          "A_m": models._uniform(k2, (spec.hidden, a), scale, dtype),
          "b": jnp.zeros((a,), dtype), "v": models._uniform(k3, (a,), scale, dtype)}


def sparse_attention_weights(scores_MB: jax.Array, valid_M: jax.Array, k_top: int) -> jax.Array:
  """SAB's sparse retrieval: attention over the memory slots restricted to the k_top highest scores.

  The k_top slots are chosen by score (a non-differentiable selection) and the weights are a softmax over the
  selected slots only; every other slot gets weight 0 and, because its score never enters the softmax, exactly
  zero gradient: credit reaches only the selected memories (SAB's sparse replay). The reference implementation
  (nke001/sparse_attentive_backtracking_release) instead shifts softmax weights by the (k_top+1)-th one and
  renormalises; through that threshold and the full-softmax denominator it leaks gradient to unselected slots,
  which is why we normalise over the selected set. With k_top >= the number of filled slots both are plain softmax.
  scores_MB: [M, B]; valid_M: bool [M] (filled slots). Returns weights [M, B] (0 on empty or unselected slots).
  """
  # A finite floor, not -inf: an empty memory then gives a finite (unused) softmax and no NaN gradients.
  floor = jnp.finfo(scores_MB.dtype).min
  selected = jnp.broadcast_to(valid_M[:, None], scores_MB.shape)
  m = scores_MB.shape[0]
  if k_top < m:
    masked = jax.lax.stop_gradient(jnp.where(selected, scores_MB, floor))
    kth_B = jnp.sort(masked, axis=0)[m - k_top]  # k_top-th largest score per example
    selected = selected & (masked >= kth_B[None, :])
  w = jax.nn.softmax(jnp.where(selected, scores_MB, floor), axis=0)
  return jnp.where(selected, w, 0.0)


def sab_apply(spec: DecoderSpec, params: Params, q_BNd: jax.Array, *, k_att: int, k_top: int,
              k_trunc: int | None) -> tuple[jax.Array, jax.Array]:
  """The SAB-augmented forward pass, with SAB's gradient paths. Returns (p_KBD, attention weights [K, M, B]).

  At step k (1-based): z_k = s(e, z_{k-1}); the state s_k attends over the memory of past (augmented) states,
  weights sparsified to the top k_top; the attended summary is added, s_k <- s_k + sum_i w_i m_i, and the
  augmented state both feeds the readout and continues the recurrence. Every k_att steps the augmented s_k is
  written to memory. Gradients: the recurrent edge z_k -> z_{k+1} is cut (stop_gradient) at every multiple of
  k_trunc, so local credit flows inside truncation windows only, while the memory links carry it from any later
  step to the selected past states and on through their own local window (sparse replay). Unselected slots have
  weight 0 in the forward pass, hence no gradient. k_trunc=None (or >= K) cuts nothing.
  """
  if k_att < 1 or k_top < 1:
    raise ConfigError(f"SAB needs k_att >= 1 and k_top >= 1, got k_att={k_att}, k_top={k_top}")
  e_BH = models.embed(params["embed"], q_BNd)
  batch = q_BNd.shape[:-2]
  z0 = models.initial_state(spec, batch, e_BH.dtype)
  num_slots = spec.num_steps // k_att
  if num_slots == 0:  # memory never written: SAB is plain (truncated) BPTT
    num_slots = 1
  att = params["sab"]
  mem0 = jnp.zeros((num_slots, *batch, spec.hidden), e_BH.dtype)
  # Each slot's key m A_m is computed once, when the slot is written, instead of for every slot at every step
  # (the same function and gradient; at 512 hidden units that product dominated SAB's step time).
  keys0 = jnp.zeros((num_slots, *batch, att["A_m"].shape[1]), e_BH.dtype)

  def body(carry, k):
    z, mem, keys, filled = carry
    z = models.step(spec, params["cell"], z, e_BH)
    s = models.hidden_of(spec, z)
    valid = jnp.arange(num_slots) < filled
    pre = s @ att["A_s"] + att["b"]
    scores = jnp.tanh(pre[None] + keys) @ att["v"]  # [M, B]
    w = sparse_attention_weights(scores, valid, k_top)
    s = s + jnp.einsum("mb,mbh->bh", w, mem)
    z = models.with_hidden(spec, z, s)
    write = (k % k_att) == 0
    slot = jnp.minimum(filled, num_slots - 1)
    mem = jnp.where(write, jax.lax.dynamic_update_index_in_dim(mem, s, slot, 0), mem)
    keys = jnp.where(write, jax.lax.dynamic_update_index_in_dim(keys, s @ att["A_m"], slot, 0), keys)
    filled = filled + write.astype(filled.dtype)
    if k_trunc is not None and k_trunc < spec.num_steps:
      z = jnp.where((k % k_trunc) == 0, jax.lax.stop_gradient(z), z)
    return (z, mem, keys, filled), (models.readout(params["readout"], s), w)

  steps = jnp.arange(1, spec.num_steps + 1)
  _, (p_KBD, w_KMB) = jax.lax.scan(body, (z0, mem0, keys0, jnp.zeros((), jnp.int32)), steps)
  return p_KBD, w_KMB


def make_sab(spec: DecoderSpec, k_att: int = 1, k_top: int = 2, k_trunc: int | None = 1,
             batch_size: int | None = None) -> GradientEstimator:
  """Sparse attentive backtracking (Ke et al. 2018) on the decoder; params must hold a "sab" entry (`init_sab`).

  Short episodes: with the paper's K = 4 the memory holds at most K // k_att states (4 with k_att = 1), so top-k
  selection only prunes when k_top < K // k_att, and with k_trunc >= K nothing is truncated: SAB is then exactly
  BPTT of an attention-augmented recurrent net. The regime where SAB saves work (long sequences, k_trunc << K,
  k_top << K / k_att) does not arise at K <= 11.
  """

  def update(params, batch, state, key=None):
    del key

    def objective(p):
      p_KBD, _ = sab_apply(spec, p, batch["q"], k_att=k_att, k_top=k_top, k_trunc=k_trunc)
      b = batch_size or batch["q"].shape[0]
      return jnp.sum(jax.vmap(lambda x: models.step_distortion(spec, x, batch["target"], b))(p_KBD)), p_KBD

    (value, p_KBD), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return grads, {"loss": value, "psnr_K": _psnr_K(p_KBD, batch["target"])}, _next(state)

  return GradientEstimator(_init, update)


def make_estimator(name: str, spec: DecoderSpec, **kwargs: Any) -> GradientEstimator:
  """`make_bptt` / `make_rtrl` / `make_uoro` / `make_sab` by name (kwargs go to the makers).

  Every maker takes `batch_size`, the B that normalises eq. 19's MSE term. Left at None it is the size of the
  batch given to `update`. Under data parallelism pass the global batch size and *sum* the shards' gradients:
  the MAE term (eq. 18, not divided by B) and the MSE term then add up to exactly the single-device gradient of
  the whole batch, whatever the device count (a per-shard B with a mean over shards would divide the MAE term by
  the number of devices).
  """
  makers = {"bptt": make_bptt, "rtrl": make_rtrl, "uoro": make_uoro, "sab": make_sab}
  if name not in makers:
    raise ConfigError(f"unknown learning algorithm {name!r}; expected one of {', '.join(ALGORITHMS)}")
  return makers[name](spec, **kwargs)

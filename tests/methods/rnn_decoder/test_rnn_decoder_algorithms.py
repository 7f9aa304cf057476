"""Exactness of the gradient estimators against independent references.

- RTRL == BPTT to 1e-5 relative (float64) for every state function.
- UORO is unbiased: the mean over many sign draws matches BPTT within sampling error (per-coordinate z-test), and
  the same test rejects a biased estimator (truncated BPTT), so it has power.
- SAB with k_top = all and no truncation == reverse-mode gradient of an independently written attention-augmented
  forward; with k_trunc = 1 and no memory it equals a hand-built one-step-truncated gradient; top-k leaves exactly
  k_top slots with weight.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxcomp.errors import ConfigError
from jaxcomp.methods.rnn_decoder import algorithms, models

CELLS = models.CELLS


@pytest.fixture(autouse=True)
def _float64():
  """Every test here compares gradients to tight tolerances: run it in float64."""
  with jax.enable_x64(True):
    yield


def _problem(cell: str, *, hidden=3, steps=3, batch=2, patch=2, seed=0, scale=0.6):
  """Tiny float64 decoder (patch 2x2 => 4 pixels) with weights large enough that the recurrence matters."""
  spec = models.DecoderSpec(cell=cell, hidden=hidden, num_steps=steps, patch=patch)
  k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
  params = models.init_params(k1, spec, scale=scale, dtype=jnp.float64)
  # Nonzero biases so every parameter receives a generic gradient.
  params["cell"] = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(k4, x.shape, x.dtype), params["cell"])
  q = jax.random.uniform(k2, (batch, spec.num_patches, spec.pixels), jnp.float64)
  target = jax.random.uniform(k3, (batch, spec.pixels), jnp.float64)
  return spec, params, {"q": q, "target": target}


def _rel_err(a, b) -> float:
  fa, fb = ravel_pytree(a)[0], ravel_pytree(b)[0]
  return float(jnp.linalg.norm(fa - fb) / jnp.linalg.norm(fb))


def test_spec_rejects_unknown_cell():
  with pytest.raises(ConfigError, match="cell='transformer'"):
    models.DecoderSpec(cell="transformer")


def test_forward_shapes():
  spec = models.DecoderSpec(cell="lstm", hidden=5, num_steps=4)
  params = models.init_params(jax.random.key(0), spec)
  q = jnp.zeros((3, 9, 64))
  chex.assert_shape(models.apply(spec, params, q), (4, 3, 64))
  chex.assert_shape(models.apply(spec, params, q, num_steps=7), (7, 3, 64))
  chex.assert_shape(params["embed"]["W"], (9, 64, 5))
  lim = np.abs(np.asarray(params["embed"]["W"])).max()
  assert 0.04 < lim <= models.INIT_SCALE


def test_loss_matches_eqs_17_to_19():
  """D = (1-a)/(2K) sum|.| + a/(2BK) sum(.)^2 over all K outputs, written out with numpy."""
  spec, params, batch = _problem("gru", steps=3, batch=4)
  p = np.asarray(models.apply(spec, params, batch["q"]))
  d = p - np.asarray(batch["target"])[None]
  a, k, b = spec.alpha, 3, 4
  expected = (1 - a) / (2 * k) * np.abs(d).sum() + a / (2 * b * k) * (d ** 2).sum()
  np.testing.assert_allclose(float(models.loss(spec, params, batch["q"], batch["target"])), expected, rtol=1e-12)


def test_elman_step_matches_eq_4():
  spec, params, _ = _problem("elman")
  z = jnp.array([0.3, -0.2, 0.5]); e = jnp.array([0.1, 0.4, -0.7])
  th = params["cell"]
  np.testing.assert_allclose(models.step(spec, th, z, e), np.tanh(e + z @ th["V"] + th["b"]), rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_rtrl_equals_bptt(cell):
  spec, params, batch = _problem(cell)
  g_bptt, aux_b, _ = algorithms.make_bptt(spec).update(params, batch, algorithms._init(params), None)
  est = algorithms.make_rtrl(spec)
  g_rtrl, aux_r, state = est.update(params, batch, est.init(params), None)
  chex.assert_trees_all_equal_shapes(g_rtrl, g_bptt)
  assert _rel_err(g_rtrl, g_bptt) < 1e-5
  np.testing.assert_allclose(aux_r["loss"], aux_b["loss"], rtol=1e-12)
  assert int(state.count) == 1
  # Every parameter group must matter, or the comparison would be vacuous for it.
  for group in ("embed", "cell", "readout"):
    assert float(jnp.abs(ravel_pytree(g_bptt[group])[0]).max()) > 1e-6


def test_bptt_matches_finite_differences():
  """BPTT itself against central differences along a random direction (the reference for the others)."""
  spec, params, batch = _problem("delta_rnn")
  g, _, _ = algorithms.make_bptt(spec).update(params, batch, algorithms._init(params), None)
  flat, unravel = ravel_pytree(params)
  v = jax.random.normal(jax.random.key(5), flat.shape, flat.dtype)
  f = lambda x: models.loss(spec, unravel(x), batch["q"], batch["target"])
  h = 1e-6
  fd = (f(flat + h * v) - f(flat - h * v)) / (2 * h)
  np.testing.assert_allclose(jnp.vdot(ravel_pytree(g)[0], v), fd, rtol=1e-6)


def _z_scores(samples_NP, reference_P):
  mean = samples_NP.mean(0)
  se = samples_NP.std(0, ddof=1) / np.sqrt(samples_NP.shape[0])
  ok = se > 1e-12  # coordinates with no noise (readout: exact) are compared directly
  z = np.zeros_like(mean)
  z[ok] = (mean[ok] - reference_P[ok]) / se[ok]
  return z, ok, mean


@pytest.mark.parametrize("cell", ["lstm", "elman"])
def test_uoro_is_unbiased(cell):
  spec, params, batch = _problem(cell, hidden=3, steps=3, batch=2)
  g_bptt, _, _ = algorithms.make_bptt(spec).update(params, batch, algorithms._init(params), None)
  ref = np.asarray(ravel_pytree(g_bptt)[0])
  est = algorithms.make_uoro(spec)
  state = est.init(params)

  @jax.jit
  def sample(key):
    return ravel_pytree(est.update(params, batch, state, key)[0])[0]

  n = 6000
  samples = np.asarray(jax.lax.map(sample, jax.random.split(jax.random.key(1), n), batch_size=500))
  z, ok, mean = _z_scores(samples, ref)
  # Bonferroni over ~100 coordinates: |z| < 5 fails by chance with p < 1e-4.
  assert np.abs(z[ok]).max() < 5.0, np.abs(z).max()
  np.testing.assert_allclose(mean[~ok], ref[~ok], rtol=1e-9, atol=1e-12)
  assert ok.sum() > 0.5 * ok.size  # the noisy (recurrent) coordinates were really tested

  # Power: a biased estimate (gradient truncated to one step) is rejected by the same test and noise level.
  trunc = np.asarray(ravel_pytree(_truncated_one_step_grad(spec, params, batch))[0])
  z_bad = (trunc - ref)[ok] / (samples.std(0, ddof=1)[ok] / np.sqrt(n))
  assert np.abs(z_bad).max() > 5.0


def _truncated_one_step_grad(spec, params, batch):
  """Reference TBPTT(1): sum_k dL_k/dtheta with z_{k-1} held constant (written independently of algorithms.py)."""
  b = batch["q"].shape[0]
  z = models.initial_state(spec, (b,), jnp.float64)
  total = jax.tree.map(jnp.zeros_like, params)
  for _ in range(spec.num_steps):
    def lk(p, z_prev=z):
      zn = models.step(spec, p["cell"], z_prev, models.embed(p["embed"], batch["q"]))
      return models.step_distortion(spec, models.readout(p["readout"], models.hidden_of(spec, zn)),
                                    batch["target"], b)
    total = jax.tree.map(jnp.add, total, jax.grad(lk)(params))
    z = models.step(spec, params["cell"], z, models.embed(params["embed"], batch["q"]))
  return total


def test_uoro_needs_key():
  spec, params, batch = _problem("elman")
  est = algorithms.make_uoro(spec)
  with pytest.raises(ConfigError, match="PRNG key"):
    est.update(params, batch, est.init(params), None)


def _sab_problem(cell, steps=4, batch=2):
  spec, params, batch = _problem(cell, hidden=3, steps=steps, batch=batch)
  params["sab"] = algorithms.init_sab(jax.random.key(7), spec, att_hidden=4, scale=0.8, dtype=jnp.float64)
  return spec, params, batch


def _reference_sab_loss(spec, params, batch, k_att):
  """Full-attention SAB forward written as a plain Python loop over a list memory (softmax over all slots)."""
  q, target = batch["q"], batch["target"]
  b = q.shape[0]
  e = models.embed(params["embed"], q)
  z = models.initial_state(spec, (b,), jnp.float64)
  att = params["sab"]
  memory, total = [], 0.0
  for k in range(1, spec.num_steps + 1):
    z = models.step(spec, params["cell"], z, e)
    s = models.hidden_of(spec, z)
    if memory:
      scores = jnp.stack([jnp.tanh(s @ att["A_s"] + m @ att["A_m"] + att["b"]) @ att["v"] for m in memory])
      w = jnp.exp(scores - scores.max(0)); w = w / w.sum(0)
      s = s + sum(w[i][:, None] * m for i, m in enumerate(memory))
    z = models.with_hidden(spec, z, s)
    if k % k_att == 0:
      memory.append(s)
    total = total + models.step_distortion(spec, models.readout(params["readout"], s), target, b)
  return total


@pytest.mark.parametrize("cell,k_att,steps", [("lstm", 1, 4), ("gru", 2, 6), ("elman", 1, 4)])
def test_sab_full_attention_no_truncation_equals_bptt(cell, k_att, steps):
  # steps >= 2 * k_att + 1 so that some step attends over two slots (one slot gets weight 1: no score gradient).
  spec, params, batch = _sab_problem(cell, steps=steps)
  est = algorithms.make_sab(spec, k_att=k_att, k_top=spec.num_steps, k_trunc=None)
  g, aux, _ = est.update(params, batch, est.init(params), None)
  f = lambda p: _reference_sab_loss(spec, p, batch, k_att)
  ref_loss, g_ref = jax.value_and_grad(f)(params)
  np.testing.assert_allclose(aux["loss"], ref_loss, rtol=1e-12)
  assert _rel_err(g, g_ref) < 1e-9
  assert float(jnp.abs(ravel_pytree(g["sab"])[0]).max()) > 1e-8  # attention really in the graph


def test_sab_truncation_without_memory_is_tbptt1():
  """k_att > K: memory never written, so SAB with k_trunc = 1 must be exactly one-step truncated BPTT."""
  spec, params, batch = _sab_problem("lstm", steps=3)
  est = algorithms.make_sab(spec, k_att=10, k_top=1, k_trunc=1)
  g, _, _ = est.update(params, batch, est.init(params), None)
  ref = _truncated_one_step_grad(spec, {k: v for k, v in params.items() if k != "sab"}, batch)
  assert _rel_err({k: v for k, v in g.items() if k != "sab"}, ref) < 1e-10
  # and it is not full BPTT
  g_full, _, _ = algorithms.make_bptt(spec).update(
      {k: v for k, v in params.items() if k != "sab"}, batch, algorithms._init(params), None)
  assert _rel_err(ref, g_full) > 1e-3


def test_sab_at_one_step_is_plain_bptt():
  """Degenerate case of the docs: at K = 1 the memory is empty when the only step attends, so SAB with the
  configs' settings (k_att 1, k_top 2, k_trunc 1) is exactly BPTT of the plain decoder, attention untouched."""
  spec, params, batch = _sab_problem("lstm", steps=1)
  est = algorithms.make_sab(spec, k_att=1, k_top=2, k_trunc=1)
  g, aux, _ = est.update(params, batch, est.init(params), None)
  plain = {k: v for k, v in params.items() if k != "sab"}
  g_ref, aux_ref, _ = algorithms.make_bptt(spec).update(plain, batch, algorithms._init(plain), None)
  np.testing.assert_allclose(aux["loss"], aux_ref["loss"], rtol=1e-14)
  assert _rel_err({k: v for k, v in g.items() if k != "sab"}, g_ref) < 1e-12
  np.testing.assert_array_equal(ravel_pytree(g["sab"])[0], 0.0)


def test_sab_top_k_selects_k_slots():
  spec, params, batch = _sab_problem("lstm", steps=6)
  _, w_KMB = algorithms.sab_apply(spec, params, batch["q"], k_att=1, k_top=2, k_trunc=2)
  nonzero = np.asarray((w_KMB > 0).sum(axis=1))  # [K, B]
  np.testing.assert_array_equal(nonzero, np.minimum(np.arange(6), 2)[:, None].repeat(2, 1))
  np.testing.assert_allclose(np.asarray(w_KMB[1:].sum(axis=1)), 1.0, rtol=1e-4)  # eps in the normaliser


def test_sparse_weights_give_no_gradient_to_unselected():
  scores = jnp.array([[0.1], [2.0], [1.0], [-0.5]])
  valid = jnp.array([True, True, True, False])
  f = lambda s: jnp.sum(algorithms.sparse_attention_weights(s, valid, 2) * jnp.arange(4.0)[:, None])
  g = np.asarray(jax.grad(f)(scores))
  np.testing.assert_array_equal(g[[0, 3]], 0.0)  # unselected and empty slots: exactly no credit
  assert np.abs(g[[1, 2]]).min() > 1e-3  # the two selected slots do get it
  w = algorithms.sparse_attention_weights(scores, valid, 2)
  np.testing.assert_allclose(w[1:3, 0], jax.nn.softmax(scores[1:3, 0]), rtol=1e-12)
  w = algorithms.sparse_attention_weights(scores, valid, 5)  # k_top >= filled: plain softmax over valid slots
  np.testing.assert_allclose(w[:3, 0], jax.nn.softmax(scores[:3, 0]), rtol=1e-6)
  assert float(w[3, 0]) == 0.0


@pytest.mark.parametrize("name", ["rtrl", "sab", "uoro"])  # BPTT: the pmapped train-step test
def test_shards_with_global_batch_size_sum_to_whole_batch(name):
  """With batch_size = the whole batch, per-shard gradients and losses add up to the whole batch's (what the
  data-parallel train step relies on: it sums them over devices). UORO's signs differ between a shard and the
  whole batch, so only its loss is compared."""
  spec, params, batch = _sab_problem("gru", steps=3, batch=4) if name == "sab" else _problem("gru", batch=4)
  key = jax.random.key(3)
  whole = algorithms.make_estimator(name, spec)
  part = algorithms.make_estimator(name, spec, batch_size=4)

  @jax.jit
  def run(p, bt):  # one compiled program for the whole batch and both shards
    g, aux, _ = whole.update(p, bt, whole.init(p), key)
    shards = [part.update(p, {k: v[i:i + 2] for k, v in bt.items()}, part.init(p), key) for i in (0, 2)]
    return g, aux, shards

  g, aux, shards = run(params, batch)
  np.testing.assert_allclose(sum(float(s[1]["loss"]) for s in shards), aux["loss"], rtol=1e-12)
  if name != "uoro":
    assert _rel_err(jax.tree.map(jnp.add, shards[0][0], shards[1][0]), g) < 1e-10


def test_estimators_by_name_and_unknown():
  spec = models.DecoderSpec(cell="elman", hidden=2, num_steps=2, patch=2)
  assert isinstance(algorithms.make_estimator("rtrl", spec), algorithms.GradientEstimator)
  with pytest.raises(ConfigError, match="'adjoint'"):
    algorithms.make_estimator("adjoint", spec)

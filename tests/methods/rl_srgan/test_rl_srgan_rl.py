"""The RL loss of RL-SRGAN (Savioli, Sec. 2.2.2-2.2.3, eqs. 5-12): rewards and windowed returns against hand-computed
values (eager, jit, scan, pmap, a numpy round trip of the state), the REINFORCE estimate against the closed-form
gradient of a Gaussian toy problem (and three biased estimators that the same check rejects), the loss's gradients
and sign."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import errors, parallel
from jaxcomp.methods.rl_srgan import rl

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module", autouse=True)
def _fast_threefry_compile():
  # Compiling jax.random.normal with partitionable threefry costs seconds on XLA:CPU (tests/methods/cae_admm).
  with jax.threefry_partitionable(False):
    yield


# ------------------------------------------------------------------------------------------- rewards and returns

# Seven iterations of a batch of 4 per-image metrics (dB); batch means 20, 21, 21, 20.5, 22, 23, 22.9.
METRICS_TB = np.array([
    [20, 20, 20, 20],
    [19, 21, 22, 22],
    [21, 21, 20, 22],
    [20, 20.5, 21, 20.5],
    [22, 22, 22, 22],
    [23, 24, 22, 23],
    [22.9, 22.9, 22.9, 22.9],
], np.float32)
# per_batch: 1[m_i > m_{i-1}], the first 0 (no previous iteration).
PER_BATCH_T = [0, 1, 0, 0, 1, 1, 0]
# per_image: fraction of the batch above the previous batch mean: vs 20 -> 3/4, vs 21 -> 1/4, vs 21 -> 0, vs 20.5 ->
# 1, vs 22 -> 3/4, vs 23 -> 0.
PER_IMAGE_T = [0, 0.75, 0.25, 0, 1, 0.75, 0]
K, GAMMA = 3, 0.9


def _window_returns(r0, r1, r2):
  return [r0 + 0.9 * r1 + 0.81 * r2, r1 + 0.9 * r2, r2]


def _run(update_fn, mode, metrics_TB=METRICS_TB, state=None):
  state = rl.init(K) if state is None else state
  infos = []
  for m_B in metrics_TB:
    state, info = update_fn(state, jnp.asarray(m_B), gamma=GAMMA, k=K, reward_mode=mode)
    infos.append(jax.tree.map(np.asarray, info))
  return state, infos


@pytest.mark.parametrize("mode,rewards", [("per_batch", PER_BATCH_T), ("per_image", PER_IMAGE_T)])
def test_rewards_and_window_returns_match_hand_computation(mode, rewards):
  state, infos = _run(rl.update, mode)
  np.testing.assert_allclose([i["reward"] for i in infos], rewards, rtol=0, atol=0)
  np.testing.assert_array_equal([bool(i["apply"]) for i in infos], [False, False, True, False, False, True, False])
  # Window 1 closes at iteration 2, window 2 at iteration 5 (the state carried the previous metric across windows).
  np.testing.assert_allclose(infos[2]["returns"], _window_returns(*rewards[0:3]), rtol=1e-6)
  np.testing.assert_allclose(infos[5]["returns"], _window_returns(*rewards[3:6]), rtol=1e-6)
  assert infos[5]["target"] == pytest.approx(rewards[3] + 0.9 * rewards[4] + 0.81 * rewards[5], rel=1e-6)
  np.testing.assert_array_equal(infos[2]["rewards"], np.float32(rewards[0:3]))
  for i in (0, 1, 3, 4, 6):
    np.testing.assert_array_equal(infos[i]["returns"], np.zeros(K, np.float32))
    assert infos[i]["target"] == 0.0
  np.testing.assert_allclose([i["metric"] for i in infos], METRICS_TB.mean(axis=1), rtol=1e-6)
  # The next window holds one reward; its previous metric is the last batch mean.
  assert int(state.count) == 1
  np.testing.assert_array_equal(np.asarray(state.rewards), np.float32([rewards[6], 0, 0]))
  assert float(state.prev_metric) == pytest.approx(22.9, rel=1e-6)


@pytest.mark.parametrize("mode", rl.REWARD_MODES)
def test_jit_and_scan_equal_eager(mode):
  eager_state, eager = _run(rl.update, mode)
  jit_update = jax.jit(rl.update, static_argnames=("k", "reward_mode"))
  jit_state, jitted = _run(jit_update, mode)
  for a, b in zip(eager, jitted):
    jax.tree.map(np.testing.assert_array_equal, a, b)
  jax.tree.map(np.testing.assert_array_equal, eager_state, jit_state)

  # The whole sequence in one lax.scan, gamma traced: the form a compiled training loop would take.
  def body(state, m_B, gamma):
    return rl.update(state, m_B, gamma=gamma, k=K, reward_mode=mode)

  scan_state, scanned = jax.jit(lambda m, g: jax.lax.scan(lambda s, x: body(s, x, g), rl.init(K), m))(
      jnp.asarray(METRICS_TB), jnp.float32(GAMMA))
  for key in eager[0]:
    np.testing.assert_array_equal(np.asarray(scanned[key]), np.stack([i[key] for i in eager]), err_msg=key)
  jax.tree.map(np.testing.assert_array_equal, eager_state, scan_state)


@pytest.mark.parametrize("backend,mode", [("pmap", "per_image"), ("shard_map", "per_batch")])
def test_data_parallel_uses_global_batch(backend, mode):
  # Each image twice, one image per device (8 fake devices): every replica must see the reward of the whole batch
  # (same means and fractions as the 4-image batch) and keep an identical state.
  n = parallel.local_device_count()
  metrics_TB = np.repeat(METRICS_TB, n // METRICS_TB.shape[1], axis=1)
  step = parallel.data_parallel(
      lambda s, m: rl.update(s, m, gamma=GAMMA, k=K, reward_mode=mode, axis_name=parallel.AXIS), backend)
  state = parallel.replicate(rl.init(K), backend)
  rewards = []
  for m_B in metrics_TB:
    state, info = step(state, parallel.shard(m_B.reshape(n, -1), backend))
    r_D = np.asarray(info["reward"])
    assert np.all(r_D == r_D[0])
    rewards.append(float(r_D[0]))
  np.testing.assert_allclose(rewards, PER_BATCH_T if mode == "per_batch" else PER_IMAGE_T, atol=0)
  jax.tree.map(lambda x: np.testing.assert_array_equal(np.asarray(x), np.asarray(x)[:1].repeat(n, 0)), state)


def test_state_round_trips_through_numpy_and_msgpack():
  # Stop mid-window (count 1, prev_metric set), restore from numpy / msgpack, continue: identical to not stopping.
  _, ref = _run(rl.update, "per_batch")
  mid, _ = _run(rl.update, "per_batch", METRICS_TB[:4])
  assert int(mid.count) == 1
  as_np = rl.RLState(*(np.asarray(x) for x in mid))
  assert [x.dtype for x in as_np] == [np.float32, np.float32, np.int32]
  assert [x.shape for x in as_np] == [(), (K,), ()]
  from_np = rl.RLState(*(jnp.asarray(x) for x in as_np))
  packed = flax.serialization.msgpack_restore(flax.serialization.msgpack_serialize(as_np._asdict()))
  from_msgpack = rl.RLState(**{k: jnp.asarray(v) for k, v in packed.items()})
  for restored in (from_np, from_msgpack):
    _, rest = _run(rl.update, "per_batch", METRICS_TB[4:], state=restored)
    for a, b in zip(ref[4:], rest):
      jax.tree.map(np.testing.assert_array_equal, a, b)
  # The initial state's NaN survives too (so a restored fresh state still gives reward 0 first).
  fresh = flax.serialization.msgpack_restore(flax.serialization.msgpack_serialize(rl.init(K)._asdict()))
  assert np.isnan(fresh["prev_metric"]) and fresh["count"] == 0


def test_nan_metric_gives_zero_reward_and_restarts_comparison():
  state = rl.init(2)
  out = []
  for m in ([20.0], [np.nan], [25.0], [26.0]):
    state, info = rl.update(state, jnp.float32(m), gamma=0.5, k=2)
    out.append(float(info["reward"]))
  assert out == [0.0, 0.0, 0.0, 1.0]


def test_k_one_closes_every_iteration():
  state = rl.init(1)
  for m, r in ((1.0, 0.0), (2.0, 1.0), (1.5, 0.0)):
    state, info = rl.update(state, jnp.float32([m]), gamma=1.0, k=1)
    assert bool(info["apply"]) and float(info["target"]) == r and int(state.count) == 0


def test_bad_configuration_is_refused():
  with pytest.raises(errors.ConfigError, match="rl.k"):
    rl.init(0)
  with pytest.raises(errors.ConfigError, match="rl.k"):
    rl.init(2.0)
  with pytest.raises(errors.ConfigError, match="does not match"):
    rl.update(rl.init(3), jnp.ones(2), gamma=0.9, k=4)
  with pytest.raises(errors.ConfigError, match="reward_mode"):
    rl.update(rl.init(3), jnp.ones(2), gamma=0.9, k=3, reward_mode="per_pixel")
  for gamma in (0.0, 1.5):
    with pytest.raises(errors.ConfigError, match="gamma"):
      rl.update(rl.init(3), jnp.ones(2), gamma=gamma, k=3)
  with pytest.raises(errors.DataError, match=r"\[B\]"):
    rl.update(rl.init(3), jnp.ones((2, 1)), gamma=0.9, k=3)
  with pytest.raises(errors.DataError, match="log_std"):
    rl.loss(jnp.zeros(3), jnp.zeros(2), jnp.zeros(3), jnp.zeros(3), 1.0, value_weight=5e-3)


# ------------------------------------------------------------------------------- unbiasedness of the estimator

# a ~ N(mu, sigma^2), theta = (mu, log sigma). For R(a) = -(a - c)^2, E[R] = -((mu - c)^2 + sigma^2):
# dE/dmu = -2 (mu - c), dE/dlog sigma = -2 sigma^2. For R(a) = a, E[R] = mu: (1, 0).
MU, LOG_SIGMA, C = 0.3, float(np.log(0.8)), 1.0
N = 200_000
Z_MAX = 5.0  # accept when every coordinate is within 5 standard errors of the closed form
REWARDS = {
    "quadratic": (lambda a: -jnp.square(a - C), np.array([-2 * (MU - C), -2 * np.exp(2 * LOG_SIGMA)])),
    "linear": (lambda a: a, np.array([1.0, 0.0])),
}


def _z_scores(g_N2, true_2):
  """|Monte-Carlo mean - closed form| in units of the mean's standard error (sample std / sqrt N), per coordinate."""
  g = np.asarray(g_N2, np.float64)
  se = g.std(axis=0, ddof=1) / np.sqrt(g.shape[0])
  return np.abs(g.mean(axis=0) - true_2) / se


def _samples(seed=0):
  key_a, key_b = jax.random.split(jax.random.PRNGKey(seed))
  mean_N, log_std_N = jnp.full((N,), MU), jnp.full((N,), LOG_SIGMA)
  return rl.sample_action(key_a, mean_N, log_std_N), rl.sample_action(key_b, mean_N, log_std_N)


def _per_sample_grads(loss_fn, baseline_fn, a_N, r_N, a_logp_N=None):
  """d(-loss)/d theta per sample, through `loss_fn` (value weight 0), vectorised with vmap.

  `baseline_fn(theta)` is V; `a_logp_N` (default a_N) is where log pi is evaluated: a different draw gives the
  "re-sampled action" estimator.
  """
  a_logp_N = a_N if a_logp_N is None else a_logp_N

  def one(a_logp, r):
    def objective(theta):
      mu, log_sigma = theta[0], theta[1]
      v = baseline_fn(theta)
      return -loss_fn(mu[None], log_sigma[None], v[None], a_logp[None], r, value_weight=0.0)[0]

    return jax.grad(objective)(jnp.array([MU, LOG_SIGMA], jnp.float32))

  return jax.jit(jax.vmap(one))(a_logp_N, r_N)


def _loss_without_stop_gradient(mean_B, log_std_B, value_B, action_B, returns, *, value_weight):
  """Biased on purpose: the advantage is differentiated, so a theta-dependent baseline leaks -log pi grad V."""
  del value_weight
  return -jnp.sum(rl.log_prob(action_B, mean_B, log_std_B) * (returns - value_B)), {}


def _loss_without_log_std_normaliser(mean_B, log_std_B, value_B, action_B, returns, *, value_weight):
  """Biased on purpose: log pi without its -log sigma term, so E[d/dlog sigma] is off by -E[R - V]."""
  del value_weight
  z_B = (action_B - mean_B) * jnp.exp(-log_std_B)
  return -jnp.sum(-0.5 * jnp.square(z_B) * jax.lax.stop_gradient(returns - value_B)), {}


@pytest.mark.parametrize("reward", sorted(REWARDS))
@pytest.mark.parametrize("baseline", [0.0, -1.5])
def test_reinforce_estimate_is_unbiased_with_constant_baseline(reward, baseline):
  reward_fn, true = REWARDS[reward]
  a_N, _ = _samples()
  mean_N, log_std_N = jnp.full((N,), MU), jnp.full((N,), LOG_SIGMA)
  g_mu, g_ls = jax.jit(rl.reinforce_grad)(mean_N, log_std_N, jnp.full((N,), baseline), a_N, reward_fn(a_N))
  g = np.stack([g_mu, g_ls], axis=1)
  # The helper is the closed-form score-function estimate, sample by sample.
  a, r = np.asarray(a_N, np.float64), np.asarray(reward_fn(a_N), np.float64)
  s2 = np.exp(2 * LOG_SIGMA)
  np.testing.assert_allclose(g[:, 0], (a - MU) / s2 * (r - baseline), rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(g[:, 1], ((a - MU) ** 2 / s2 - 1) * (r - baseline), rtol=2e-4, atol=2e-5)
  assert np.all(_z_scores(g, true) < Z_MAX), _z_scores(g, true)


def test_reinforce_estimate_is_unbiased_with_theta_dependent_baseline_and_biased_variants_are_rejected():
  # V(theta) = 2 mu - 1 + log sigma depends on the parameters; the loss's stop_gradient keeps the estimate unbiased.
  reward_fn, true = REWARDS["quadratic"]
  a_N, a2_N = _samples(1)
  r_N = reward_fn(a_N)
  baseline = lambda theta: 2.0 * theta[0] - 1.0 + theta[1]
  z_ok = _z_scores(_per_sample_grads(rl.loss, baseline, a_N, r_N), true)
  assert np.all(z_ok < Z_MAX), z_ok

  # Three genuinely biased estimators, run through the same check, are rejected:
  # (1) no stop_gradient on the advantage: bias -E[log pi] grad V = H(pi) (2, 1), H = 1.20 nats here;
  z_no_sg = _z_scores(_per_sample_grads(_loss_without_stop_gradient, baseline, a_N, r_N), true)
  # (2) log pi at an independent re-draw of the action: E = E[grad log pi] E[R - V] = 0 != true;
  z_resampled = _z_scores(_per_sample_grads(rl.loss, baseline, a_N, r_N, a_logp_N=a2_N), true)
  # (3) log pi without its -log sigma: the log sigma coordinate is off by -E[R - V] = 1.13 (zero baseline).
  z_no_norm = _z_scores(_per_sample_grads(_loss_without_log_std_normaliser, lambda t: 0.0 * t[0], a_N, r_N), true)
  for z in (z_no_sg, z_resampled, z_no_norm):
    assert np.max(z) > 4 * Z_MAX, (z_ok, z_no_sg, z_resampled, z_no_norm)
  # The biased variant (1) is exactly as good as the real loss when the baseline is a constant: the check is about
  # the gradient of V, not the formula.
  const = lambda theta: 0.0 * theta[0] - 1.5
  np.testing.assert_allclose(_per_sample_grads(_loss_without_stop_gradient, const, a_N, r_N),
                             _per_sample_grads(rl.loss, const, a_N, r_N), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ the loss itself


def test_loss_gradients_value_term_and_targets():
  rng = np.random.default_rng(0)
  mean, log_std, value, action = (jnp.asarray(rng.normal(size=5), jnp.float32) for _ in range(4))
  ret, w = 1.7, 5e-3
  (l_rl, terms), grads = jax.value_and_grad(rl.loss, argnums=(0, 1, 2), has_aux=True)(
      mean, log_std, value, action, ret, value_weight=w)
  m, s, v, a = (np.asarray(x, np.float64) for x in (mean, log_std, value, action))
  adv, s2 = ret - v, np.exp(2 * s)
  logp = -0.5 * (a - m) ** 2 / s2 - s - 0.5 * np.log(2 * np.pi)
  np.testing.assert_allclose(terms["value"], w * np.sum(adv ** 2), rtol=1e-5)
  np.testing.assert_allclose(terms["policy"], np.sum(logp * adv), rtol=1e-5)
  np.testing.assert_allclose(l_rl, w * np.sum(adv ** 2) - np.sum(logp * adv), rtol=1e-5)
  np.testing.assert_allclose(grads[0], -(a - m) / s2 * adv, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(grads[1], -((a - m) ** 2 / s2 - 1) * adv, rtol=1e-4, atol=1e-6)
  # V is trained by the value term only (the advantage is a constant in the policy term).
  np.testing.assert_allclose(grads[2], -2 * w * adv, rtol=1e-4, atol=1e-7)
  # No gradient into the action or the return; a per-image return broadcasts like the scalar.
  g_a, g_r = jax.grad(lambda a_, r_: rl.loss(mean, log_std, value, a_, r_, value_weight=w)[0], argnums=(0, 1))(
      action, jnp.full((5,), ret))
  assert not np.any(np.asarray(g_a)) and not np.any(np.asarray(g_r))
  np.testing.assert_allclose(rl.loss(mean, log_std, value, action, jnp.full((5,), ret), value_weight=w)[0], l_rl)
  # Upstream parameters get the gradient: mean = w_enc x, as an encoder + head would produce it.
  g_enc = jax.grad(lambda we: rl.loss(we * action + 0.3, log_std, value, action, ret, value_weight=w)[0])(2.0)
  assert np.isfinite(g_enc) and g_enc != 0.0


def test_minimising_raises_log_prob_of_positive_advantage_actions():
  # Two images, the same policy and action; advantage +1 for image 0 (V < R), -1 for image 1 (V > R).
  mean, log_std, action = jnp.zeros(2), jnp.zeros(2), jnp.ones(2)
  value, ret = jnp.array([0.0, 2.0]), 1.0
  grad_m, grad_s = jax.grad(rl.loss, argnums=(0, 1), has_aux=True)(mean, log_std, value, action, ret,
                                                                     value_weight=5e-3)[0]
  lr = 0.1
  before = rl.log_prob(action, mean, log_std)
  after = rl.log_prob(action, mean - lr * grad_m, log_std - lr * grad_s)
  assert after[0] > before[0] and after[1] < before[1]
  # And the critic moves towards the return.
  grad_v = jax.grad(lambda v: rl.loss(mean, log_std, v, action, ret, value_weight=5e-3)[0])(value)
  new_v = value - lr * grad_v
  assert np.all(np.abs(new_v - ret) < np.abs(value - ret))


def test_sample_action_is_gaussian_and_constant():
  mean, log_std = jnp.full((20_000,), 2.0), jnp.full((20_000,), np.log(0.5))
  a = np.asarray(rl.sample_action(jax.random.PRNGKey(3), mean, log_std), np.float64)
  assert abs(a.mean() - 2.0) < 5 * 0.5 / np.sqrt(a.size)
  assert abs(a.std() - 0.5) < 5 * 0.5 / np.sqrt(2 * a.size)
  g = jax.grad(lambda m, s: jnp.sum(rl.sample_action(jax.random.PRNGKey(3), m, s)), argnums=(0, 1))(mean, log_std)
  assert not np.any(np.asarray(g[0])) and not np.any(np.asarray(g[1]))


def test_proposed_loss_adds_rl_only_when_the_window_closes():
  def total(l_rl, apply):
    return rl.proposed_loss(jnp.float32(2.0), l_rl, apply, weight=0.5)

  assert float(total(jnp.float32(4.0), jnp.bool_(True))) == 4.0
  assert float(total(jnp.float32(4.0), jnp.bool_(False))) == 2.0
  assert float(jax.grad(total)(jnp.float32(4.0), jnp.bool_(True))) == 0.5
  assert float(jax.grad(total)(jnp.float32(4.0), jnp.bool_(False))) == 0.0

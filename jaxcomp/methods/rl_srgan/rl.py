"""The actor-critic (RL) loss of RL-SRGAN (Savioli, CLIC 2019, Sec. 2.2.2-2.2.3, eqs. 5-12).

The encoder plus a fully connected head is a Gaussian policy pi(PSNR_pred | I_LR) over the action a = PSNR_pred, and
a critic V(I_LR) (models.ActorCritic). This module is the objective only; the networks' outputs come in as arrays:

  r(i) = 1 if PSNR_i > PSNR_{i-1} else 0                                  (eq. 5; PSNR_i: metric at iteration i)
  R(i) = sum_j gamma^j r(i + j), over a window of k iterations            (eq. 7)
  l_pi = log pi(a | I_LR) (R - V(I_LR))                                    (eq. 10; REINFORCE, eq. 9)
  l_RL = value_weight sum (R - V)^2 - l_pi                                 (eq. 11; minimised)
  l_PL = l_SRGAN + l_RL at the k-th iteration of each window, else l_SRGAN (eq. 12)

As an optax-style set of pure functions over a NamedTuple state, all jittable (usable inside a pmapped step):

  state = rl.init(k)
  state, info = rl.update(state, metric_B, gamma=gamma, k=k)                  # every iteration: reward, eq. 5 and 7
  a_B = rl.sample_action(key, out["mean"], out["log_std"])                  # a ~ pi, a constant for the gradient
  l_rl, terms = rl.loss(out["mean"], out["log_std"], out["value"], a_B, info["target"], value_weight=5e-3)
  total = rl.proposed_loss(l_srgan, l_rl, info["apply"])                     # eq. 12

`metric_B` is any per-image score, higher is better (PSNR of the generator's output by default,
`jaxcomp.metrics.fidelity.psnr`; SSIM, a host metric, ... equally): the caller computes it, this module only compares.

Choices where the paper is ambiguous, made here:

- Reward granularity (`reward_mode`). The training images change every iteration, so "PSNR_{i-1}" of eq. 5 cannot be
  the previous score of the same image. Both modes compare with the previous iteration's *batch-mean* metric m_{i-1},
  the best available estimate of the generator's expected score at i-1 (an exponential average would add a
  hyperparameter the paper does not have; a same-slot comparison would compare two different images and so measure
  image content, not the generator's progress):
    "per_batch" (default, the paper's literal reading): r(i) = 1[mean_b m_b(i) > m_{i-1}], one reward per iteration;
    "per_image": r(i) = mean_b 1[m_b(i) > m_{i-1}], the fraction of this batch's images that beat m_{i-1} (the
      batch average of the per-image rewards of eq. 5; the window holds one reward per iteration, so per-image
      rewards are averaged there). Less quantised than per_batch, still in [0, 1].
  Before the first iteration m_{-1} = NaN, and any comparison with NaN is false, so r(0) = 0 (eq. 5's "otherwise");
  a NaN metric likewise gives reward 0 and restarts the comparison. With `axis_name` the means are over the global
  batch (pmean), so every replica keeps the same state.
- Return window (eq. 7, 12). Rewards are collected for k iterations; at the k-th the window's discounted returns
  R_t = sum_{j >= t} gamma^(j - t) r_j (t, j in the window) are computed, the RL loss is applied, and the window
  restarts. The target of the loss (`info["target"]`) is R_0, the return of the window's first iteration: the only one
  that sums k rewards, i.e. eq. 7's R(i) at the start of the accumulation, truncated after k terms (the truncation
  error is at most gamma^k / (1 - gamma)). It lies in [0, (1 - gamma^k) / (1 - gamma)].
- Which policy outputs the loss uses. The network that produced the window's earlier actions no longer exists (its
  parameters have been updated since), so storing old log-probabilities would give no gradient. At the closing
  iteration the loss takes the *current* batch's mean, log_std and value, with an action sampled this iteration, and
  the scalar target R_0 broadcast to every image; the advantage R - V is a constant for the policy term
  (stop_gradient), as in REINFORCE with a baseline (eq. 9-10).
- What the estimator is unbiased for. For a fixed image and any return R(a) that is a function of the action, and
  any baseline V that does not depend on the sampled a, grad(l_pi) = grad log pi(a) (R(a) - V) is an unbiased
  estimate of grad_theta E_{a ~ pi_theta}[R(a)] (eq. 9; tests/methods/rl_srgan check it against a closed form).
  Eq. 5 does not compare the action with anything: the reward is a function of the generator's outputs, drawn before
  the action. So in RL-SRGAN as written R does not depend on a, E_a[grad log pi(a) (R - V)] = (R - V) E_a[grad log
  pi] = 0, and the policy term adds zero-mean noise to the encoder's gradient (the paper's argument that the reward
  "depends on" PSNR_pred through the shared latent is not a dependence on the sampled action). We implement the paper
  as written and do not invent an action-dependent reward (that would change the method); `loss` accepts any
  `returns`, so one can be passed.
- Where the gradient flows. The loss is differentiable w.r.t. mean, log_std and value; upstream, the policy term
  reaches the encoder through the actor head (the paper: "REINFORCE on the theta encoder parameters") and the value
  term the critic head and, through the shared trunk, the encoder (A3C, Mnih et al. 2016, the paper's [9]). The
  decoder gets no RL gradient: the policy and value do not involve it.
- Reductions: both terms are sums over the batch (eq. 11's sum); under data parallelism the caller's pmean of the
  loss makes them sums over a per-device batch.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcomp.errors import ConfigError, DataError

REWARD_MODES = ("per_batch", "per_image")
_LOG_2PI = math.log(2.0 * math.pi)


class RLState(NamedTuple):
  """What the RL loss carries between iterations (checkpointable: three arrays).

  Attributes:
    prev_metric: `[]` float32, the previous iteration's batch-mean metric m_{i-1} (NaN before the first iteration).
    rewards: `[k]` float32, the rewards of the current window (slots at and after `count` are 0).
    count: `[]` int32, how many rewards the current window holds, in [0, k).
  """

  prev_metric: jax.Array
  rewards: jax.Array
  count: jax.Array


def _check_k(k) -> int:
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ConfigError(f"rl.k (iterations per return window) must be an integer >= 1, got {k!r}")
  return k


def init(k: int) -> RLState:
  """An empty window of k iterations, no previous metric (so the first reward is 0, eq. 5)."""
  k = _check_k(k)
  return RLState(prev_metric=jnp.full((), jnp.nan, jnp.float32), rewards=jnp.zeros((k,), jnp.float32),
                 count=jnp.zeros((), jnp.int32))


def discounted_returns(rewards_k: jax.Array, gamma) -> jax.Array:
  """R_t = sum_{j >= t} gamma^(j - t) r_j within the window (eq. 7 truncated at its end), `[k]`.

  The backward recursion R_t = r_t + gamma R_{t+1}, R_k = 0.
  """

  def body(next_return, r):
    ret = r + gamma * next_return
    return ret, ret

  _, returns_k = jax.lax.scan(body, jnp.zeros((), rewards_k.dtype), rewards_k, reverse=True)
  return returns_k


def reward(prev_metric: jax.Array, metric_B: jax.Array, reward_mode: str = "per_batch",
           axis_name: str | None = None) -> tuple[jax.Array, jax.Array]:
  """Eq. 5 at one iteration: `(r, m)`, the reward (float32 scalar in [0, 1]) and this batch's mean metric m_i.

  See the module docstring for the two `reward_mode`s. NaN `prev_metric` (no previous iteration) gives r = 0.
  """
  if reward_mode not in REWARD_MODES:
    raise ConfigError(f"rl.reward_mode must be one of {', '.join(REWARD_MODES)}, got {reward_mode!r}")
  if metric_B.ndim != 1:
    raise DataError(f"the RL reward needs one metric per image, [B], got shape {tuple(metric_B.shape)}")
  metric_B = metric_B.astype(jnp.float32)

  def batch_mean(x):
    m = jnp.mean(x)
    return m if axis_name is None else jax.lax.pmean(m, axis_name)

  mean = batch_mean(metric_B)
  if reward_mode == "per_batch":
    r = (mean > prev_metric).astype(jnp.float32)
  else:
    r = batch_mean((metric_B > prev_metric).astype(jnp.float32))
  return r, mean


def update(state: RLState, metric_B: jax.Array, *, gamma, k: int, reward_mode: str = "per_batch",
           axis_name: str | None = None) -> tuple[RLState, dict[str, jax.Array]]:
  """Records this iteration's reward (eq. 5) and, at the k-th iteration of the window, its returns (eq. 7).

  Args:
    state: the RL state (`init(k)`).
    metric_B: `[B]` this iteration's per-image metric of the generator's outputs (higher is better).
    gamma: the discount of eq. 7, in (0, 1] (a Python number or a traced scalar).
    k: iterations per window (static; must equal the state's window length).
    reward_mode: "per_batch" or "per_image" (static; module docstring).
    axis_name: the pmap/shard_map axis over which the batch is split, or None.

  Returns:
    `(new_state, info)`; info holds `reward` (`[]`, r(i)), `metric` (`[]`, m_i), `apply` (`[]` bool: this iteration
    closes the window, add l_RL, eq. 12), `rewards` (`[k]`, the window's rewards including this one), `returns`
    (`[k]`, the window's discounted returns when `apply`, else zeros) and `target` (`[]`, returns[0], the target of
    `loss`; 0 unless `apply`).
  """
  k = _check_k(k)
  if state.rewards.shape != (k,):
    raise ConfigError(f"rl.k={k} does not match the RL state's window of {state.rewards.shape[0]} iterations")
  if isinstance(gamma, Real) and not 0.0 < gamma <= 1.0:
    raise ConfigError(f"rl.gamma (discount, eq. 7) must be in (0, 1], got {gamma!r}")
  r, mean = reward(state.prev_metric, metric_B, reward_mode, axis_name)
  rewards_k = state.rewards.at[state.count].set(r)
  count = state.count + 1
  apply = count >= k
  # Computed every iteration (k is tiny) so that the step has one trace; jnp.where keeps it branch-free.
  returns_k = jnp.where(apply, discounted_returns(rewards_k, jnp.asarray(gamma, jnp.float32)), 0.0)
  new_state = RLState(
      prev_metric=mean,
      rewards=jnp.where(apply, jnp.zeros_like(rewards_k), rewards_k),
      count=jnp.where(apply, jnp.zeros_like(count), count),
  )
  info = {"reward": r, "metric": mean, "apply": apply, "rewards": rewards_k, "returns": returns_k,
          "target": returns_k[0]}
  return new_state, info


def sample_action(key: jax.Array, mean_B: jax.Array, log_std_B: jax.Array) -> jax.Array:
  """a ~ N(mean, exp(log_std)^2) per image, `[B]`; a constant for the gradient (REINFORCE differentiates log pi)."""
  eps_B = jax.random.normal(key, jnp.shape(mean_B), jnp.result_type(mean_B))
  return jax.lax.stop_gradient(mean_B + jnp.exp(log_std_B) * eps_B)


def log_prob(action_B: jax.Array, mean_B: jax.Array, log_std_B: jax.Array) -> jax.Array:
  """log pi(a | I_LR) of the Gaussian policy, `[B]`: -(a - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2."""
  z_B = (action_B - mean_B) * jnp.exp(-log_std_B)
  return -0.5 * jnp.square(z_B) - log_std_B - 0.5 * _LOG_2PI


def loss(mean_B: jax.Array, log_std_B: jax.Array, value_B: jax.Array, action_B: jax.Array, returns,
         *, value_weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """l_RL = value_weight sum_b (R - V_b)^2 - sum_b log pi(a_b | I_b) stop_gradient(R - V_b) (eqs. 10-11).

  Minimising it raises log pi of the actions with positive advantage (gradient ascent on eq. 9's objective) and
  regresses V on R. The action is a constant (`sample_action`); the advantage is a constant in the policy term, so the
  policy term's gradient is the REINFORCE estimate with baseline V (unbiased, module docstring) and V is trained by
  the value term only.

  Args:
    mean_B, log_std_B: `[B]` the policy's Gaussian over the action (differentiable).
    value_B: `[B]` the critic V(I_LR) (differentiable).
    action_B: `[B]` the sampled actions (no gradient flows into them).
    returns: `[]` or `[B]` the return R (`update`'s `info["target"]`); broadcast over the batch, no gradient.
    value_weight: the critic's weight, 5e-3 in eq. 11.

  Returns:
    `(l_rl, terms)`; terms holds `policy` (l_pi, summed over the batch), `value` (the weighted value term),
    `log_prob` and `advantage` (batch means, for logging).
  """
  shape = jnp.shape(mean_B)
  for name, x in (("log_std", log_std_B), ("value", value_B), ("action", action_B)):
    if jnp.shape(x) != shape:
      raise DataError(f"rl.loss: {name} has shape {tuple(jnp.shape(x))}, mean has {tuple(shape)}")
  returns_B = jnp.broadcast_to(jax.lax.stop_gradient(jnp.asarray(returns, jnp.result_type(value_B))), shape)
  action_B = jax.lax.stop_gradient(action_B)
  logp_B = log_prob(action_B, mean_B, log_std_B)
  adv_B = returns_B - value_B
  policy = jnp.sum(logp_B * jax.lax.stop_gradient(adv_B))  # eq. 10
  value = value_weight * jnp.sum(jnp.square(adv_B))  # eq. 11's critic term
  terms = {"policy": policy, "value": value, "log_prob": jnp.mean(logp_B), "advantage": jnp.mean(adv_B)}
  return value - policy, terms


def reinforce_grad(mean_B: jax.Array, log_std_B: jax.Array, value_B: jax.Array, action_B: jax.Array,
                   returns) -> tuple[jax.Array, jax.Array]:
  """Per-image REINFORCE estimates of grad E_{a ~ pi}[R] w.r.t. (mean, log_std): the gradient of -`loss`, critic off.

  With a ~ N(mu, sigma^2): d/dmu = (a - mu) / sigma^2 (R - V), d/dlog_sigma = ((a - mu)^2 / sigma^2 - 1) (R - V).
  Each image's estimate depends on its own entries only (the loss sums over images), so averaging the `[B]` outputs
  over many samples estimates the expectation.
  """

  def objective(mean, log_std):
    return -loss(mean, log_std, value_B, action_B, returns, value_weight=0.0)[0]

  return jax.grad(objective, argnums=(0, 1))(mean_B, log_std_B)


def proposed_loss(l_srgan: jax.Array, l_rl: jax.Array, apply: jax.Array, *, weight: float = 1.0) -> jax.Array:
  """Eq. 12: l_SRGAN + weight l_RL when `apply` (the window closes), else l_SRGAN (l_RL then gets no gradient).

  A select, not a branch, so it runs inside a jitted step; l_RL must be finite (it is for clipped log_std).
  """
  return l_srgan + jnp.where(apply, weight * l_rl, jnp.zeros_like(l_rl))

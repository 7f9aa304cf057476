"""jaxcomp.parallel: the data-parallel step equals the single-device step on the global batch, for both backends."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcomp import parallel
from jaxcomp.errors import ConfigError
from jaxcomp.train import TrainState

NDEV = 8
PER_DEVICE = 3
FEATURES = 5

pytestmark = pytest.mark.usefixtures("fast_compile")  # tiny programs: compile without XLA optimisations



class _Net(nn.Module):
  """Dense -> BatchNorm -> relu -> Dense; `axis_name=None` is the single-device reference."""
  axis_name: str | None

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = nn.Dense(7)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.5, axis_name=self.axis_name)(x)
    return nn.Dense(2)(nn.relu(x))


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(NDEV * PER_DEVICE, FEATURES)).astype(np.float32) * 2 + 1
  y = rng.normal(size=(NDEV * PER_DEVICE, 2)).astype(np.float32)
  return x, y


def _init_state():
  variables = _Net(None).init(jax.random.PRNGKey(0), jnp.zeros((1, FEATURES)), train=False)
  return TrainState.from_variables(variables, tx=optax.sgd(0.1, momentum=0.9), rng=jax.random.PRNGKey(1))


def _make_step(axis_name):
  model = _Net(axis_name)

  def step(state, x, y):
    def loss_fn(params):
      out, new_vars = model.apply({"params": params, **state.mutable}, x, mutable=["batch_stats"])
      return jnp.mean((out - y) ** 2), new_vars
    (loss, new_vars), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if axis_name is not None:
      grads, loss = parallel.pmean(grads), parallel.pmean(loss)
    return state.apply_gradients(grads, mutable=new_vars), {"loss": loss}

  return step


@pytest.fixture(scope="module")
def reference():
  """Two steps on one device with the whole global batch."""
  x, y = _data()
  state = _init_state()
  step = jax.jit(_make_step(None))
  for _ in range(2):
    state, metrics = step(state, x, y)
  return jax.device_get(state), float(metrics["loss"])


@pytest.fixture(scope="module")
def parallel_results():
  x, y = _data()
  out = {}
  for backend in parallel.BACKENDS:
    state = parallel.replicate(_init_state(), backend)
    xs = parallel.shard(x.reshape(NDEV, PER_DEVICE, FEATURES), backend)
    ys = parallel.shard(y.reshape(NDEV, PER_DEVICE, 2), backend)
    p_step = parallel.data_parallel(_make_step(parallel.AXIS), backend)
    for _ in range(2):
      state, metrics = p_step(state, xs, ys)
    out[backend] = (jax.device_get(state), np.asarray(metrics["loss"]))
  return out


@pytest.mark.parametrize("backend", parallel.BACKENDS)
def test_parallel_step_equals_single_device_step(reference, parallel_results, backend):
  ref_state, ref_loss = reference
  state, loss = parallel_results[backend]
  chex.assert_shape(loss, (NDEV,))
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6, atol=1e-6)
  for leaf in jax.tree.leaves(state):
    chex.assert_axis_dimension(leaf, 0, NDEV)
  chex.assert_trees_all_close(parallel.unreplicate(state.params), ref_state.params, rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(parallel.unreplicate(state.opt_state), ref_state.opt_state, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", parallel.BACKENDS)
def test_batchnorm_statistics_synchronised_and_global(reference, parallel_results, backend):
  ref_state, _ = reference
  state, _ = parallel_results[backend]
  stats = state.mutable["batch_stats"]
  # Identical on every device...
  for leaf in jax.tree.leaves(stats):
    np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
  # ... and equal to the statistics of the global batch.
  chex.assert_trees_all_close(parallel.unreplicate(stats), ref_state.mutable["batch_stats"], rtol=1e-6, atol=1e-6)


def test_shard_map_equals_pmap(parallel_results):
  fields = lambda s: (s.step, s.params, s.opt_state, s.mutable, s.rng)  # tx is static: another instance per run
  chex.assert_trees_all_close(fields(parallel_results["pmap"][0]), fields(parallel_results["shard_map"][0]),
                              rtol=1e-6, atol=1e-6)


def test_batchnorm_statistics_match_numpy_closed_form():
  """One step from fresh stats: running mean = (1 - momentum) * global batch mean of the first layer's output."""
  x, _ = _data()
  state = _init_state()
  p = state.params["Dense_0"]
  h = x @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
  model = _Net(parallel.AXIS)
  fn = parallel.data_parallel(
      lambda v, xb: model.apply(v, xb, mutable=["batch_stats"])[1], "shard_map", donate_argnums=())
  new = fn(parallel.replicate(state.variables, "shard_map"),
           parallel.shard(x.reshape(NDEV, PER_DEVICE, FEATURES), "shard_map"))
  got = parallel.unreplicate(new)["batch_stats"]["BatchNorm_0"]
  np.testing.assert_allclose(got["mean"], 0.5 * h.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got["var"], 0.5 + 0.5 * h.var(0), rtol=1e-5, atol=1e-6)
  # One device's slice has other statistics, so unsynchronised BatchNorm would fail the checks above.
  assert not np.allclose(h[:PER_DEVICE].mean(0), h.mean(0), atol=1e-2)


@pytest.mark.parametrize("backend", parallel.BACKENDS)
def test_state_is_donated(backend):
  fn = parallel.data_parallel(lambda s, b: (jax.tree.map(lambda a: a + b.sum(), s), b.sum()), backend)
  state = parallel.replicate({"w": np.ones((4,), np.float32)}, backend)
  batch = parallel.shard(np.ones((NDEV, 2), np.float32), backend)
  new, _ = fn(state, batch)
  assert state["w"].is_deleted()
  assert not batch.is_deleted()
  np.testing.assert_allclose(parallel.unreplicate(new)["w"], 3.0)


@pytest.mark.parametrize("backend", parallel.BACKENDS)
def test_device_keys_and_fold_in_device(backend):
  key = jax.random.PRNGKey(42)
  keys = parallel.device_keys(key, backend)
  chex.assert_shape(keys, (NDEV, 2))
  expected = np.stack([np.asarray(jax.random.fold_in(key, i)) for i in range(NDEV)])
  np.testing.assert_array_equal(np.asarray(keys), expected)
  # fold_in_device inside the step gives the same keys from one replicated key.
  fn = parallel.data_parallel(lambda k: parallel.fold_in_device(k), backend, donate_argnums=())
  np.testing.assert_array_equal(np.asarray(fn(parallel.replicate(key, backend))), expected)
  assert len({tuple(k) for k in expected}) == NDEV


def test_replicate_unreplicate_roundtrip_and_shapes():
  tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.int32(7)}
  rep = parallel.replicate(tree)
  chex.assert_shape(rep["a"], (NDEV, 2, 3))
  chex.assert_shape(rep["b"], (NDEV,))
  chex.assert_trees_all_equal(parallel.unreplicate(rep), tree)
  with pytest.raises(ValueError, match="leading axis of 8"):
    parallel.shard(np.zeros((4, 2)))


def test_collectives_match_numpy():
  x = np.arange(NDEV * 2, dtype=np.float32).reshape(NDEV, 2) ** 2
  fn = parallel.data_parallel(lambda v: (parallel.pmean(v), parallel.psum(v), parallel.pmax(v),
                                         parallel.axis_index()), "shard_map", donate_argnums=())
  mean, total, mx, idx = fn(parallel.shard(x, "shard_map"))
  np.testing.assert_allclose(mean[3], x.mean(0))
  np.testing.assert_allclose(total[5], x.sum(0))
  np.testing.assert_allclose(mx[0], x.max(0))
  np.testing.assert_array_equal(idx, np.arange(NDEV))


def test_per_device_batch_size():
  assert parallel.per_device_batch_size(16) == 2
  with pytest.raises(ConfigError, match="global_batch_size=12 must be a positive multiple of the 8 devices"):
    parallel.per_device_batch_size(12)


def test_unknown_backend_is_config_error():
  with pytest.raises(ConfigError, match="config.parallel='vmap'"):
    parallel.data_parallel(lambda x: x, "vmap")


def test_initialize_distributed_reads_environment(monkeypatch):
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAXCOMP_DISTRIBUTED"):
    monkeypatch.delenv(var, raising=False)
  assert parallel.initialize_distributed() is False
  assert parallel.is_main_process()
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES"):
    parallel.initialize_distributed()

"""Unit tests of the harness pieces: TrainState, Checkpointer, guards, logger, restore."""

import json
import os
import signal
import struct
import time

import chex
import grain.python as gp
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxcomp import train
from jaxcomp.errors import CheckpointError, TrainingDiverged
from jaxcomp.train import checkpoint as ckpt_lib

pytestmark = pytest.mark.usefixtures("fast_compile")  # tiny programs: compile without XLA optimisations



def _state(n=3, seed=0):
  params = {"w": jnp.arange(n, dtype=jnp.float32), "b": jnp.zeros(())}
  return train.TrainState.create(params=params, tx=optax.adam(0.1), rng=jax.random.PRNGKey(seed),
                                 mutable={"batch_stats": {"mean": jnp.ones((n,))}})


def _config(method="toy"):
  return ml_collections.ConfigDict({"method": method, "steps": 3, "shape": (1, 2)})


class _Src:
  def __len__(self):
    return 20

  def __getitem__(self, i):
    return np.full((2,), i, np.int32)

  def __repr__(self):
    return "_Src(20)"


def _loader():
  sampler = gp.IndexSampler(20, shard_options=gp.NoSharding(), shuffle=True, num_epochs=None, seed=3)
  return gp.DataLoader(data_source=_Src(), sampler=sampler, operations=[gp.Batch(2)], worker_count=0)


# --- TrainState -------------------------------------------------------------------------------------------------


def test_apply_gradients_matches_optax():
  state = _state()
  grads = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
  new = state.apply_gradients(grads, mutable={"batch_stats": {"mean": jnp.zeros((3,))}})
  tx = optax.adam(0.1)
  updates, _ = tx.update(grads, tx.init(state.params), state.params)
  chex.assert_trees_all_close(new.params, optax.apply_updates(state.params, updates))
  assert int(new.step) == 1
  np.testing.assert_array_equal(new.mutable["batch_stats"]["mean"], 0.0)
  np.testing.assert_array_equal(new.rng, state.rng)  # only next_key advances the key


def test_next_key_advances_and_never_repeats():
  state = _state()
  s1, k1 = state.next_key()
  s2, k2 = s1.next_key()
  rng, expected = jax.random.split(state.rng)
  np.testing.assert_array_equal(k1, expected)
  np.testing.assert_array_equal(s1.rng, rng)
  assert not np.array_equal(k1, k2)


def test_from_variables_splits_collections_and_learning_rate():
  state = train.TrainState.from_variables({"params": {"a": jnp.ones(2)}, "batch_stats": {"m": jnp.zeros(2)}},
                                          tx=optax.sgd(1.0), rng=jax.random.PRNGKey(0))
  assert set(state.variables) == {"params", "batch_stats"}
  assert train.learning_rate(optax.linear_schedule(1.0, 0.0, 10), 5) == pytest.approx(0.5)
  assert train.learning_rate(0.3, 5) == pytest.approx(0.3)


# --- Checkpointer -----------------------------------------------------------------------------------------------


def test_checkpointer_keeps_last_k_and_best(tmp_path):
  host = jax.device_get(_state())
  losses = {2: 5.0, 4: 1.0, 6: 4.0, 8: 3.0, 10: 2.0}
  with train.Checkpointer(tmp_path, _config(), every=2, keep=2, best_metric="loss", best_mode="min") as ck:
    for step in range(1, 11):
      started = ck.save(step, host.replace(step=np.int32(step)), metrics={"loss": losses.get(step, 9.0)})
      assert started == (step % 2 == 0)
    ck.wait()
    assert ck.best_step() == 4
  with train.Checkpointer(tmp_path, _config(), every=2, keep=2, best_metric="loss") as ck:
    assert ck.all_steps() == [4, 8, 10]  # last two, plus the best (lowest loss)
    assert ck.save(10, host, force=True) is False  # a step already saved is not saved twice


def test_checkpointer_best_mode_max(tmp_path):
  host = jax.device_get(_state())
  with train.Checkpointer(tmp_path, _config(), every=1, keep=1, best_metric="psnr", best_mode="max") as ck:
    for step, psnr in [(1, 20.0), (2, 30.0), (3, 25.0), (4, 22.0)]:
      ck.save(step, host, metrics={"psnr": psnr})
    ck.wait()
    assert ck.all_steps() == [2, 4]


def test_restore_is_exact_with_data_iterator(tmp_path):
  state = jax.device_get(_state())
  state = state.apply_gradients({"w": np.ones(3, np.float32), "b": np.float32(1)})
  state = jax.device_get(state)
  it = iter(_loader())
  for _ in range(3):
    next(it)
  with train.Checkpointer(tmp_path, _config(), every=3) as ck:
    ck.save(3, state, it)
  expected_next = [next(it) for _ in range(4)]
  fresh_it = iter(_loader())
  with train.Checkpointer(tmp_path, _config(), every=3) as ck:
    restored, start = ck.restore_or_init(jax.device_get(_state()), fresh_it)
  assert start == 3
  assert isinstance(restored, train.TrainState)
  chex.assert_trees_all_equal((restored.step, restored.params, restored.opt_state, restored.mutable, restored.rng),
                              (state.step, state.params, state.opt_state, state.mutable, state.rng))
  for want in expected_next:
    np.testing.assert_array_equal(next(fresh_it), want)


def test_restore_or_init_without_checkpoint_returns_input(tmp_path):
  host = jax.device_get(_state())
  with train.Checkpointer(tmp_path / "run", _config(), every=3) as ck:
    got, start = ck.restore_or_init(host)
  assert start == 0 and got is host
  assert not (tmp_path / "run").exists()  # a run that ends before its first save leaves no empty folders
  with train.Checkpointer(tmp_path / "run", _config(), every=3) as ck:
    ck.save(3, host)
  assert train.latest_step(tmp_path / "run") == 3  # the first save makes them


def test_checkpoint_of_other_method_or_shape_is_refused(tmp_path):
  with train.Checkpointer(tmp_path, _config(), every=1) as ck:
    ck.save(1, jax.device_get(_state(3)), force=True)
  with pytest.raises(CheckpointError, match="method 'toy', not 'other'"):
    train.Checkpointer(tmp_path, _config("other"), every=1)
  with train.Checkpointer(tmp_path, _config(), every=1) as ck:
    with pytest.raises(CheckpointError, match=r"'params/w' is \(3,\) float32 in the checkpoint but \(4,\)"):
      ck.restore_or_init(jax.device_get(_state(4)))
    extra = jax.device_get(_state(3)).replace(params={"w": np.zeros(3, np.float32), "b": np.float32(0),
                                                      "c": np.float32(0)})
    with pytest.raises(CheckpointError, match="no 'params/c'"):
      ck.restore_or_init(extra)


def test_load_for_eval_from_workdir_alone(tmp_path):
  host = jax.device_get(_state())
  with train.Checkpointer(tmp_path, _config(), every=1) as ck:
    ck.save(1, host, force=True)
    ck.save(2, host.replace(params={"w": np.full(3, 7, np.float32), "b": np.float32(1)}), force=True)
  config, state = train.load_for_eval(tmp_path)
  assert config.method == "toy" and list(config.shape) == [1, 2]
  np.testing.assert_array_equal(state["params"]["w"], 7.0)
  assert isinstance(state["params"]["w"], np.ndarray)
  np.testing.assert_array_equal(state["mutable"]["batch_stats"]["mean"], 1.0)
  _, older = train.load_for_eval(tmp_path, step=1)
  np.testing.assert_array_equal(older["params"]["w"], [0, 1, 2])
  assert train.latest_step(tmp_path) == 2
  with pytest.raises(CheckpointError, match="no checkpoint"):
    train.load_for_eval(tmp_path / "missing")
  with pytest.raises(CheckpointError, match="at step 5"):
    train.load_for_eval(tmp_path, step=5)


def test_init_from_takes_only_the_named_subtrees(tmp_path):
  trained = jax.device_get(_state(seed=1)).replace(params={"w": np.full(3, 7, np.float32), "b": np.float32(2)})
  with train.Checkpointer(tmp_path / "mse", _config(), every=1) as ck:
    ck.save(5, {"codec": trained}, force=True)
  fresh = jax.device_get({"codec": _state(seed=2), "proxy": _state(seed=3)})
  got = train.init_from(fresh, tmp_path / "mse", ["codec/params"])
  np.testing.assert_array_equal(got["codec"].params["w"], 7.0)
  assert got["codec"].params["b"] == 2.0 and got["codec"].params["w"].dtype == np.float32
  # everything else stays fresh: optimizer state, step, key, other networks, and the input is not modified
  chex.assert_trees_all_equal(got["codec"].opt_state, fresh["codec"].opt_state)
  chex.assert_trees_all_equal(got["codec"].rng, fresh["codec"].rng)
  chex.assert_trees_all_equal(got["proxy"], fresh["proxy"])
  np.testing.assert_array_equal(fresh["codec"].params["w"], [0, 1, 2])
  assert int(got["codec"].step) == 0

  with pytest.raises(CheckpointError, match=r"'codec/params/w' is \(3,\) float32 in the checkpoint but \(4,\)"):
    train.init_from(jax.device_get({"codec": _state(4)}), tmp_path / "mse", ["codec/params"])
  with pytest.raises(CheckpointError, match="checkpoint of .* at 'codec' has no 'nope'"):
    train.init_from(fresh, tmp_path / "mse", ["codec/nope"])
  with pytest.raises(CheckpointError, match="at '/' has no 'proxy'"):
    train.init_from(fresh, tmp_path / "mse", ["proxy/params"])
  with pytest.raises(CheckpointError, match="no checkpoint"):
    train.init_from(fresh, tmp_path / "missing", ["codec/params"])


def _tensorboard_scalars(path):
  """An independent reader of TensorBoard event files: TFRecord framing (u64 length, u32 crc, data, u32 crc) of
  `Event` protos, parsed with tensorboardX's generated proto classes (no TensorFlow)."""
  from tensorboardX.proto import event_pb2
  out = {}
  data = path.read_bytes()
  pos = 0
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
    pos += 12 + length + 4
    for v in event.summary.value:
      out.setdefault(v.tag, []).append(v.simple_value)
  return out


# --- Guards and logging -----------------------------------------------------------------------------------------


def test_check_finite_names_step_and_term():
  train.check_finite(3, {"loss": 1.0, "mse": 0.5})
  with pytest.raises(TrainingDiverged, match="step 7: loss term 'rate' is inf; last good checkpoint: step 4"):
    train.check_finite(7, {"loss": 1.0, "rate": float("inf")}, last_good_step=4)
  with pytest.raises(TrainingDiverged, match="'loss' is nan"):
    train.check_finite(1, {"loss": float("nan")})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_preemption_guard_turns_signal_into_stop_request(sig):
  before = signal.getsignal(sig)
  with train.PreemptionGuard() as guard:
    assert not guard.should_stop()
    os.kill(os.getpid(), sig)
    assert guard.should_stop()
    assert guard.requested == signal.Signals(sig).name
  assert signal.getsignal(sig) is before


def test_to_host_scalars_reads_first_device():
  assert train.to_host_scalars({"a": jnp.array([2.0, 2.0]), "b": 3}) == {"a": 2.0, "b": 3.0}


def test_logger_writes_jsonl_and_tensorboard_and_separates_compile(tmp_path):
  with train.TrainLogger(tmp_path, total_steps=4, images_per_step=8, progress=False) as log:
    for step in range(1, 5):
      log.log(step, {"loss": 1.0 / step})
  records = train.read_metrics(tmp_path)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert "compile_time_s" in records[0] and "steps_per_s" not in records[0]
  for r in records[1:]:
    assert "compile_time_s" not in r
    assert r["images_per_s"] == pytest.approx(8 * r["steps_per_s"])
  assert records[2]["loss"] == pytest.approx(1 / 3)
  assert records[3]["steps_per_s"] > 0
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert len(events) == 1
  assert _tensorboard_scalars(events[0])["train/loss"] == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])
  # A resume from step 2 drops the records written after the checkpoint.
  with train.TrainLogger(tmp_path, total_steps=4, start_step=2, progress=False) as log:
    log.log(3, {"loss": 9.0})
  assert [(r["step"], r["loss"]) for r in train.read_metrics(tmp_path)][2:] == [(3, 9.0)]
  json.dumps(train.read_metrics(tmp_path))


def test_logger_rates_count_steps_between_logs(tmp_path):
  with train.TrainLogger(tmp_path, total_steps=30, images_per_step=4, progress=False) as log:
    log.log(10, {"loss": 1.0})
    t0 = time.perf_counter()
    time.sleep(0.2)
    log.log(20, {"loss": 1.0})
    dt = time.perf_counter() - t0
  rec = train.read_metrics(tmp_path)[1]
  # 10 steps in about 0.2 s: ~50 steps/s (not the 5/s one would get by counting one step per call).
  assert 10 / (dt + 0.05) < rec["steps_per_s"] <= 10 / 0.2
  assert rec["images_per_s"] == pytest.approx(4 * rec["steps_per_s"])


def test_config_to_dict_is_json():
  d = ckpt_lib.config_to_dict(ml_collections.ConfigDict({"a": (1, 2), "b": {"c": "x"}}))
  assert d == {"a": [1, 2], "b": {"c": "x"}}

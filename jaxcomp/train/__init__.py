"""The training harness: the one loop every method runs in, and its pieces (see docs/training.md).

  Task, run                    a method's state, step and hooks; the loop that owns checkpoints, resume, the
                               stop signal, the NaN guard, the logging / validation / checkpoint cadence and the
                               end-of-training evaluation (loop.py)
  TrainState                   params, optax state, mutable collections, step, PRNG key (state.py)
  Checkpointer                 orbax checkpoints: state + config + grain iterator, keep-last-K + best (checkpoint.py)
  PreemptionGuard, check_finite, TrainLogger   SIGTERM/SIGINT, NaN guard, jsonl/TensorBoard/tqdm (loop.py)
  load_for_eval, load_config   config and parameters from a workdir alone (restore.py)
  init_from                    warm start: parts of a fresh state from another run's checkpoint (restore.py)
"""

from jaxcomp.train.checkpoint import Checkpointer, config_to_dict, saved_config
from jaxcomp.train.loop import PreemptionGuard, Task, TrainLogger, check_finite, read_metrics, run, to_host_scalars
from jaxcomp.train.restore import init_from, latest_step, load_config, load_for_eval
from jaxcomp.train.state import TrainState, learning_rate

__all__ = [
    "Checkpointer", "PreemptionGuard", "Task", "TrainLogger", "TrainState", "check_finite", "config_to_dict",
    "init_from", "latest_step", "learning_rate", "load_config", "load_for_eval", "read_metrics", "run", "saved_config",
    "to_host_scalars",
]

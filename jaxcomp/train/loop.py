"""The one training loop (`run`, driven by a method's `Task`) and its pieces: preemption, NaN guard, logging."""

from __future__ import annotations

import json
import math
import pathlib
import signal
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from jaxcomp import parallel
from jaxcomp.errors import TrainingDiverged
from jaxcomp.io_utils import write_text_atomic

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class PreemptionGuard:
  """Turns SIGTERM / SIGINT into a request to stop at the next step boundary.

  Cloud TPU/GPU VMs are preempted with SIGTERM; the loop checks `guard.should_stop()` after each step, saves a
  checkpoint and returns. A second SIGINT while waiting raises KeyboardInterrupt (a user insisting on Ctrl-C).
  On several hosts the flag is combined across processes so every host stops at the same step.

    with PreemptionGuard() as guard:
      for step in ...:
        ...
        if guard.should_stop():
          ckpt.save(step, ..., force=True); break
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested: str | None = None
    self._old: dict[int, Any] = {}

  def _handler(self, signum: int, frame: Any) -> None:
    del frame
    if self.requested is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = signal.Signals(signum).name

  def __enter__(self) -> "PreemptionGuard":
    import threading  # signal handlers can only be installed from the main thread
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._old[s] = signal.signal(s, self._handler)
    return self

  def __exit__(self, *exc: Any) -> None:
    for s, old in self._old.items():
      signal.signal(s, old)
    self._old.clear()

  def should_stop(self) -> bool:
    """True once a signal arrived (on any host)."""
    local = self.requested is not None
    if jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray(local))))


def to_host_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
  """Fetches metrics to host floats; replicated arrays (leading device axis) are read from the first device."""
  out = {}
  for k, v in metrics.items():
    # addressable_data(0): this host's first shard, which also works for multi-host global arrays.
    a = np.asarray(v.addressable_data(0)) if isinstance(v, jax.Array) else np.asarray(v)
    out[k] = float(a.reshape(-1)[0]) if a.size else float("nan")
  return out


def check_finite(step: int, metrics: Mapping[str, float], *, last_good_step: int | None = None) -> None:
  """Raises TrainingDiverged naming the step and the first loss term that is NaN or Inf.

  Called before any save in the step, so the last good checkpoint is never overwritten.
  """
  for name, value in metrics.items():
    if not math.isfinite(float(value)):
      kept = f"; last good checkpoint: step {last_good_step}" if last_good_step is not None else ""
      raise TrainingDiverged(f"training diverged at step {step}: loss term '{name}' is {float(value)}{kept}")


class TrainLogger:
  """Per-step scalars to TensorBoard (tensorboardX) and `WORKDIR/metrics.jsonl`, plus a tqdm progress bar.

  Only process 0 writes. Call `log(step, metrics)` once per finished step with host scalars (every loss term and
  the learning rate); the logger adds `steps_per_s` and `images_per_s` from the wall time between calls. The first
  step after (re)start includes XLA compilation: its time is logged once as `compile_time_s` and kept out of the
  rates. On resume, lines of `metrics.jsonl` past `start_step` (written after the checkpoint) are dropped.
  """

  def __init__(self, workdir: str | pathlib.Path, *, total_steps: int, start_step: int = 0,
               images_per_step: int = 0, main_metric: str = "loss", progress: bool = True):
    self.enabled = parallel.is_main_process()
    self.images_per_step = images_per_step
    self.main_metric = main_metric
    self._t = time.perf_counter()
    self._last_step = start_step
    self._first = True
    self._jsonl = self._tb = self._bar = None
    if not self.enabled:
      return
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / METRICS_FILE
    if path.exists():
      keep = [ln for ln in path.read_text().splitlines()
              if ln.strip() and json.loads(ln).get("step", 0) <= start_step]
      write_text_atomic(path, "".join(ln + "\n" for ln in keep))
    self._jsonl = open(path, "a", buffering=1)
    from tensorboardX import SummaryWriter  # imported lazily: only process 0 needs it
    self._tb = SummaryWriter(str(workdir / TENSORBOARD_DIR))
    if progress:
      from tqdm import tqdm
      self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr,
                       mininterval=1.0)

  def reset_timer(self) -> None:
    """Restarts the step timer (e.g. after an evaluation pass that should not count as training time)."""
    self._t = time.perf_counter()

  def log(self, step: int, metrics: Mapping[str, float], *, prefix: str = "train") -> dict[str, float]:
    """Writes one step's scalars; returns them with the timing scalars added."""
    scalars = {k: float(v) for k, v in metrics.items()}
    if prefix == "train":
      now = time.perf_counter()
      dt, self._t = now - self._t, now
      steps, self._last_step = int(step) - self._last_step, int(step)
      if self._first:
        scalars["compile_time_s"] = dt  # the first logged interval: compilation plus its step(s)
        self._first = False
      elif dt > 0 and steps > 0:
        scalars["steps_per_s"] = steps / dt
        if self.images_per_step:
          scalars["images_per_s"] = self.images_per_step * steps / dt
    if not self.enabled:
      return scalars
    self._jsonl.write(json.dumps({"step": int(step), "split": prefix, "time": time.time(), **scalars}) + "\n")
    for k, v in scalars.items():
      self._tb.add_scalar(f"{prefix}/{k}", v, int(step))
    if self._bar is not None and prefix == "train":
      self._bar.update(int(step) - self._bar.n)
      if self.main_metric in scalars:
        self._bar.set_postfix({self.main_metric: f"{scalars[self.main_metric]:.4g}"}, refresh=False)
    return scalars

  def message(self, text: str) -> None:
    """A line for the user (process 0 only), printed without breaking the progress bar."""
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(text, file=sys.stderr)
    else:
      print(text, file=sys.stderr)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()
    self._jsonl = self._tb = self._bar = None

  def __enter__(self) -> "TrainLogger":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
  """The records of `WORKDIR/metrics.jsonl` (for tests and plots)."""
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


# ----------------------------------------------------------------------------------------------------------------
# The one training loop every method plugs into.


class Task:
  """What a method hands to `run`: its state, its step, and its hooks. Subclass and override.

  `run` owns everything else: the batch-size and best-metric checks, the Checkpointer (state + config + data
  iterator), resume, the preemption guard, the NaN guard, the logging / validation / checkpoint cadence, the final
  save and the end-of-training evaluation. The cadence, for every method alike (`config.*`):
    log         every `log_every` steps, at the last step, and at every step that validated
    validate    every `eval_every` steps (0: never periodically), at every checkpoint and at the last step
                (logged as split "eval"; its scalars also rank checkpoints for `best_metric`)
    checkpoint  every `checkpoint_every` steps, on SIGTERM / SIGINT, and at the end
  Per step, in this order: `step` -> NaN check -> `after_step` -> `validate` -> log -> save -> stop check.

  Attributes set by the subclass:
    total_steps       the last step of the run
    data_iter         a grain iterator (checkpointed with the state, so resumes read the same batches), or None
    metric_names      the scalars `step` and `validate` produce (a mistyped `best_metric` is refused before the
                      first step); `learning_rate` is always logged
  """

  total_steps: int = 0
  data_iter: Any = None
  metric_names: frozenset = frozenset()

  def init_state(self) -> Any:
    """A fresh host state pytree (the checkpoint's template)."""
    raise NotImplementedError

  def restore(self, ckpt, config) -> tuple[Any, int]:
    """`(host_state, start_step)`: the latest checkpoint, or a fresh state (warm-started by `config.init_from`)."""
    state, start = ckpt.restore_or_init(self.init_state(), self.data_iter)
    if start == 0 and config.get("init_from") and self.warm_start_parts():
      from jaxcomp.train import restore as restore_lib
      self.warm_step = restore_lib.latest_step(config.init_from)  # None: init_from raises naming the workdir
      state = restore_lib.init_from(state, config.init_from, self.warm_start_parts(), step=self.warm_step)
    return state, start

  warm_step: int | None = None

  def warm_start_parts(self) -> Sequence[str]:
    """The parts of the state `config.init_from` copies from another run (e.g. `["codec/params"]`)."""
    return ()

  def to_device(self, host_state: Any) -> Any:
    return parallel.replicate(host_state, self.backend)

  def step(self, state: Any, step: int) -> tuple[Any, Mapping[str, Any]]:
    """One training step (reads its batch from `data_iter`): `(state, terms)`, terms device or host scalars."""
    raise NotImplementedError

  def learning_rate(self, state: Any, step: int, scalars: Mapping[str, float]) -> float | None:
    """The learning rate applied at `step` (logged as `learning_rate`), or None."""
    return None

  def after_step(self, state: Any, step: int, logger: "TrainLogger") -> Any:
    """Host-side phases between steps (e.g. ADMM's projection); returns the state."""
    return state

  def validate(self, state: Any, step: int) -> dict[str, float]:
    """Validation scalars (logged as split "eval"); {} when the method has none."""
    return {}

  def checkpoint(self, state: Any, step: int) -> Any:
    """The host pytree saved at `step` (default: the unreplicated state)."""
    return parallel.unreplicate(state)

  backend: str = "pmap"


def check_loop_config(config, task: Task) -> None:
  """The loop's own configuration checks, before any workdir is touched (one-line ConfigErrors)."""
  from jaxcomp.errors import ConfigError

  def numbers(node, prefix=""):
    for key, value in node.items():
      if hasattr(value, "items"):
        yield from numbers(value, f"{prefix}{key}.")
      elif isinstance(value, float):
        yield f"{prefix}{key}", value

  for key, value in numbers(config):  # no setting of any method means anything with NaN or infinity
    if not math.isfinite(value):
      raise ConfigError(f"config.{key}={value} is not a finite number")
  if "learning_rate" in config and not config.learning_rate > 0:
    raise ConfigError(f"config.learning_rate={config.learning_rate} must be positive")
  parallel.per_device_batch_size(int(config.global_batch_size))
  if config.best_mode not in ("min", "max"):
    raise ConfigError(f"config.best_mode={config.best_mode!r} must be 'min' or 'max'")
  known = set(task.metric_names) | {"learning_rate"}
  if config.best_metric and config.best_metric not in known:
    raise ConfigError(f"config.best_metric={config.best_metric!r} is not a metric of method {config.method!r} "
                      f"(one of: {', '.join(sorted(known))})")
  for key in ("log_every", "checkpoint_every", "keep_checkpoints"):
    if int(config[key]) <= 0:
      raise ConfigError(f"config.{key}={config[key]} must be positive")
  if int(config.get("eval_every", 0)) < 0:
    raise ConfigError(f"config.eval_every={config.eval_every} must be >= 0 (0: only at checkpoints and the end)")
  if task.total_steps <= 0:
    raise ConfigError(f"config.steps={config.steps} gives {task.total_steps} training steps; it must be positive")


def run(config, workdir: str | pathlib.Path, task: Task, *,
        evaluate: Callable[[], Any] | None = None) -> int:
  """Trains `task` in `workdir` from its latest checkpoint to `task.total_steps`; returns the last step run.

  `evaluate`, if given, runs once the run has reached `total_steps` (not after a preemption): the method's one
  evaluation on `config.eval_data` (`jaxcomp.evaluation.evaluate_run`, the same as `jaxcomp eval`).
  """
  from jaxcomp.train.checkpoint import Checkpointer
  check_loop_config(config, task)
  task.backend = config.parallel
  ckpt = Checkpointer(workdir, config, every=config.checkpoint_every, keep=config.keep_checkpoints,
                      best_metric=config.best_metric or None, best_mode=config.best_mode)
  try:
    host_state, start = task.restore(ckpt, config)
  except BaseException:
    ckpt.close()
    raise
  state = task.to_device(host_state)
  del host_state
  logger = TrainLogger(workdir, total_steps=task.total_steps, start_step=start,
                       images_per_step=int(config.global_batch_size), main_metric="loss")
  if task.warm_step is not None:
    logger.message(f"initialised from {config.init_from} (step {task.warm_step})")
  eval_every = int(config.get("eval_every", 0))
  step, scalars = start, {}
  with PreemptionGuard() as guard, logger:
    try:
      for step in range(start + 1, task.total_steps + 1):
        state, terms = task.step(state, step)
        scalars = to_host_scalars(terms)
        check_finite(step, scalars, last_good_step=ckpt.latest_step)
        state = task.after_step(state, step, logger)
        stop = guard.should_stop()
        saving = stop or ckpt.should_save(step) or step == task.total_steps
        validated = {}
        if saving or (eval_every and step % eval_every == 0):
          validated = task.validate(state, step)
          if validated:
            logger.log(step, validated, prefix="eval")
            logger.reset_timer()  # validation time is not training time
        if step % config.log_every == 0 or step == task.total_steps or validated:
          lr = task.learning_rate(state, step, scalars)
          logger.log(step, {**scalars, **({} if lr is None else {"learning_rate": lr})})
        if saving:
          ckpt.save(step, task.checkpoint(state, step), task.data_iter, {**scalars, **validated}, force=True)
        if stop:
          logger.message(f"stopping at step {step} on {guard.requested}: checkpoint saved")
          break
    finally:
      ckpt.close()
  if step >= task.total_steps and evaluate is not None:
    evaluate()
  return step

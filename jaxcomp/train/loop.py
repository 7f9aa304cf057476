"""Loop pieces shared by every method's own train loop: preemption, NaN guard, logging."""

from __future__ import annotations

import json
import math
import pathlib
import signal
import sys
import time
from typing import Any, Mapping

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

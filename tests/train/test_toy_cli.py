"""End to end through the CLI with the toy method (tests/toy): train, stop, resume, evaluate, compress.

Resume-exactness and NaN handling run `jaxcomp.cli.main` in this process (8 fake devices); preemption and the
train -> SIGTERM -> resume -> eval sequence run `python -m jaxcomp.cli` in a subprocess, as a user would.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest
from PIL import Image

from jaxcomp import cli, train

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "tests" / "toy" / "config.py")


@pytest.fixture(autouse=True)
def _toy_importable(monkeypatch):
  monkeypatch.syspath_prepend(str(REPO))  # the toy method's module, tests.toy.method (tests/conftest.py)


pytestmark = pytest.mark.usefixtures("fast_compile")  # tiny programs: compile without XLA optimisations


def _train(workdir, *overrides, variant="tiny"):
  return cli.main(["train", "--config", f"{CONFIG}:{variant}", "--workdir", str(workdir), *overrides])


def _saved(workdir):
  _, state = train.load_for_eval(workdir)
  return state


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """4 steps in one go (the reference for resume-exactness)."""
  workdir = tmp_path_factory.mktemp("straight")
  sys.path.insert(0, str(REPO))
  try:
    assert _train(workdir) == 0
  finally:
    sys.path.remove(str(REPO))
  return workdir


def test_resume_is_exact(straight_run, tmp_path):
  assert _train(tmp_path, "--config.steps=2") == 0
  assert train.latest_step(tmp_path) == 2
  assert _train(tmp_path) == 0  # same workdir: resumes at step 2, runs to 4
  a, b = _saved(straight_run), _saved(tmp_path)
  assert int(a["step"]) == int(b["step"]) == 4
  chex.assert_trees_all_equal(a, b)  # parameters, optimizer state, BatchNorm statistics, PRNG key: bit-identical
  loss = lambda w: [(r["step"], r["loss"]) for r in train.read_metrics(w) if r["split"] == "train"]
  assert loss(straight_run) == loss(tmp_path)
  assert _train(tmp_path) == 0  # already at the last step: nothing to do, nothing changes
  chex.assert_trees_all_equal(_saved(tmp_path), a)


def test_shard_map_backend_matches_pmap(straight_run, tmp_path):
  assert _train(tmp_path, "--config.parallel=shard_map") == 0
  a, b = _saved(straight_run), _saved(tmp_path)
  chex.assert_trees_all_close(a["params"], b["params"], rtol=1e-6, atol=1e-6)
  chex.assert_trees_all_close(a["mutable"], b["mutable"], rtol=1e-6, atol=1e-6)


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, capsys):
  rc = _train(tmp_path, "--config.steps=6", "--config.nan_at_step=5")
  err = capsys.readouterr().err
  assert rc == 2
  assert "jaxcomp: error: training diverged at step 5: loss term 'loss' is nan; last good checkpoint: step 4" in err
  assert train.latest_step(tmp_path) == 4
  state = _saved(tmp_path)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state["params"]))


def _png(path, h=10, w=14, seed=0):
  rng = np.random.default_rng(seed)
  image = np.kron(rng.integers(0, 256, (h // 2, w // 2, 3)), np.ones((2, 2, 1))).astype(np.uint8)
  Image.fromarray(image).save(path)
  return image


def test_compress_decompress_roundtrip(straight_run, tmp_path, capsys):
  image = _png(tmp_path / "in.png")
  assert cli.main(["compress", "--workdir", str(straight_run), str(tmp_path / "in.png"),
                   str(tmp_path / "x.jxc")]) == 0
  assert "bpp" in capsys.readouterr().out
  assert cli.main(["decompress", "--workdir", str(straight_run), str(tmp_path / "x.jxc"),
                   str(tmp_path / "out.png")]) == 0
  out = np.asarray(Image.open(tmp_path / "out.png"))
  chex.assert_shape(out, image.shape)
  umask = os.umask(0)
  os.umask(umask)
  assert (tmp_path / "x.jxc").stat().st_mode & 0o777 == 0o666 & ~umask  # like any file, not mkstemp's 0600
  # The CLI's output is the codec's own reconstruction, built from the checkpoint.
  from tests.toy import method
  config, state = train.load_for_eval(straight_run)
  codec = method.build_codec(config, state)
  data = (tmp_path / "x.jxc").read_bytes()
  assert codec.compress(image) == data
  np.testing.assert_array_equal(codec.decompress(data), out)
  # A corrupt bitstream is a one-line error and leaves no output file behind.
  (tmp_path / "bad.jxc").write_bytes(b"garbage")
  assert cli.main(["decompress", "--workdir", str(straight_run), str(tmp_path / "bad.jxc"),
                   str(tmp_path / "bad.png")]) == 2
  assert "jaxcomp: error: not a toy bitstream" in capsys.readouterr().err
  assert not (tmp_path / "bad.png").exists()
  assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _subprocess(*args, **kwargs):
  env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
         "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}
  return subprocess.Popen([sys.executable, "-m", "jaxcomp.cli", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for_records(workdir, n, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      pytest.fail(f"training exited early: {proc.communicate()}")
    if len([r for r in train.read_metrics(workdir) if r["split"] == "train"]) >= n:
      return
    time.sleep(0.2)
  proc.kill()
  pytest.fail("training did not log in time")


def test_sigterm_saves_and_exits_then_resume_and_eval_through_cli(tmp_path):
  workdir = tmp_path / "run"
  proc = _subprocess("train", "--config", CONFIG, "--workdir", str(workdir), "--config.steps=1000",
                     "--config.sleep_per_step=0.3", "--config.checkpoint_every=1000")
  _wait_for_records(workdir, 2, proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=180)
  assert proc.returncode == 0, err
  assert "on SIGTERM" in err
  stopped = train.latest_step(workdir)
  logged = [r["step"] for r in train.read_metrics(workdir) if r["split"] == "train"]
  assert stopped is not None and 2 <= stopped < 1000
  assert logged[-1] == stopped  # saved at the step boundary right after the signal

  proc = _subprocess("train", "--config", CONFIG, "--workdir", str(workdir), f"--config.steps={stopped + 2}")
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  assert train.latest_step(workdir) == stopped + 2
  logged = [r["step"] for r in train.read_metrics(workdir) if r["split"] == "train"]
  assert logged == list(range(1, stopped + 3))

  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(2):
    _png(folder / f"{i}.png", 16, 16, seed=i)  # SSIM needs 11 px a side
  proc = _subprocess("eval", "--workdir", str(workdir), "--data", str(folder))
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  # stdout is the human summary; the full results go to WORKDIR/eval/<data>.json, whose path it names.
  results_path = workdir / "eval" / "images.json"
  assert f"results: {results_path}" in out
  results = json.loads(results_path.read_text())
  assert results["num_images"] == 2
  assert results["num_images"] == results["total_images"] == 2 and np.isfinite(results["psnr"])
  assert [r["name"] for r in results["images"]] == ["0.png", "1.png"] and results["images"][0]["bytes"] > 8


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  """A real multi-process run on this host: 2 processes x 4 CPU devices, joined through the JAX_* variables that
  launch/gpu_multihost.sh sets (gloo collectives), give the parameters of 1 process x 8 devices.

  SGD rather than Adam: the all-reduce order differs between the two, and Adam would turn the float-rounding-sized
  gradient of a dead ReLU channel into a learning-rate-sized step.
  """
  reference = tmp_path / "one"
  assert _train(reference, "--config.optimizer=sgd") == 0
  workdir = tmp_path / "mh"
  port = _free_port()
  procs = []
  for pid in range(2):
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "JAX_COORDINATOR_ADDRESS": f"localhost:{port}", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(pid)}
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "jaxcomp.cli", "train", "--config", f"{CONFIG}:tiny", "--workdir", str(workdir),
         "--config.optimizer=sgd"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  try:
    outs = [p.communicate(timeout=400) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  a, b = _saved(reference), _saved(workdir)
  assert int(b["step"]) == 4
  chex.assert_trees_all_close(a["params"], b["params"], rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(a["mutable"], b["mutable"], rtol=1e-5, atol=1e-6)
  # Only process 0 logged; both saved their data-iterator position.
  assert [r["step"] for r in train.read_metrics(workdir) if r["split"] == "train"] == [1, 2, 3, 4]
  assert "%" not in outs[1][1]  # no progress bar from process 1
  assert sorted(f.name for f in (workdir / "checkpoints" / "4" / "data").glob("process_*")) == [
      "process_0-of-2.json", "process_1-of-2.json"]

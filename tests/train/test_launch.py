"""launch/*.sh print exactly the commands they would run under --dry-run (parsed back with shlex)."""

import pathlib
import shlex
import subprocess

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parents[2] / "launch"


def _dry_run(script, *args):
  proc = subprocess.run(["bash", str(LAUNCH / script), "--dry-run", *args], capture_output=True, text=True,
                        timeout=30)
  assert proc.returncode == 0, proc.stderr
  return [shlex.split(line) for line in proc.stdout.splitlines()]


def _train_argv(config, workdir, *flags):
  return ["-m", "jaxcomp.cli", "train", "--config", config, "--workdir", workdir, *flags]


def test_local():
  (cmd,) = _dry_run("local.sh", "configs/proxiqa.py:tiny", "runs/my run", "--config.steps=5")
  assert cmd == ["python3", *_train_argv("configs/proxiqa.py:tiny", "runs/my run", "--config.steps=5")]


def test_tpu_vm_same_command_on_every_worker():
  setup, cmd = _dry_run("tpu_vm.sh", "--tpu", "v4-32", "--zone", "us-central2-b", "--project", "proj", "--setup",
                        "configs/proxiqa.py", "gs://bucket/runs/p1", "--config.parallel=shard_map")
  prefix = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "v4-32", "--zone", "us-central2-b", "--project", "proj",
            "--worker=all"]
  assert setup[:-1] == prefix and cmd[:-1] == prefix
  assert setup[-1] == "--command=cd ~/jaxcomp && python3 -m pip install -q -e ."
  assert cmd[-1].startswith("--command=")
  remote = shlex.split(cmd[-1][len("--command="):])
  assert remote[:3] == ["cd", "~/jaxcomp", "&&"]
  assert remote[3] == "JAXCOMP_DISTRIBUTED=1"
  assert remote[4:] == ["python3", *_train_argv("configs/proxiqa.py", "gs://bucket/runs/p1",
                                                "--config.parallel=shard_map")]


def test_gpu_multihost_one_process_per_host():
  cmds = _dry_run("gpu_multihost.sh", "--hosts", "gpu0,gpu1,gpu2", "--port", "9999", "--repo", "/src/jaxcomp",
                  "configs/rl_srgan.py:default", "/nfs/runs/r1", "--config.global_batch_size=96")
  assert len(cmds) == 3
  for i, (cmd, host) in enumerate(zip(cmds, ["gpu0", "gpu1", "gpu2"])):
    assert cmd[:2] == ["ssh", host] and len(cmd) == 3
    remote = shlex.split(cmd[2])
    assert remote[:3] == ["cd", "/src/jaxcomp", "&&"]
    assert remote[3:6] == ["JAX_COORDINATOR_ADDRESS=gpu0:9999", "JAX_NUM_PROCESSES=3", f"JAX_PROCESS_ID={i}"]
    assert remote[6:] == ["python3", *_train_argv("configs/rl_srgan.py:default", "/nfs/runs/r1",
                                                  "--config.global_batch_size=96")]


@pytest.mark.parametrize("script,args", [
    ("local.sh", ["only-config"]),
    ("tpu_vm.sh", ["--zone", "z", "c.py", "w"]),
    ("gpu_multihost.sh", ["c.py", "w"]),
])
def test_usage_errors(script, args):
  proc = subprocess.run(["bash", str(LAUNCH / script), "--dry-run", *args], capture_output=True, text=True,
                        timeout=30)
  assert proc.returncode == 2
  assert proc.stderr.startswith("usage: launch/")

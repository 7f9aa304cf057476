"""The rnn_decoder train loop through the CLI: tiny runs for each algorithm, exact resume, eval from the workdir."""

import pathlib

import chex
import numpy as np
import pytest

from jaxcomp import cli, train

REPO = pathlib.Path(__file__).resolve().parents[3]
CONFIG = str(REPO / "configs" / "rnn_decoder.py")


def _train(workdir, *overrides):
  # decay_steps fixed: the schedule must not depend on the --config.steps of a stopped-early run.
  return cli.main(["train", "--config", f"{CONFIG}:tiny", "--workdir", str(workdir), "--config.decay_steps=3",
                   *overrides])


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("rnn_straight")
  assert _train(workdir) == 0
  return workdir


def test_tiny_bptt_trains_and_logs(straight_run):
  records = [r for r in train.read_metrics(straight_run) if r.get("split", "train") == "train"]
  assert [r["step"] for r in records][-1] == 3
  assert all(np.isfinite(r["loss"]) for r in records)
  assert "val_psnr" in records[-1] and 5 < records[-1]["val_psnr"] < 60


def test_resume_is_exact(straight_run, tmp_path):
  assert _train(tmp_path, "--config.steps=2") == 0
  assert _train(tmp_path) == 0
  _, a = train.load_for_eval(straight_run)
  _, b = train.load_for_eval(tmp_path)
  chex.assert_trees_all_equal(a, b)


@pytest.mark.parametrize("algorithm", ["rtrl", "uoro", "sab"])
def test_other_algorithms_train(algorithm, tmp_path):
  assert _train(tmp_path, f"--config.algorithm={algorithm}", "--config.steps=2", "--config.cell=gru") == 0
  _, state = train.load_for_eval(tmp_path)
  assert int(state["step"]) == 2
  assert ("sab" in state["params"]) == (algorithm == "sab")


def test_eval_reports_whole_image_metrics(straight_run, tmp_path, capsys):
  assert cli.main(["eval", "--workdir", str(straight_run), "--dataset", "sample"]) == 0
  out = capsys.readouterr().out
  assert "codec_psnr" in out and "gain_psnr" in out


def test_bad_algorithm_is_a_user_error(tmp_path, capsys):
  assert _train(tmp_path, "--config.algorithm=adjoint") == 2
  assert "adjoint" in capsys.readouterr().err

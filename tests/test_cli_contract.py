"""The CLI contract: each command takes its own flags (and refuses the others' in one line), `--help` lists them with
their defaults, and the usage texts (module docstring, README) name only flags the command really takes."""

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcomp import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def _one_error_line(capsys, argv, *fragments):
  rc = cli.main(argv)
  captured = capsys.readouterr()
  lines = captured.err.strip().splitlines()
  assert rc == 2 and len(lines) == 1 and lines[0].startswith("jaxcomp: error: "), captured.err
  for f in fragments:
    assert f in lines[0], lines[0]
  return lines[0]


def _help(capsys, argv):
  assert cli.main(argv) == 0
  captured = capsys.readouterr()
  assert not captured.err
  return captured.out


def _mentions(text, flag):
  """`--flag` as a whole flag name (`--data` is not mentioned by `--dataset`)."""
  return re.search(rf"--{re.escape(flag)}(?![\w.])", text) is not None


def _flags_in(line):
  return [m.group(1) for m in re.finditer(r"--([A-Za-z_][\w.]*)", line)]


def test_flag_table_covers_every_command():
  assert set(cli.COMMAND_FLAGS) == set(cli.COMMANDS) == set(cli._DISPATCH)
  for command, names in cli.COMMAND_FLAGS.items():
    assert names and set(names) <= set(cli._FLAGS), command
  assert set().union(*map(set, cli.COMMAND_FLAGS.values())) == set(cli._FLAGS)  # no flag defined for nobody


@pytest.mark.parametrize("command", cli.COMMANDS)
@pytest.mark.parametrize("help_flag", ["--help", "-h"])
def test_command_help_lists_its_flags(capsys, command, help_flag):
  out = _help(capsys, [command, help_flag])
  assert out.startswith("usage:\n") and f"jaxcomp {command} " in out
  for name in cli.COMMAND_FLAGS[command]:
    f = cli._flag(command, name)
    assert _mentions(out, name) and f.help in out, (name, out)
    if f.default is not None:
      assert f"default: {','.join(f.default) if isinstance(f.default, list) else f.default}" in out
  for name in set(cli._FLAGS) - set(cli.COMMAND_FLAGS[command]):
    assert not _mentions(out, name), (name, out)  # only its own flags
  assert _help(capsys, ["help", command]) == out


def test_help_wins_over_other_arguments(capsys, tmp_path):
  out = _help(capsys, ["compress", "in.png", "--workdir", str(tmp_path / "none"), "--help"])
  assert "--step N" in out and "checkpoint step (default: the latest)" in out
  assert "--config.key=value" in _help(capsys, ["train", "--config", "nosuch.py", "-h"])
  assert not cli._wants_help(["--", "--help"])  # after `--`, a positional argument


def test_overall_help_lists_every_command(capsys):
  for argv in (["--help"], ["-h"], ["help"]):
    out = _help(capsys, argv)
    for command in cli.COMMANDS:
      assert f"  jaxcomp {command}" in out
    assert "jaxcomp <command> --help" in out
  _one_error_line(capsys, ["help", "fly"], "unknown command 'fly'")


def test_usage_names_every_flag_of_every_command():
  """The docstring's usage lines are the contract: each command with exactly the flags it takes."""
  for command in cli.COMMANDS:
    usage = cli.command_usage(command)
    assert usage.lstrip().startswith(f"jaxcomp {command}"), command
    assert {f.split(".")[0] for f in _flags_in(usage)} == set(cli.COMMAND_FLAGS[command]), command


def _readme_commands():
  """(command, line) for every `jaxcomp ...` command in README.md's code blocks, continuation lines joined."""
  out, inside, pending = [], False, ""
  for line in (REPO / "README.md").read_text().splitlines():
    if line.startswith("```"):
      inside, pending = not inside, ""
      continue
    if not inside:
      continue
    line = pending + line
    if line.rstrip().endswith("\\"):
      pending = line.rstrip()[:-1] + " "
      continue
    pending = ""
    for part in line.split("&&"):  # the quick start chains commands
      if part.strip().startswith("jaxcomp "):
        out.append((part.split()[1], part.strip()))
  return out


def test_readme_usage_agrees_with_help(capsys):
  found = _readme_commands()
  assert {c for c, _ in found} >= {"train", "eval", "rd", "compress", "decompress", "list"}, found
  for command, line in found:
    assert command in cli.COMMANDS, line
    out = _help(capsys, [command, "--help"])
    for flag in _flags_in(line):
      wanted = "config.key=value" if flag.startswith("config.") else flag
      assert _mentions(out, wanted), f"README: {line!r}: {command} --help has no --{wanted}"


@pytest.mark.parametrize("argv, fragment", [
    (["list", "--out", "y"], "list does not take --out (flags of list: --configs_dir)"),
    (["list", "--workdir", "x"], "list does not take --workdir (flags of list: --configs_dir)"),
    (["list", "--config.steps=3"], "list does not take --config.steps"),
    (["eval", "--workdir", "x", "--dataset", "sample", "--out", "y"], "eval does not take --out"),
    (["eval", "--workdir", "x", "--dataset", "sample", "--baselines", "webp"], "eval does not take --baselines"),
    (["eval", "--workdir", "x", "--dataset", "sample", "--anchor", "a"], "eval does not take --anchor"),
    (["train", "--workdir", "x", "--data", "d"], "train does not take --data (flags of train: --config, --workdir)"),
    (["compress", "--workdir", "x", "--max_images", "1", "a", "b"], "compress does not take --max_images"),
    (["decompress", "a", "b", "--workdir=x", "--configs_dir=c"], "decompress does not take --configs_dir"),
    (["rd", "--workdir", "x", "--step", "1"], "rd does not take --step: it uses each workdir's latest checkpoint"),
    (["eval", "--workdirs", "x"], "unknown flag --workdirs for eval (did you mean --workdir?"),
    (["eval", "--workdir", "x", "--step", "-1"], "--step=-1"),
    (["rd", "--workdir", "x", "--max_images=-2"], "--max_images=-2"),
])
def test_flags_of_other_commands_are_refused(capsys, tmp_path, argv, fragment):
  _one_error_line(capsys, argv, fragment)


def test_refusal_through_the_entry_point():
  proc = subprocess.run([sys.executable, "-m", "jaxcomp.cli", "list", "--out", "y"], capture_output=True, text=True,
                        cwd=REPO, timeout=120)
  assert proc.returncode == 2 and not proc.stdout
  assert proc.stderr.strip().splitlines() == ["jaxcomp: error: list does not take --out (flags of list: --configs_dir)"]


def test_list_aligns_long_targets(capsys, tmp_path):
  long_name = "a_config_file_whose_name_is_well_past_forty_characters.py"
  (tmp_path / long_name).write_text('VARIANTS = {"v": "first", "a_long_variant": "second"}\n'
                                    'def get_config(arg=None):\n  return None\n')
  (tmp_path / "b.py").write_text('"""Short."""\ndef get_config(arg=None):\n  return None\n')
  assert cli.main(["list", "--configs_dir", str(tmp_path)]) == 0
  lines = capsys.readouterr().out.splitlines()
  configs = lines[lines.index(next(ln for ln in lines if ln.startswith("configs ("))) + 1:]
  columns = {ln.index(word) for ln in configs for word in ("first", "second", "Short.") if word in ln}
  assert len(configs) == 3 and len(columns) == 1, configs
  methods_part = lines[1:lines.index(next(ln for ln in lines if ln.startswith("configs (")))]
  assert len({re.match(r"  \S+ +", ln).end() for ln in methods_part}) == 1, methods_part


class _Codec:
  def __init__(self, decoded):
    self.decoded = decoded

  def compress(self, image):
    return b"bits"

  def decompress(self, data):
    return self.decoded


@pytest.fixture
def fake_codec(monkeypatch):
  """`_codec_at` returning a stand-in codec, for the output paths of compress / decompress."""
  holder = {"decoded": np.zeros((4, 6, 3), np.uint8)}
  monkeypatch.setattr(cli, "_codec_at", lambda workdir, step: ({}, _Codec(holder["decoded"])))
  return holder


def test_decompress_of_a_bad_array_is_one_line(capsys, tmp_path, fake_codec):
  (tmp_path / "x.jxc").write_bytes(b"bits")
  fake_codec["decoded"] = np.zeros((4, 6, 3), np.float32)
  _one_error_line(capsys, ["decompress", "--workdir", str(tmp_path), str(tmp_path / "x.jxc"), str(tmp_path / "o.png")],
                  "the codec decoded a float32 array of shape (4, 6, 3), expected uint8 [H, W, 1|3]")
  assert not (tmp_path / "o.png").exists()


def test_unwritable_outputs_are_one_line(capsys, tmp_path, fake_codec):
  (tmp_path / "x.jxc").write_bytes(b"bits")
  Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "in.png")
  (tmp_path / "folder.png").mkdir()
  wd = ["--workdir", str(tmp_path)]
  _one_error_line(capsys, ["decompress", *wd, str(tmp_path / "x.jxc"), str(tmp_path / "o.psd")],
                  "Pillow cannot write PSD")
  _one_error_line(capsys, ["decompress", *wd, str(tmp_path / "x.jxc"), str(tmp_path / "folder.png")],
                  "folder.png is a folder")  # refused before decoding
  _one_error_line(capsys, ["compress", *wd, str(tmp_path / "in.png"), str(tmp_path / "x.jxc" / "y.jxc")],
                  "output folder", "x.jxc is a file")
  assert cli.main(["decompress", *wd, str(tmp_path / "x.jxc"), str(tmp_path / "o.png")]) == 0
  assert np.asarray(Image.open(tmp_path / "o.png")).shape == (4, 6, 3)


def test_file_in_place_of_a_folder(capsys, tmp_path):
  (tmp_path / "f").write_text("")
  _one_error_line(capsys, ["eval", "--workdir", str(tmp_path / "f"), "--dataset", "sample"], "is a file, not a folder")
  _one_error_line(capsys, ["rd", "--workdir", str(tmp_path), "--dataset", "sample", "--out", str(tmp_path / "f")],
                  "--out", "is a file, not a folder")

"""CLI error paths: each is one line `jaxcomp: error: ...` on stderr and exit code 2, with nothing left behind."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcomp import cli, methods, train
from jaxcomp.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
TOY_DIR = REPO / "tests" / "toy"
CONFIG = str(TOY_DIR / "config.py")


@pytest.fixture(autouse=True)
def _toy_importable(monkeypatch):
  monkeypatch.syspath_prepend(str(REPO))


pytestmark = pytest.mark.usefixtures("fast_compile")  # tiny programs: compile without XLA optimisations


def _error(capsys, argv, *fragments):
  """Runs the CLI in-process; asserts exit 2 and a one-line error holding every fragment."""
  rc = cli.main(argv)
  err = capsys.readouterr().err.strip()
  assert rc == 2, err
  lines = [ln for ln in err.splitlines() if ln.startswith("jaxcomp: error: ")]
  assert len(lines) == 1, err
  for f in fragments:
    assert f in lines[0], lines[0]
  return lines[0]


def _toy_checkpoint(workdir, method="toy", width=4):
  """A real toy checkpoint written without training (initial state), for the paths that need one."""
  from tests.toy import config as toy_config, method as toy_method
  config = toy_config.get_config("tiny")
  with config.unlocked():
    config.method, config.width = method, width
  with train.Checkpointer(workdir, config, every=1) as ck:
    ck.save(1, toy_method._init_host_state(config), force=True)


@pytest.fixture(scope="module")
def toy_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("toy")
  sys.path.insert(0, str(REPO))
  try:
    _toy_checkpoint(workdir)
  finally:
    sys.path.remove(str(REPO))
  return workdir


def test_unknown_command(capsys):
  _error(capsys, ["fly"], "unknown command 'fly'", "train")


def test_help_and_no_command(capsys):
  assert cli.main(["--help"]) == 0
  assert "jaxcomp train --config" in capsys.readouterr().out
  assert cli.main([]) == 2


def test_unknown_method(capsys, tmp_path):
  _error(capsys, ["train", "--config", CONFIG, "--workdir", str(tmp_path), "--config.method=nosuch"],
         "unknown method 'nosuch'", "proxiqa")
  _error(capsys, ["train", "--config", CONFIG, "--workdir", str(tmp_path), "--config.method=tests.toy.nope"],
         "unknown method 'tests.toy.nope'")
  assert not any(tmp_path.iterdir())


def test_registered_method_without_module(capsys, tmp_path, monkeypatch):
  monkeypatch.setitem(methods.METHODS, "ghost", "jaxcomp.methods.ghost.train")
  _error(capsys, ["train", "--config", CONFIG, "--workdir", str(tmp_path), "--config.method=ghost"],
         "method 'ghost' is registered but its module jaxcomp.methods.ghost.train is not available")


def test_method_module_lacking_entry_points(monkeypatch):
  monkeypatch.setitem(methods._REGISTERED, "toyconfig", "tests.toy.config")
  with pytest.raises(ConfigError, match="does not define train_and_evaluate, build_codec or evaluate"):
    methods.get_method("toyconfig")


def test_unknown_variant(capsys, tmp_path):
  _error(capsys, ["train", "--config", f"{CONFIG}:huge", "--workdir", str(tmp_path)],
         "unknown variant 'huge'", "known: default, tiny")


def test_unknown_config_key(capsys, tmp_path):
  _error(capsys, ["train", "--config", CONFIG, "--workdir", str(tmp_path), "--config.stepz=3"],
         "unknown config key 'stepz' (did you mean 'steps'?)")


@pytest.mark.parametrize("override", ["--config.steps=abc", "--config.steps=1.5", "--config.learning_rate=fast"])
def test_value_of_wrong_type(capsys, tmp_path, override):
  _error(capsys, ["train", "--config", CONFIG, "--workdir", str(tmp_path), override], override)


def test_missing_config_file_flag_and_workdir(capsys, tmp_path):
  _error(capsys, ["train", "--config", str(tmp_path / "none.py"), "--workdir", str(tmp_path)],
         "config file", "none.py not found")
  _error(capsys, ["train", "--workdir", str(tmp_path)], "--config is required")
  _error(capsys, ["train", "--config", CONFIG], "--workdir is required")
  _error(capsys, ["train", "--config", CONFIG, "--workdir", str(tmp_path), "--bogus=1"], "unknown flag --bogus")


def test_workdir_of_another_method(capsys, tmp_path):
  _toy_checkpoint(tmp_path, method="tests.toy.other")
  _error(capsys, ["train", "--config", CONFIG, "--workdir", str(tmp_path)],
         "holds a checkpoint of method 'tests.toy.other', not 'toy'")


def test_workdir_of_another_config_shape(capsys, toy_workdir, tmp_path):
  import shutil
  workdir = tmp_path / "w"
  shutil.copytree(toy_workdir, workdir)
  before = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  _error(capsys, ["train", "--config", f"{CONFIG}:tiny", "--workdir", str(workdir), "--config.width=6"],
         "'params/bn/bias' is (4,) float32 in the checkpoint but (6,) float32")
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == before


def test_eval_errors(capsys, toy_workdir, tmp_path):
  _error(capsys, ["eval", "--workdir", str(toy_workdir), "--data", str(tmp_path / "nowhere")],
         "data folder", "nowhere not found")
  _error(capsys, ["eval", "--workdir", str(toy_workdir)], "exactly one of --data FOLDER or --dataset NAME")
  _error(capsys, ["eval", "--workdir", str(tmp_path), "--dataset", "sample"], "no checkpoint in workdir")
  _error(capsys, ["eval", "--workdir", str(tmp_path / "absent"), "--dataset", "sample"], "absent does not exist")
  _error(capsys, ["eval", "--workdir", str(toy_workdir), "--dataset", "imagenet9"], "'imagenet9': neither an existing folder nor a known tfds dataset name")


def test_eval_from_initial_checkpoint(capsys, toy_workdir):
  assert cli.main(["eval", "--workdir", str(toy_workdir), "--dataset", "sample", "--max_images", "2"]) == 0
  out = capsys.readouterr().out
  saved = json.loads((toy_workdir / "eval" / "sample.json").read_text())
  assert (saved["num_images"], saved["total_images"]) == (2, 12)
  assert "scored 2 of 12 images" in out  # said whenever fewer images are scored than the data holds
  assert [ln.split()[0] for ln in out.splitlines() if ln.split() and ln.split()[0] in saved["images"][0]["name"]]


# ----------------------------------------------------------------------------------------------------------------
# eval / rd of a real codec method (ProxIQA's tiny variant), from initial-state checkpoints: no training needed.


def _proxiqa_checkpoint(workdir, lmbda):
  from jaxcomp.methods.proxiqa import codec as pq_codec, train as pq
  config = cli._load_config_module(REPO / "configs" / "proxiqa.py").get_config("tiny")
  with config.unlocked():
    config.lmbda = lmbda
  host = pq.init_state(config)
  with train.Checkpointer(workdir, config, every=1) as ck:
    ck.save(1, dict(host, tables=pq_codec.coding_tables(config, host["codec"].params)), force=True)


@pytest.fixture(scope="module")
def proxiqa_workdirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("proxiqa")
  for name, lmbda in (("lo", 0.01), ("hi", 0.1)):
    _proxiqa_checkpoint(root / name, lmbda)
  images = root / "images"
  images.mkdir()
  rng = np.random.default_rng(0)
  for i in range(2):  # smooth 48x40 images: tiny, and not a multiple of the model's stride
    grid = rng.integers(0, 256, size=(6, 5, 3))
    Image.fromarray(np.kron(grid, np.ones((8, 8, 1))).astype(np.uint8)).save(images / f"im{i}.png")
  return root


def test_eval_prints_a_table_and_writes_json(capsys, proxiqa_workdirs):
  wd = proxiqa_workdirs / "lo"
  assert cli.main(["eval", "--workdir", str(wd), "--data", str(proxiqa_workdirs / "images"), "--max_images", "2"]) == 0
  out = capsys.readouterr().out.splitlines()
  header = next(ln for ln in out if ln.startswith("image ")).split()
  for col in ("bpp", "est", "gap", "PSNR", "PSNR-YUV", "SSIM", "MS-SSIM", "enc", "dec", "JPEG"):
    assert col in header, header
  res = json.loads((wd / "eval" / "images.json").read_text())
  assert res["num_images"] == 2 and sorted(r["name"] for r in res["images"]) == ["im0.png", "im1.png"]
  mean = next(ln for ln in out if ln.startswith("mean")).split()
  assert float(mean[1]) == pytest.approx(res["bpp"], abs=1e-4)
  for r in res["images"]:
    assert r["bpp"] == pytest.approx(8 * r["bytes"] / (48 * 40))
    assert r["estimated_bpp"] > 0 and r["rate_gap"] == pytest.approx((8 * r["bytes"] - r["estimated_bits"])
                                                                     / r["estimated_bits"])
    assert r["ms_ssim"] is None and r["jpeg"]["bytes"] > 0 and r["encode_s"] > 0
  assert res["bpp"] == pytest.approx(np.mean([r["bpp"] for r in res["images"]]))
  assert "vmaf" not in res["images"][0] or res["images"][0]["vmaf"] is not None
  assert not [p for p in (wd / "eval").iterdir() if p.name.startswith(".")]  # atomic write left no temp file


def test_rd_writes_curves_tables_and_plots(capsys, proxiqa_workdirs, tmp_path):
  out_dir = tmp_path / "rd"
  argv = ["rd", "--workdir", str(proxiqa_workdirs / "lo"), "--workdir", str(proxiqa_workdirs / "hi"), "--data",
          str(proxiqa_workdirs / "images"), "--out", str(out_dir), "--baselines", "jpeg420"]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "BD against 'proxiqa tiny'" in out and "| jpeg420 |" in out
  curve = json.loads((out_dir / "proxiqa_tiny.json").read_text())  # CompressAI's results layout
  assert curve["name"] == "proxiqa tiny" and sorted(curve["params"]) == [0.01, 0.1]
  assert len(curve["results"]["bpp"]) == 2 and len(curve["results"]["psnr-rgb"]) == 2
  for name in ("rd_points.csv", "rd_per_image.csv", "bd_rate.csv", "bd_rate.md", "rd_psnr-rgb.png",
               "rd_ssim-rgb.png", "jpeg420.json"):
    assert (out_dir / name).exists(), name
  rows = (out_dir / "rd_points.csv").read_text().splitlines()
  assert rows[0].startswith("name,param,bpp") and sum(r.startswith("proxiqa tiny,") for r in rows) == 2


def test_rd_caches_points_in_the_workdir_and_writes_every_bd_method(capsys, proxiqa_workdirs, tmp_path, monkeypatch):
  """Each point is measured once (WORKDIR/eval/rd_<data>.json) and reused, unless --refresh; --label renames a
  curve; --bd pchip,cubic writes both BD tables; estimate_vs_file compares the entropy model with the files."""
  import shutil
  from jaxcomp.methods import proxiqa as pq_method  # the registry builds codecs through the package
  lo, hi = tmp_path / "lo", tmp_path / "hi"
  shutil.copytree(proxiqa_workdirs / "lo", lo)
  shutil.copytree(proxiqa_workdirs / "hi", hi)
  images = str(proxiqa_workdirs / "images")
  argv = ["rd", "--workdir", str(lo), "--workdir", str(hi), "--data", images, "--baselines", "",
          "--label", "proxiqa tiny=BLS tiny", "--bd", "pchip,cubic"]
  assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
  caches = sorted((lo / "eval").glob("rd_*.json"))
  assert len(caches) == 1 and len(json.loads(caches[0].read_text())["records"]) == 2
  for name in ("BLS_tiny.json", "bd_rate.md", "bd_rate_cubic.md", "estimate_vs_file.md"):
    assert (tmp_path / "a" / name).exists(), name
  est = (tmp_path / "a" / "estimate_vs_file.csv").read_text().splitlines()
  assert est[0].startswith("name,param,images,estimate_bpp") and len(est) == 3
  with monkeypatch.context() as mp:  # the second call codes nothing: both points come from the caches
    mp.setattr(pq_method, "build_codec", lambda *a: pytest.fail("a cached point was coded again"))
    assert cli.main([*argv, "--out", str(tmp_path / "b")]) == 0
  assert (tmp_path / "a" / "rd_points.csv").read_text() == (tmp_path / "b" / "rd_points.csv").read_text()
  calls = []
  real = pq_method.build_codec
  monkeypatch.setattr(pq_method, "build_codec", lambda *a: calls.append(1) or real(*a))
  assert cli.main([*argv, "--out", str(tmp_path / "c"), "--refresh"]) == 0
  assert len(calls) == 2
  capsys.readouterr()
  _error(capsys, [*argv[:-4], "--label", "proxiqa huge=X", "--out", str(tmp_path / "d")],
         "label 'proxiqa huge' names no curve of these workdirs")


def test_rd_and_multi_workdir_errors(capsys, proxiqa_workdirs, tmp_path):
  lo, hi, images = (str(proxiqa_workdirs / n) for n in ("lo", "hi", "images"))
  _error(capsys, ["eval", "--workdir", lo, "--workdir", hi, "--data", images],
         "--workdir is given 2 times; only `jaxcomp rd` takes several")
  _error(capsys, ["rd", "--workdir", lo, "--data", images], "rd needs --out OUTDIR")
  _error(capsys, ["rd", "--workdir", lo, "--workdir", lo, "--data", images, "--out", str(tmp_path / "o"),
                  "--baselines", ""], "same point (0.01) of curve 'proxiqa tiny'")
  _error(capsys, ["rd", "--workdir", lo, "--data", images, "--out", str(tmp_path / "o"), "--baselines", "gif"],
         "codec='gif': unknown baseline")
  _error(capsys, ["rd", "--workdir", lo, "--data", images, "--out", str(tmp_path / "o"), "--step", "1"],
         "rd does not take --step: it uses each workdir's latest checkpoint")
  assert not (tmp_path / "o").exists()


def test_compress_errors_leave_no_output(capsys, toy_workdir, tmp_path):
  out = tmp_path / "x.jxc"
  _error(capsys, ["compress", "--workdir", str(toy_workdir), str(tmp_path / "missing.png"), str(out)],
         "input image", "missing.png not found")
  (tmp_path / "broken.png").write_bytes(b"not a png")
  _error(capsys, ["compress", "--workdir", str(toy_workdir), str(tmp_path / "broken.png"), str(out)], "broken.png")
  _error(capsys, ["compress", "--workdir", str(toy_workdir), str(tmp_path / "broken.png")],
         "takes an input and an output path")
  Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "ok.png")
  _error(capsys, ["compress", "--workdir", str(tmp_path / "none"), str(tmp_path / "ok.png"), str(out)],
         "does not exist")
  _error(capsys, ["decompress", "--workdir", str(toy_workdir), str(tmp_path / "ok.png"), str(tmp_path / "o.xyz")],
         "unknown image extension '.xyz'")
  assert not out.exists() and not (tmp_path / "o.xyz").exists()
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_list_shows_methods_and_variants(capsys):
  assert cli.main(["list", "--configs_dir", str(TOY_DIR)]) == 0
  out = capsys.readouterr().out
  for name in methods.METHODS:
    assert f"  {name} " in out
  assert "config.py:tiny" in out and "same model, 4 steps" in out
  assert "method.py" not in out  # a file without get_config is reported, not listed as a config
  _error(capsys, ["list", "--configs_dir", str(REPO / "nowhere")], "configs folder", "not found")


def test_list_config_without_variants(capsys, tmp_path):
  (tmp_path / "plain.py").write_text('"""A plain config."""\ndef get_config(arg=None):\n  return None\n')
  (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
  assert cli.main(["list", "--configs_dir", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "plain.py " in out and "A plain config." in out
  assert "broken.py: config file" in out and "RuntimeError: boom" in out


def test_module_entry_point_exit_code(tmp_path):
  """`python -m jaxcomp.cli` (the same entry point as the `jaxcomp` script) exits 2 on a user error."""
  proc = subprocess.run([sys.executable, "-m", "jaxcomp.cli", "train", "--config", f"{CONFIG}:huge", "--workdir",
                         str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("jaxcomp: error: unknown variant 'huge'")


def test_compress_and_decompress_never_destroy_their_input(capsys, toy_workdir, tmp_path):
  """Output = input (also through a symbolic link), an existing folder, a missing or unwritable output folder: one
  line, exit 2, before any coding; the input is untouched and nothing is written."""
  image = tmp_path / "photo.png"
  Image.fromarray(np.full((16, 16, 3), 77, np.uint8)).save(image)
  before = image.read_bytes()
  (tmp_path / "link.png").symlink_to(image)
  (tmp_path / "folder").mkdir()
  for command in ("compress", "decompress"):
    base = [command, "--workdir", str(toy_workdir), str(image)]
    _error(capsys, [*base, str(image)], f"{command}: output {image} is the input")
    _error(capsys, [*base, str(tmp_path / "link.png")], "is the input")
    _error(capsys, [*base, str(tmp_path / "folder")], "is a folder; give a file name")
    _error(capsys, [*base, str(tmp_path / "nowhere" / "x.png")], "does not exist")
  assert image.read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "link.png", "photo.png"]
  assert not any((tmp_path / "folder").iterdir())


def test_a_workdir_cannot_make_jaxcomp_import_a_module(capsys, tmp_path, monkeypatch):
  """A checkpoint whose saved config names a module path as its method: refused in one line before any import
  (before, `jaxcomp eval` imported it, running its code)."""
  pkg = tmp_path / "evilpkg"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "payload.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  _toy_checkpoint(tmp_path / "wd", method="evilpkg.payload")
  for argv in (["eval", "--workdir", str(tmp_path / "wd"), "--dataset", "sample"],
               ["compress", "--workdir", str(tmp_path / "wd"), str(tmp_path / "a.png"), str(tmp_path / "a.jxc")],
               ["rd", "--workdir", str(tmp_path / "wd"), "--dataset", "sample", "--out", str(tmp_path / "o")]):
    if argv[0] == "compress":
      Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    _error(capsys, argv, "unknown method 'evilpkg.payload'")
  assert not (tmp_path / "ran").exists()


def test_methods_registered_by_the_environment(monkeypatch):
  monkeypatch.setenv("JAXCOMP_METHODS", "toy=tests.toy.method,mine=tests.toy.method")
  assert methods.module_name("mine") == "tests.toy.method"
  monkeypatch.setenv("JAXCOMP_METHODS", "broken")
  with pytest.raises(ConfigError, match="expected name=package.module"):
    methods.module_name("mine")

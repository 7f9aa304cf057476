"""The shared config keys: defined once (`jaxcomp.train.config.SHARED`), carried under the same names by every
method's config (every variant), listed in docs/training.md, refused by the loop before any workdir exists."""

import importlib.util
import pathlib
import re

import ml_collections
import pytest

from jaxcomp import train
from jaxcomp.errors import ConfigError
from jaxcomp.train.config import SHARED, add_shared
from jaxcomp.train.loop import Task, check_loop_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.py") if not p.name.startswith("_"))


def _module(path):
  spec = importlib.util.spec_from_file_location(f"_shared_{path.stem}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_variant_carries_the_shared_keys(path):
  mod = _module(path)
  for variant in mod.VARIANTS:
    c = mod.get_config(variant)
    missing = [k for k in SHARED if k not in c]
    assert not missing, (path.name, variant, missing)
    for k, (default, _) in SHARED.items():  # same type as the shared default: one flag, one meaning
      assert type(c[k]) is type(default), (path.name, variant, k, type(c[k]))
    # the drifted names are gone
    assert not {"crop_size", "max_eval_images", "eval_every_epochs", "patch"} & set(c.keys()), (path.name, variant)


def test_docs_table_lists_every_shared_key():
  text = (ROOT / "docs" / "training.md").read_text()
  listed = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
  assert set(SHARED) <= listed, set(SHARED) - listed


def test_add_shared_refuses_unknown_keys():
  with pytest.raises(ConfigError, match="not shared config keys: crop_size"):
    add_shared(ml_collections.ConfigDict(), crop_size=3)


class _Task(Task):
  total_steps = 4
  metric_names = frozenset({"loss"})


def _config(**kw):
  c = add_shared(ml_collections.ConfigDict({"method": "toy"}), global_batch_size=8, steps=4, log_every=1,
                 checkpoint_every=2)
  c.update(kw)
  return c


@pytest.mark.parametrize("override, message", [
    ({"best_mode": "biggest"}, "config.best_mode='biggest' must be 'min' or 'max'"),
    ({"best_metric": "los"}, "config.best_metric='los' is not a metric of method 'toy' (one of: learning_rate, loss)"),
    ({"global_batch_size": 12}, "config.global_batch_size=12 must be a positive multiple of the 8 devices"),
    ({"checkpoint_every": 0}, "config.checkpoint_every=0 must be positive"),
    ({"log_every": -1}, "config.log_every=-1 must be positive"),
    ({"eval_every": -5}, "config.eval_every=-5 must be >= 0"),
    ({"learning_rate": float("nan")}, "config.learning_rate=nan is not a finite number"),
    ({"learning_rate": 0.0}, "config.learning_rate=0.0 must be positive"),
    ({"nested": {"alpha": float("inf")}}, "config.nested.alpha=inf is not a finite number"),
])
def test_loop_refuses_config_mistakes_before_the_workdir_exists(tmp_path, override, message):
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match=re.escape(message)):
    train.run(_config(**override), workdir, _Task())
  assert not workdir.exists()


def test_zero_steps_is_refused():
  task = _Task()
  task.total_steps = 0
  with pytest.raises(ConfigError, match="training steps; it must be positive"):
    check_loop_config(_config(steps=0), task)


def test_saved_configs_with_the_old_names_still_load():
  from jaxcomp.train.restore import upgrade_config
  assert upgrade_config({"crop_size": 64, "max_eval_images": 2, "seed": 1}) == \
      {"patch_size": 64, "eval_max_images": 2, "seed": 1}
  assert upgrade_config({"patch": 8}) == {"patch_size": 8}

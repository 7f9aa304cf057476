"""configs/proxiqa.py: every variant builds, is locked, and carries the paper's values."""

import importlib.util
import pathlib

import ml_collections
import pytest

CONFIG_PATH = pathlib.Path(__file__).resolve().parents[3] / "configs" / "proxiqa.py"


def load_config_module():
  spec = importlib.util.spec_from_file_location("proxiqa_config", CONFIG_PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


cfg = load_config_module()


@pytest.mark.parametrize("variant", list(cfg.VARIANTS))
def test_every_variant_builds_locked(variant):
  c = cfg.get_config(variant)
  assert isinstance(c, ml_collections.ConfigDict) and c.is_locked
  assert c.method == "proxiqa"
  with pytest.raises(AttributeError):
    c.no_such_key = 1
  assert c.metric in ("", "ssim", "ms_ssim", "vmaf")
  assert (c.alpha == 0) == (c.metric == "")


def test_paper_values():
  c = cfg.get_config("bls_vmaf_p")
  assert (c.alpha, c.m_max, c.metric) == (1.5e-3, 1.0, "vmaf")  # M = VMAF / 100
  for v in ("bls_ssim_p", "bmshj_msssim_p"):
    assert cfg.get_config(v).alpha == 3e-3 and cfg.get_config(v).m_max == 1.0
  c = cfg.get_config(None)
  assert c.variant == "bls_msssim_p"
  assert (c.learning_rate, c.lr_after, c.lr_boundary, c.steps) == (1e-4, 1e-5, 2_000_000, 2_100_000)
  assert (c.global_batch_size, c.patch_size, c.N, c.M, c.layout) == (8, 128, 192, 192, "bls2017")
  assert cfg.get_config("bmshj_mse").layout == "bmshj2018"
  assert len(cfg.LAMBDAS) == 8 and list(cfg.LAMBDAS) == sorted(cfg.LAMBDAS)
  c.lmbda = cfg.LAMBDAS[0]  # selectable, as --config.lmbda= does


def test_unknown_variant():
  with pytest.raises(ValueError, match="nope"):
    cfg.get_config("nope")

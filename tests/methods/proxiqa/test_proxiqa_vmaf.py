"""VMAF_p: the host-computed VMAF reaches the proxy step (VMAF itself: tests/metrics/test_metrics_vmaf.py)."""
import importlib.util
import pathlib

import numpy as np
import pytest
from skimage import data as skdata

from jaxcomp import parallel, train
from jaxcomp.methods.proxiqa import train as pq

_spec = importlib.util.spec_from_file_location(
    "proxiqa_config", pathlib.Path(__file__).resolve().parents[3] / "configs" / "proxiqa.py")
cfg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cfg)

pytestmark = [pytest.mark.usefixtures("fast_compile"),
              pytest.mark.skipif(not pq.vmaf_available(), reason=f"no ffmpeg with libvmaf: {pq.VMAF_HINT}")]


def _crops(n=4, side=64):
  img = skdata.astronaut().astype(np.float32) / 255.0
  return np.stack([img[40 * i:40 * i + side, 60 * i:60 * i + side] for i in range(n)])


def test_vmaf_p_step_feeds_host_scores_to_the_proxy(monkeypatch):
  calls = []

  def recording(x, x_hat):
    calls.append((x, x_hat, real(x, x_hat)))
    return calls[-1][2]

  real = pq.vmaf_scores
  monkeypatch.setattr(pq, "vmaf_scores", recording)
  c = cfg.get_config("tiny")
  c.metric, c.alpha, c.m_max = cfg.LOSSES["vmaf_p"]
  trainer = pq.Trainer(c)
  states = parallel.replicate(pq.init_state(c), c.parallel)
  images = (_crops(8, 32) * 255).astype(np.uint8)
  states, terms = trainer.step(states, parallel.shard(images.reshape(8, 1, 32, 32, 3), c.parallel))
  s = train.to_host_scalars(terms)
  (x, x_hat, scores), = calls
  np.testing.assert_allclose(x, images / 255.0, atol=1e-6)  # the source crops, on [0, 1]
  assert x_hat.shape == (8, 32, 32, 3) and np.abs(x_hat - x).max() > 0.01  # the codec's reconstructions
  # an untrained codec: poor but valid VMAF scores; they reach the proxy step as M = VMAF / 100 (M_max = 1)
  assert np.all((scores >= 0) & (scores < 90)), scores
  np.testing.assert_allclose(s["metric"], float(np.mean(scores)) / 100.0, rtol=1e-5)
  assert np.isfinite(s["proxy_fit_loss"]) and s["proxy_fit_loss"] > 0

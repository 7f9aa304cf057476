"""Config of the toy method (tests only): a two-layer conv autoencoder trained through the real harness."""

import ml_collections

VARIANTS = {
    "default": "toy conv autoencoder, 16x16 synthetic images, 8 steps",
    "tiny": "same model, 4 steps, checkpoint every 2",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.method = "toy"  # registered by tests/conftest.py (JAXCOMP_METHODS=toy=tests.toy.method)
  config.seed = 0
  config.parallel = "pmap"
  config.steps = 8
  config.global_batch_size = 8
  config.image_size = 16
  config.width = 4
  config.learning_rate = 1e-2
  config.optimizer = "adam"  # or "sgd" (momentum 0.9): Adam turns float-rounding-sized gradients into lr-sized steps
  config.lambda_latent = 0.01
  config.log_every = 1
  config.checkpoint_every = 4
  config.keep_checkpoints = 3
  config.best_metric = "loss"
  config.best_mode = "min"
  config.grayscale = False
  # Test hooks: a host sleep per step (to deliver signals mid-run), and a step whose loss is made NaN (0 = never).
  config.sleep_per_step = 0.0
  config.nan_at_step = 0
  if arg == "tiny":
    config.steps = 4
    config.checkpoint_every = 2
  elif arg not in (None, "", "default"):
    raise ValueError(f"unknown variant {arg!r}")
  config.lock()
  return config

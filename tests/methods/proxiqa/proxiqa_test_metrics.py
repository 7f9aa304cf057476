"""A deliberately non-differentiable host metric for the ProxIQA loop tests (imported by `config.metric`)."""

import numpy as np

CALLS = []


def quantized_error(x_BHW3: np.ndarray, x_hat_BHW3: np.ndarray) -> np.ndarray:
  """Mean absolute error rounded to 0.05 steps (zero gradient almost everywhere), computed in numpy."""
  assert isinstance(x_BHW3, np.ndarray) and isinstance(x_hat_BHW3, np.ndarray)  # host values, not tracers
  CALLS.append(x_BHW3.shape)
  err = np.abs(x_BHW3.astype(np.float64) - x_hat_BHW3).mean(axis=(1, 2, 3))
  return (np.round(err / 0.05) * 0.05).astype(np.float32)

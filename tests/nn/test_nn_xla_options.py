"""cpu_compiler_options / configure_xla_flags: accepted by this jaxlib, keep convolutions out of YNNPACK, opt-out."""

import os

import jax
import numpy as np
from jax import lax

from jaxcomp.nn import xla_options


def _conv(x, k):
  return lax.conv_general_dilated(x, k, (2, 2), ((2, 2), (2, 2)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_options_compile_move_convolutions_off_ynnpack_and_keep_results():
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 4))
  k = jax.random.normal(jax.random.key(1), (5, 5, 4, 4))
  opts = xla_options.cpu_compiler_options()
  assert opts == xla_options.CPU_COMPILER_OPTIONS  # tests run on the CPU backend
  lowered = jax.jit(_conv).lower(x, k)
  tuned = lowered.compile(compiler_options=opts)
  conv_lines = [l for l in tuned.as_text().splitlines() if "convolution(" in l]
  assert conv_lines and not any("ynn" in l for l in conv_lines)
  np.testing.assert_allclose(tuned(x, k), lowered.compile()(x, k), rtol=1e-5, atol=1e-5)


def test_opt_out_and_flag_configuration(monkeypatch):
  monkeypatch.setenv(xla_options.OPT_OUT, "0")
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  assert xla_options.cpu_compiler_options() == {}
  assert not xla_options.configure_xla_flags()
  monkeypatch.delenv(xla_options.OPT_OUT)
  assert xla_options.configure_xla_flags() and xla_options.configure_xla_flags()
  assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false " + xla_options.XLA_FLAGS_CPU  # added once
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT")
  assert not xla_options.configure_xla_flags()  # the user's own choice for the option is kept

"""XLA:CPU compiler options for the convolution-heavy training steps (measured in `benchmarks/train_step.py`).

jaxlib 0.10.2 hands convolutions on CPU to YNNPACK fusions by default. On the 2-core development machines the
Eigen convolutions it uses otherwise were faster for the Ballé transforms (about 20% on the whole BLS step, 2x on
the 128-channel 5x5 stride-2 layers); dots and reductions stay with YNNPACK. Numerics are those of another float32
convolution kernel (differences at the 1e-6 level), the function computed is the same.

Two ways to apply them, both opt-in per call site:
- per jitted function: `jax.jit(f, compiler_options=cpu_compiler_options())` (an empty dict on other backends or
  when the environment sets `JAXCOMP_XLA_CPU_DEFAULTS=0`);
- process-wide: `configure_xla_flags()` before JAX initialises its backend (first computation) appends
  `XLA_FLAGS_CPU` to the `XLA_FLAGS` environment variable (the same opt-out applies).
"""

from __future__ import annotations

import os

import jax

_TYPES = "LIBRARY_FUSION_TYPE_"
# Library fusions kept with YNNPACK: dots (the GDN 1x1 mixing) and reductions; convolutions go to Eigen.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": f"{_TYPES}DOT,{_TYPES}REDUCE"}
XLA_FLAGS_CPU = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
OPT_OUT = "JAXCOMP_XLA_CPU_DEFAULTS"


def _enabled() -> bool:
  return os.environ.get(OPT_OUT, "1") != "0"


def cpu_compiler_options() -> dict[str, str]:
  """`compiler_options` for `jax.jit` on the CPU backend; {} elsewhere or when opted out."""
  if not _enabled() or jax.default_backend() != "cpu":
    return {}
  return dict(CPU_COMPILER_OPTIONS)


def configure_xla_flags() -> bool:
  """Appends `XLA_FLAGS_CPU` to `XLA_FLAGS` (once); returns whether it is now set. Only effective before the first
  JAX computation of the process; a flag the user already set for the same option is left alone."""
  if not _enabled():
    return False
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + XLA_FLAGS_CPU).strip()
  return XLA_FLAGS_CPU in os.environ["XLA_FLAGS"]

"""CAE-ADMM test settings.

On XLA:CPU, compiling a single `jax.random.normal` with the default `jax_threefry_partitionable=True` takes ~6 s
(measured here; ~1 s with False), and the model init draws ~40 kernels, so its compile alone took ~26 s. The
tests only need *some* random bits, not the partitionable ones, so each test module here runs with the flag off;
the context manager restores it afterwards, so other packages' tests are unaffected.
"""

import jax
import pytest


@pytest.fixture(scope="module", autouse=True)
def _fast_threefry_compile():
  with jax.threefry_partitionable(False):
    yield

"""Shared pytest set-up.

Eight fake CPU devices so pmap/shard_map code is exercised on any machine; the flag must be set before jax is
imported, which is why it lives here at the top of the root conftest. Tests that need another device count run in a
subprocess.
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The toy method of tests/toy, registered the way a user registers a method of their own (jaxcomp.methods):
# subprocesses inherit it. A workdir names methods, never modules.
os.environ.setdefault("JAXCOMP_METHODS", "toy=tests.toy.method")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
  parser.addoption(
      "--shared-dir",
      default=None,
      help="folder holding the project's shared material (data/kodak, data/photos-train); "
      "defaults to $JAXCOMP_SHARED or ../shared beside the repository",
  )


def _shared_dir(config) -> pathlib.Path | None:
  candidates = [config.getoption("--shared-dir"), os.environ.get("JAXCOMP_SHARED"), REPO_ROOT.parent / "shared"]
  for c in candidates:
    if c and (pathlib.Path(c) / "data").is_dir():
      return pathlib.Path(c)
  return None


@pytest.fixture(scope="session")
def shared_dir(request) -> pathlib.Path:
  """The shared folder; skips the test with a reason when it is absent (a user's machine has none)."""
  d = _shared_dir(request.config)
  if d is None:
    pytest.skip("needs ../shared/data (set --shared-dir or JAXCOMP_SHARED); absent on this machine")
  return d


@pytest.fixture(scope="session")
def kodak_dir(shared_dir) -> pathlib.Path:
  return shared_dir / "data" / "kodak"


@pytest.fixture(scope="session")
def photos_train_dir(shared_dir) -> pathlib.Path:
  return shared_dir / "data" / "photos-train"


@pytest.fixture(scope="module")
def fast_compile():
  """Compile without XLA optimisations for the module (restored after): tests of tiny programs run once or twice,
  where XLA:CPU's optimisation passes cost more than they save (../shared/notes/performance.md). Semantics are
  unchanged. Opt in per module: `pytestmark = pytest.mark.usefixtures("fast_compile")`."""
  import jax
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)

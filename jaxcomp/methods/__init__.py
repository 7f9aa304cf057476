"""Registry of methods: `config.method` -> the package of the method.

Every method has the same skeleton, `methods/<m>/{models.py, train.py, codec.py}`, and its package exposes
  train_and_evaluate(config, workdir) -> None     a `jaxcomp.train.Task` run by the one loop, `jaxcomp.train.run`
and one of
  build_codec(config, state) -> Codec             codecs: `compress(uint8 HWC) -> bytes`, `decompress(bytes)`
                                                  (+ optional `image_metrics(config, codec) -> {name: f(image)}`)
  evaluate(config, state, images, progress=) -> dict    other methods (the iterative decoder)
where `state` is what `jaxcomp.train.load_for_eval` returns and `images` are `(name, uint8 HWC)` pairs; both are
scored by the one evaluation, `jaxcomp.evaluation.evaluate_run`.

`config.method` must be a registered name: the built-in methods below, or one the user registers explicitly, by
an entry point in the `jaxcomp.methods` group of an installed package (`name = "package.module"`), by the
environment (`JAXCOMP_METHODS="name=package.module[,name2=...]"`, how the tests register their toy method), or by
`register(name, module)` in Python. A workdir only ever names a method: nothing it says is imported as a module
path, so a shared workdir cannot make jaxcomp run code of its choosing (an unknown name is refused before any
import).
"""

from __future__ import annotations

import importlib
import os
import types

from jaxcomp.errors import ConfigError

METHODS: dict[str, str] = {
    "proxiqa": "jaxcomp.methods.proxiqa",
    "cae_admm": "jaxcomp.methods.cae_admm",
    "rnn_decoder": "jaxcomp.methods.rnn_decoder",
    "rl_srgan": "jaxcomp.methods.rl_srgan",
}

ENV = "JAXCOMP_METHODS"
ENTRY_POINT_GROUP = "jaxcomp.methods"
_REGISTERED: dict[str, str] = {}

REQUIRED = ("train_and_evaluate",)
EVALUATION = ("build_codec", "evaluate")  # one of them


def register(name: str, module: str) -> None:
  """Registers a method of the user's: `config.method = name` then imports `module` (a package path)."""
  _REGISTERED[name] = module


def _from_env() -> dict[str, str]:
  out = {}
  for item in filter(None, (x.strip() for x in os.environ.get(ENV, "").split(","))):
    name, sep, module = item.partition("=")
    if not sep or not name.strip() or not module.strip():
      raise ConfigError(f"{ENV}={os.environ[ENV]!r}: expected name=package.module[,name2=...]")
    out[name.strip()] = module.strip()
  return out


def registry() -> dict[str, str]:
  """Every registered method: built-ins, `jaxcomp.methods` entry points, `JAXCOMP_METHODS`, `register` calls."""
  from importlib import metadata
  out = dict(METHODS)
  out.update({ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})
  out.update(_from_env())
  out.update(_REGISTERED)
  return out


def module_name(method: str) -> str:
  """The module of a registered method; a one-line ConfigError, before any import, for anything else."""
  known = registry()
  if method in known:
    return known[method]
  raise ConfigError(f"unknown method {method!r} (registered: {', '.join(sorted(known))}; register your own with "
                    f"an entry point in the {ENTRY_POINT_GROUP!r} group or {ENV}=name=package.module)")


def _missing(err: ModuleNotFoundError, name: str) -> bool:
  # True when the module itself (or a parent package) is absent, not a dependency it imports.
  return err.name is not None and (name == err.name or name.startswith(err.name + "."))


def get_method(method: str) -> types.ModuleType:
  """Imports the method's package and checks it exposes `train_and_evaluate` and `build_codec` or `evaluate`."""
  name = module_name(method)
  try:
    module = importlib.import_module(name)
  except ModuleNotFoundError as e:
    if not _missing(e, name):
      raise
    raise ConfigError(f"method {method!r} is registered but its module {name} is not available in this "
                      "installation") from None
  lacking = [f for f in REQUIRED if not callable(getattr(module, f, None))]
  if not any(callable(getattr(module, f, None)) for f in EVALUATION):
    lacking.append(" or ".join(EVALUATION))
  if lacking:
    raise ConfigError(f"method {method!r} ({name}) does not define {', '.join(lacking)}")
  return module


def available() -> dict[str, str | None]:
  """`{name: None if importable else the reason}` for every registered method (for `jaxcomp list`)."""
  out: dict[str, str | None] = {}
  for m in METHODS:
    try:
      get_method(m)
      out[m] = None
    except ConfigError as e:
      out[m] = str(e)
    except Exception as e:  # a method module that fails to import must not break `jaxcomp list`
      out[m] = f"{type(e).__name__}: {e}"
  return out

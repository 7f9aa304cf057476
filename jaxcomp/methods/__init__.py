"""Registry of methods: `config.method` -> the package of the method.

Every method has the same skeleton, `methods/<m>/{models.py, train.py, codec.py}`, and its package exposes
  train_and_evaluate(config, workdir) -> None     a `jaxcomp.train.Task` run by the one loop, `jaxcomp.train.run`
and one of
  build_codec(config, state) -> Codec             codecs: `compress(uint8 HWC) -> bytes`, `decompress(bytes)`
                                                  (+ optional `image_metrics(config, codec) -> {name: f(image)}`)
  evaluate(config, state, images, progress=) -> dict    other methods (the iterative decoder)
where `state` is what `jaxcomp.train.load_for_eval` returns and `images` are `(name, uint8 HWC)` pairs; both are
scored by the one evaluation, `jaxcomp.evaluation.evaluate_run`. `config.method` is a registered name below or a
dotted module path (tests use a toy method that way).
"""

from __future__ import annotations

import importlib
import types

from jaxcomp.errors import ConfigError

METHODS: dict[str, str] = {
    "proxiqa": "jaxcomp.methods.proxiqa",
    "cae_admm": "jaxcomp.methods.cae_admm",
    "rnn_decoder": "jaxcomp.methods.rnn_decoder",
    "rl_srgan": "jaxcomp.methods.rl_srgan",
}

REQUIRED = ("train_and_evaluate",)
EVALUATION = ("build_codec", "evaluate")  # one of them


def module_name(method: str) -> str:
  """The module path for a registered name or a dotted path; ConfigError for anything else."""
  if method in METHODS:
    return METHODS[method]
  if "." in method:
    return method
  raise ConfigError(f"unknown method {method!r} (registered: {', '.join(sorted(METHODS))}, or a dotted module path)")


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
    if method in METHODS:
      raise ConfigError(f"method {method!r} is registered but its module {name} is not available in this "
                        "installation") from None
    raise ConfigError(f"unknown method {method!r}: no module named {name}") from None
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

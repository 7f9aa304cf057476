"""Exceptions for bad input. The CLI prints them as one line (`jaxcomp: error: ...`) and exits with code 2."""


class JaxcompError(Exception):
  """Base of every user-facing error: the message names the culprit (file, key, value) in one line."""


class DataError(JaxcompError):
  """Unreadable or missing input data (image folder, image file, dataset name)."""


class ConfigError(JaxcompError):
  """Unknown method, variant or config key, or a value of the wrong type."""


class CheckpointError(JaxcompError):
  """Missing checkpoint, or one that belongs to another method or config shape."""


class BitstreamError(JaxcompError):
  """A compressed file that is truncated, corrupt, of a newer format, or made by a different model."""


class TrainingDiverged(JaxcompError):
  """A NaN or Inf loss: names the step and the loss term; the last good checkpoint is kept."""


def run_script(prog: str, fn, *args) -> int:
  """`fn(*args)` for a script's main: a `JaxcompError` (bad input) is printed as one line, `prog: error: ...`, as
  `jaxcomp` prints it, and gives exit code 2 instead of a traceback; 0 otherwise."""
  import sys
  try:
    fn(*args)
  except JaxcompError as e:
    print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  return 0

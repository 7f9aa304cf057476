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

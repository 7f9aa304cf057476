"""Fixtures for the data tests: a session-wide tfds data_dir and a folder of 12 tiny images."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from data_test_images import write_images


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> pathlib.Path:
  """One tfds data_dir for the whole session (building is the slow part; tests reuse built datasets)."""
  return tmp_path_factory.mktemp("tfds_data")


@pytest.fixture(scope="session")
def folder12(tmp_path_factory) -> tuple[pathlib.Path, list[np.ndarray]]:
  """12 random 20x24 RGB PNGs."""
  d = tmp_path_factory.mktemp("folder12")
  return d, write_images(d, 12)

"""The Python examples in docs/data.md run as written."""

from __future__ import annotations

import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "data.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_docs_have_examples():
  assert len(BLOCKS) >= 4


@pytest.mark.filterwarnings("ignore:skipping:UserWarning")  # the bad-files example is about these warnings
@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_docs_example_runs(i, data_dir, monkeypatch, capsys):
  monkeypatch.setenv("JAXCOMP_DATA_DIR", str(data_dir))  # never write into the user's ~/tensorflow_datasets
  exec(compile(BLOCKS[i], f"docs/data.md[python block {i}]", "exec"), {"__name__": "docs_example"})
  out = capsys.readouterr().out
  assert "False" not in out

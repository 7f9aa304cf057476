"""Writes a benchmark's figures into one marked section of docs/benchmarks.md.

Each benchmark owns the text between `<!-- begin:NAME -->` and `<!-- end:NAME -->`; other sections are left alone.
The file is rewritten through a temporary file and a rename so an interrupted run never leaves it half-written.
"""

from __future__ import annotations

import os
import pathlib
import platform
import tempfile

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery figure below was written by the script named in its section, with the command shown.\n"


def machine_line() -> str:
  import jax  # local import: only benchmarks need it

  devs = jax.devices()
  return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"jax {jax.__version__}, {len(devs)} x {devs[0].platform}")


def write_section(name: str, body: str, path: pathlib.Path = DOCS) -> None:
  begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
  text = path.read_text() if path.exists() else HEADER
  block = f"{begin}\n{body.rstrip()}\n{end}"
  if begin in text and end in text:
    pre, rest = text.split(begin, 1)
    _, post = rest.split(end, 1)
    text = pre + block + post
  else:
    text = text.rstrip() + "\n\n" + block + "\n"
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".benchmarks.", suffix=".md")
  with os.fdopen(fd, "w") as f:
    f.write(text)
  os.replace(tmp, path)

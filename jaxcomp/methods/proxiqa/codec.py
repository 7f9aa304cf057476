"""ProxIQA's codec from a workdir: the compression network with its stored integer coding tables.

`build_codec(config, state)` turns `jaxcomp.train.load_for_eval`'s state into a `jaxcomp.entropy.codec.Codec`
(real bitstreams); `jaxcomp eval`, `compress`, `decompress` and `rd` use it through `jaxcomp.evaluation`. Every
checkpoint holds `"tables"`, the integer tables of its parameters (`coding_tables`), so a decoder never rebuilds
them from floats.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp

from jaxcomp.entropy import codec as codec_lib
from jaxcomp.entropy import tables as tables_lib
from jaxcomp.methods.proxiqa import models

TABLE_SYMBOLS = 2047
"""Largest bottleneck table stored in a checkpoint (values beyond take the lossless escape path). Fixed, because a
checkpoint item must keep one shape for resumes: `cdf` is always `[M, TABLE_SYMBOLS + 2]`."""


def build_model(config):
  return models.build_model(config.model, config.N, config.M, config.layout)


def coding_tables(config, codec_params) -> dict:
  """The integer coding tables of the codec with `codec_params` (`finalize`), in the fixed checkpoint shape."""
  tables = codec_lib.finalize(build_model(config), {"params": codec_params}, max_symbols=TABLE_SYMBOLS)
  tables["entropy_bottleneck"] = tables_lib.pad_tables(tables["entropy_bottleneck"], TABLE_SYMBOLS + 2)
  return tables


def warn(text: str) -> None:
  print(f"jaxcomp: warning: {text}", file=sys.stderr)


def build_codec(config, state) -> codec_lib.Codec:
  """A `jaxcomp.entropy.codec.Codec` (real bitstreams) from `load_for_eval`'s state.

  Uses the integer tables stored in the checkpoint (`state["tables"]`). A checkpoint written before they were
  stored gets them rebuilt from its parameters, with a warning: such files decode only where that rebuild
  gives the same tables (the model id in each file checks it).
  """
  model = build_model(config)
  variables = {"params": jax.tree.map(jnp.asarray, state["codec"]["params"])}
  tables = state.get("tables")
  if tables is None:
    warn("this checkpoint has no stored coding tables (written before they were stored); rebuilding them from "
         "its parameters, so its files decode only where the rebuild gives the same tables")
    tables = codec_lib.finalize(model, variables, max_symbols=TABLE_SYMBOLS)
  return codec_lib.Codec(model, variables, tables)

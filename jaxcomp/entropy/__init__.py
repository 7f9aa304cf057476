"""Entropy coding: quantizers, entropy models (flax), integer CDF tables, range coding, bitstreams, a codec.

Public API (see docs/entropy.md):
- `quantizers`: `add_uniform_noise`, `round_ste`, `stochastic_round`, `round_offset`, `symbols`, `quantize`.
- `EntropyBottleneck`, `GaussianConditional`, `SCALE_TABLE`, `lower_bound`, `rate_bits` (from `models`).
- submodules (imported on use): `tables` (integer CDF tables: `make_tables`, `bottleneck_tables`,
  `gaussian_tables`, `save_tables`, `load_tables`), `coder` (`RangeCoder`), `bitstream` (`pack`, `unpack`,
  `model_id`), `codec` (`finalize`, `Codec`).
"""

from jaxcomp.entropy import quantizers
from jaxcomp.entropy.models import (SCALE_TABLE, EntropyBottleneck, GaussianConditional, build_indexes,
                                    default_scale_table, lower_bound, rate_bits)

__all__ = [
    "quantizers", "EntropyBottleneck", "GaussianConditional", "SCALE_TABLE", "build_indexes",
    "default_scale_table", "lower_bound", "rate_bits",
]

"""Helper run in a subprocess by test_entropy_codec.py: encode under one XLA configuration, decode under another.

usage: python entropy_xla_roundtrip.py encode|decode FOLDER
`encode` builds the tiny models, stores their params and finalized tables (as a checkpoint would), writes
bitstreams and this process's own decoded images; `decode` reloads params + tables, decodes the bitstreams and
checks the decoded images are identical to the encoder process's.
"""

import pathlib
import sys

import flax.serialization
import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from entropy_tiny_models import TinyFactorized, TinyHyperprior, smooth_images, make_image  # noqa: E402

from jaxcomp.entropy import codec as codec_lib  # noqa: E402
from jaxcomp.entropy import tables as tables_lib  # noqa: E402

MODELS = {"factorized": TinyFactorized(), "hyperprior": TinyHyperprior()}
IMAGES = {"rgb": lambda: make_image(7, 29, 51)}  # one shape: each extra shape costs two more compilations


def main(mode: str, folder: pathlib.Path) -> None:
  print("devices", jax.device_count())
  for name, model in MODELS.items():
    template = model.init(jax.random.PRNGKey(0), smooth_images(jax.random.PRNGKey(1), 1, 16))
    if mode == "encode":
      variables = template
      tables = codec_lib.finalize(model, variables)
      (folder / f"{name}.params").write_bytes(flax.serialization.to_bytes(variables))
      tables_lib.save_tables(folder / f"{name}.tables.npz", tables)
    else:
      variables = flax.serialization.from_bytes(template, (folder / f"{name}.params").read_bytes())
      tables = tables_lib.load_tables(folder / f"{name}.tables.npz")
    # A margin on the hyperprior so the near-boundary index fixes also cross the process boundary.
    codec = codec_lib.Codec(model, variables, tables, index_margin=1e-3 if name == "hyperprior" else 0.0)
    for img_name, make in IMAGES.items():
      stem = folder / f"{name}-{img_name}"
      if mode == "encode":
        data = codec.compress(make())
        stem.with_suffix(".jxc").write_bytes(data)
        np.save(stem.with_suffix(".npy"), codec.decompress(data))
      else:
        out = codec.decompress(stem.with_suffix(".jxc").read_bytes())
        ref = np.load(stem.with_suffix(".npy"))
        assert out.shape == ref.shape, (out.shape, ref.shape)
        assert np.array_equal(out, ref), f"{stem.name}: decoded image differs across XLA configurations"
        print(stem.name, "identical", out.shape)


if __name__ == "__main__":
  main(sys.argv[1], pathlib.Path(sys.argv[2]))

"""ProxIQA (Chen et al., IEEE TIP 2021): perceptual optimisation of learned image compression through a proxy
network trained, alternately with the codec, to mimic an image quality metric. See docs/proxiqa.md.

Modules: `models` (BLS / BMSHJ codecs, the ProxIQA network), `train` (the alternating steps, a harness Task),
`codec` (the codec of a workdir, for `jaxcomp eval / compress / decompress / rd`).
"""

from jaxcomp.methods.proxiqa.codec import build_codec
from jaxcomp.methods.proxiqa.train import train_and_evaluate

__all__ = ["build_codec", "train_and_evaluate"]

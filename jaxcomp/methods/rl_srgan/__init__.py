"""RL-SRGAN (Savioli, CLIC 2019): JPEG of a bicubic-downsampled image, restored by an SRGAN generator whose encoder
is also an actor-critic policy. See docs/rl_srgan.md.

Modules: `models` (generator, actor-critic heads, discriminator), `vgg` (the VGG19 feature loss and its weights
loader; `convert_vgg19` converts a published checkpoint), `rl` (the actor-critic objective, optax-style
init/update), `train` (a harness Task), `codec` (the codec of a workdir: JPEG + generator, Lanczos beside it).
"""

from jaxcomp.methods.rl_srgan.codec import build_codec, image_metrics
from jaxcomp.methods.rl_srgan.train import train_and_evaluate

__all__ = ["build_codec", "image_metrics", "train_and_evaluate"]

"""CAE-ADMM (Zhao & Liao 2019): a compressive autoencoder (Theis et al. 2017) whose rate is controlled by ADMM
pruning of the quantized latent instead of an entropy estimator. See docs/cae_admm.md.

Modules: `models` (the network), `admm` (the pruning algorithm, optax-style init/update), `train` (a harness
Task), `codec` (the codec of a workdir and its static latent tables).
"""

from jaxcomp.methods.cae_admm.codec import build_codec, image_metrics
from jaxcomp.methods.cae_admm.train import train_and_evaluate

__all__ = ["build_codec", "image_metrics", "train_and_evaluate"]

"""Recurrent iterative decoder (Mali et al., "An empirical analysis of recurrent learning algorithms in neural lossy
image compression systems") and its learning algorithms: BPTT, RTRL, UORO, SAB. See docs/online_learning.md.

Modules: `models` (the estimator and its state functions), `algorithms` (gradient estimators as optax-style
init/update pairs), `patches` (3x3-neighbourhood patch data and whole-image reassembly), `train` (a harness Task),
`codec` (the trained decoder applied to the plain codec's files: what `jaxcomp eval` scores).
"""

from jaxcomp.methods.rnn_decoder.codec import GRAYSCALE, evaluate
from jaxcomp.methods.rnn_decoder.train import train_and_evaluate

__all__ = ["GRAYSCALE", "evaluate", "train_and_evaluate"]

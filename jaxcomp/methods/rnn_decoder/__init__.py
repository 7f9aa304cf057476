"""Recurrent iterative decoder (Mali et al., "An empirical analysis of recurrent learning algorithms in neural lossy
image compression systems") and its learning algorithms: BPTT, RTRL, UORO, SAB.

Modules: `models` (the estimator and its state functions), `algorithms` (gradient estimators as optax-style
init/update pairs), `patches` (3x3-neighbourhood patch data and whole-image reassembly), `train`.
"""

"""Recurrent iterative decoder (Mali et al., "An empirical analysis of recurrent learning algorithms in neural lossy
image compression systems"), trained by BPTT, SAB, UORO or RTRL.

Run (variant after the colon; `jaxcomp list` shows them all):

  jaxcomp train --config configs/rnn_decoder.py:lstm_sab --workdir runs/lstm_sab \
      --config.train_data=/path/to/training/images
  jaxcomp eval --workdir runs/lstm_sab --data /path/to/kodak

Variants are `<cell>_<algorithm>`: cell `lstm`, `gru`, `delta_rnn`, `elman`, `mlp` (eqs. 1-10), algorithm `bptt`,
`sab`, `uoro`, `rtrl`; `default` = `lstm_bptt`. Each trains on grayscale images JPEG-compressed at rates drawn from
0.35-1.02 bpp, as 8x8 patches predicted from their 3x3 decoded neighbourhood. `<cell>_<algorithm>_jp2` is the
paper's JPEG 2000 variant: the same rates through JPEG 2000, 64x64 patches ("tiles", Sec. 3.1), so the
transformation has 9 x 4096 inputs. `tiny` (3 steps, 8 hidden units, the `sample` set) is for tests.

Paper settings (Sec. 3.2): 512 hidden units, weights ~ U(-0.054, 0.054), SGD with momentum, polynomial decay from a
2e-4 step size, global norm clipping at 13, batch 256, K = 4, alpha = 0.235; SAB "the default setting of Ke et
al.", whose values the paper does not list and which assume long sequences; at K = 4 we use k_att = 1, k_top = 2,
k_trunc = 1. Not given by the paper: momentum (0.9), the decay's power and end (quadratic to 1% of the start) and
the step count.

RTRL at 512 hidden units needs a 1024 x ~1M influence matrix per example (about 4 GB each): the `*_rtrl` variants
therefore default to 32 hidden units; raise `hidden` only on a large accelerator.

Expected result (paper, Table 3 and Table 1, Kodak at 0.37 bpp, LSTM): about +1.3 dB PSNR over JPEG with BPTT and
+1.6 dB with SAB after 260 epochs over 178K Places365 + 7K RAISE images. Small runs on the bundled data show the
mechanism only (see docs/online_learning.md).
"""

from __future__ import annotations

import ml_collections

from jaxcomp.train.config import add_shared

CELLS = ("lstm", "gru", "delta_rnn", "elman", "mlp")
ALGORITHMS = ("bptt", "sab", "uoro", "rtrl")

VARIANTS = {
    "default": "lstm_bptt",
    **{f"{c}_{a}": f"{c.upper()} state function trained by {a.upper()}, paper settings (JPEG, 8x8, K=4)"
       + (" at 32 hidden units (RTRL memory)" if a == "rtrl" else "")
       for c in CELLS for a in ALGORITHMS},
    **{f"{c}_{a}_jp2": f"{c.upper()} state function trained by {a.upper()}, JPEG 2000 with 64x64 tiles, K=4"
       + (" at 32 hidden units (RTRL memory)" if a == "rtrl" else "")
       for c in CELLS for a in ALGORITHMS},
    "tiny": "tests: LSTM, 8 hidden units, K=2, 3 steps of batch 16 from the `sample` set",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The locked config of one variant (see VARIANTS); `None` / "" means "default"."""
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"unknown rnn_decoder variant {variant!r}; choose from {', '.join(VARIANTS)}")
  name = "lstm_bptt" if variant in ("default", "tiny") else variant.removesuffix("_jp2")
  cell, algorithm = name.rsplit("_", 1)
  jp2 = variant.endswith("_jp2")

  c = ml_collections.ConfigDict()
  c.method = "rnn_decoder"
  c.variant = variant
  # Shared keys (jaxcomp.train.config), Sec. 3.1-3.2: batch 256, step size 2e-4; patch_size is the JPEG block
  # (8) or, for JPEG 2000, the paper's 64x64 tiles.
  add_shared(c, train_data="sample", eval_data="sample", patch_size=64 if jp2 else 8, global_batch_size=256,
             learning_rate=2e-4, steps=200_000, log_every=100, eval_every=5000, checkpoint_every=5000,
             best_metric="val_psnr", best_mode="max")

  # Model (models.py): Sec. 2 and 3.2.
  c.cell = cell
  c.hidden = 32 if algorithm == "rtrl" else 512
  c.num_steps = 4  # K
  c.alpha = 0.235
  c.init_scale = 0.054

  # Learning algorithm (algorithms.py).
  c.algorithm = algorithm
  c.sab = ml_collections.ConfigDict({"k_att": 1, "k_top": 2, "k_trunc": 1, "att_hidden": 0})  # 0: = hidden
  c.uoro_eps = 1e-7

  # Data (patches.py): Sec. 3.1.
  c.codec = "jpeg2000" if jp2 else "jpeg"
  c.bpp_low = 0.35
  c.bpp_high = 1.02
  c.eval_bpp = 0.37  # Table 3's Kodak rate
  c.max_train_images = 0  # 0: all
  c.eval_batch_size = 4096

  # Optimisation: SGD + momentum, polynomial decay from 2e-4, clipping at 13, batch 256 (Sec. 3.2).
  c.lr_end_fraction = 0.01
  c.lr_power = 2.0
  c.momentum = 0.9
  c.clip_norm = 13.0
  # The decay's horizon, fixed (the paper's steps), so that a run stopped early and resumed with a larger
  # --config.steps is exactly the longer run (the other methods' schedules never depend on `steps` either).
  # 0 ties it to `steps` (a shorter run then decays faster, and growing `steps` on resume changes the schedule).
  c.decay_steps = 200_000

  if variant == "tiny":
    c.hidden = 8
    c.num_steps = 2
    c.global_batch_size = 16
    c.steps = 3
    c.decay_steps = 3
    c.log_every = 1
    c.eval_every = 3
    c.checkpoint_every = 2
    c.max_train_images = 2
    c.eval_max_images = 1
    c.eval_batch_size = 512
  c.lock()
  return c

"""CAE-ADMM: compressive autoencoder with ADMM pruning of the quantized latent (Zhao & Liao 2019).

Run (variant after the colon; `jaxcomp list` shows them all):

  jaxcomp train --config configs/cae_admm.py --workdir runs/cae_admm \
      --config.train_data=/path/to/BSDS500/train --config.eval_data=/path/to/kodak
  jaxcomp train --config configs/cae_admm.py:no_admm --workdir runs/cae_noadmm ...     # the Table 1 ablation
  jaxcomp eval --workdir runs/cae_admm --data /path/to/kodak
  jaxcomp compress --workdir runs/cae_admm kodim21.png kodim21.jxc

Paper settings (Sections 4.1-4.3): Adam, batch 32, learning rate 4e-3 halved whenever the (epoch) loss has not
dropped for 10 epochs, 300 epochs on BSDS500 (500 images) as random 128x128 crops with horizontal and vertical
flips; ADMM steps 2-3 every 20 epochs keeping 10% of the latent; a warm-up with a scaled MSE alone; the distortion is
a linear combination of MSE and differentiable PSNR / SSIM / MS-SSIM.
Not given by the paper, taken from the authors' released code (github.com/JasonZHM/CAE-ADMM): rho = 0.1; the
distortion weights 1e4 MSE + (45 - PSNR) + 1000 (1 - SSIM) + 1000 (1 - MS-SSIM); a one-epoch warm-up on 1e5 MSE;
latent width 32 (C/64 = 0.5 symbols per pixel). Our choices where both are silent or unusable: MS-SSIM on 128-px
crops with 7x7 windows (5 scales with the standard 11x11 window need 161 px); plateau tolerance 1e-4 relative
(PyTorch's ReduceLROnPlateau default); the ADMM variables of a record live at its centre crop (see docs/cae_admm.md).

Expected result (paper, Fig. 2 / Table 1-2): on Kodak, SSIM 0.871 at 0.6 bpp (above JPEG's 0.828 and JPEG 2000's
0.793 at the same rate), and pruning lowers the rate from 1.68 to 1.26 bpp (zeros in z_hat from 7.8% to 17.7%)
against the `no_admm` run. Expect those only after the full 300 epochs on a GPU/TPU; what `demo` gives on a
2-core CPU, with its command: docs/cae_admm.md.
Batch 32 of the default model needs `--config.model.remat=True` on a 24 GiB CPU host (36 GiB of activations
without it).
"""

from __future__ import annotations

import ml_collections

from jaxcomp.train.config import add_shared

VARIANTS = {
    "default": "paper settings: 15 residual blocks, 32 latent channels, ADMM pruning keeping 10% every 20 epochs",
    "no_admm": "Table 1 ablation: the same schedule without ADMM (no penalty, no projection)",
    "demo": "a few minutes on a 2-core CPU: narrow 2-block model, 64x64 crops of `sample`, 60 epochs of 10 steps",
    "tiny": "tests: 1 residual block, narrow layers, 32x32 crops, a few steps on the `sample` set, ADMM every epoch",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The locked config of one variant (see VARIANTS); `None` / "" means "default"."""
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"unknown cae_admm variant {variant!r}; choose from {', '.join(VARIANTS)}")

  c = ml_collections.ConfigDict()
  c.method = "cae_admm"
  c.variant = variant
  # Shared keys (jaxcomp.train.config): Section 4.2-4.3 values; the paper trains on BSDS500, evaluates on Kodak.
  add_shared(c, train_data="sample", eval_data="sample", patch_size=128, global_batch_size=32, learning_rate=4e-3,
             steps=0, log_every=10, eval_every=200, checkpoint_every=500)

  # Model (models.py, Section 4.1; widths/kernels from the authors' model, the paper is silent).
  c.model = ml_collections.ConfigDict(dict(
      latent_channels=32,         # Section 4.2: the last encoder layer's width sets the bpp range (C/64 symbols/px)
      stem_features=(32, 64, 128),
      stem_kernels=(3, 5, 3),
      stem_strides=(1, 2, 1),
      num_res_blocks=15,          # Section 4.1
      down_features=(64, 32),
      down_kernel=5,
      final_kernel=3,
      subpix_kernel=1,
      remat=False,                # rematerialise residual blocks in backward: batch 32 on one 24 GiB CPU host needs it
  ))

  # Data (Section 4.3): random 128x128 crops (patch_size) with both flips.
  c.flips = True

  # Optimisation (Section 4.2).
  c.plateau_factor = 0.5
  c.plateau_patience = 10         # epochs
  c.plateau_rtol = 1e-4
  c.epochs = 300                  # used when steps = 0: epochs x epoch length
  c.epoch_steps = 0               # epoch length in steps; 0: one pass, round(records / global_batch_size)

  # Distortion d (Section 4.2): weights of MSE, (psnr_offset - PSNR), (1 - SSIM), (1 - MS-SSIM), on [0, 1] images.
  c.loss = ml_collections.ConfigDict(dict(
      mse=1e4, psnr=1.0, psnr_offset=45.0, ssim=1000.0, ms_ssim=1000.0, ms_ssim_win=7,
      warmup_epochs=1, warmup_mse=1e5,
  ))

  # ADMM (Section 3.2, Algorithm 1).
  c.admm = ml_collections.ConfigDict(dict(
      enabled=True,
      rho=0.1,                    # authors' code; the paper gives no value
      keep_ratio=0.1,             # l = 10% of the latent (Section 4.2)
      every_epochs=20,            # steps 2-3 every 20 epochs (Section 4.2), counted after the warm-up
      batch_size=16,              # images per encoder pass when projecting over the dataset
  ))

  # Entropy coding of the pruned latent (train.py): a static per-channel table fitted on training latents.
  c.codec = ml_collections.ConfigDict(dict(
      table_images=0,             # anchor crops whose latents are counted (0: all training records)
      max_symbol=63,              # tables cover -63..63 per channel; larger values take the escape path
      precision=16,
  ))

  if variant == "no_admm":
    c.admm.enabled = False
  if variant == "demo":
    c.model.latent_channels = 8
    c.model.stem_features = (16, 32, 32)
    c.model.num_res_blocks = 2
    c.model.down_features = (32, 16)
    c.patch_size = 64
    c.global_batch_size = 8
    c.epoch_steps = 10            # `sample` has 11 training records: one pass would be a 1-step epoch
    c.epochs = 60
    c.loss.ms_ssim = 0.0          # MS-SSIM needs > 97 px even with 7x7 windows
    c.admm.every_epochs = 5
    c.admm.batch_size = 11
    c.eval_every = 50               # 5 epochs
    c.log_every = 10
    c.checkpoint_every = 100
  if variant == "tiny":
    c.model.latent_channels = 4
    c.model.stem_features = (4, 8, 8)
    c.model.num_res_blocks = 1
    c.model.down_features = (8, 6)
    c.patch_size = 32
    c.global_batch_size = 8
    c.epochs = 3
    c.loss.ms_ssim = 0.0          # MS-SSIM needs > 97 px even with 7x7 windows
    c.loss.warmup_epochs = 1
    c.admm.every_epochs = 1
    c.admm.batch_size = 4
    c.codec.table_images = 4
    c.log_every = 1
    c.eval_every = 0
    c.checkpoint_every = 2
    c.eval_max_images = 1
  c.lock()
  return c

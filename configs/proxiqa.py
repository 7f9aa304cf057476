"""ProxIQA (Chen et al., IEEE TIP 2021): a compression network trained against a proxy of an IQA metric.

Run (variant after the colon; `jaxcomp list` shows them all):

  jaxcomp train --config configs/proxiqa.py:bls_ssim_p --workdir runs/bls_ssim_p \
      --config.train_data=/path/to/training/images --config.lmbda=0.0130
  jaxcomp eval --workdir runs/bls_ssim_p --data /path/to/kodak

Variants are `<model>_<loss>`: model `bls` (Ballé 2017, the paper's baseline, 192 filters everywhere) or `bmshj`
(Ballé 2018 scale hyperprior, Table III); loss `mse` (eq. 8, the baseline), `ssim_p`, `msssim_p`, `vmaf_p` (eq. 10
with the ProxIQA network trained by eq. 11 in alternation). `default` = `bls_msssim_p`. `tiny` (2 steps on 32x32
crops of the built-in `sample` set) is for tests; `demo` (a 64-filter BLS, SSIM_p, 64x64 crops of `sample`) trains
in a few minutes on a 2-core CPU and is the README's example job.

Expected result (paper, Table III, Kodak, BD-rate against the MSE-optimised BLS): BLS SSIM_p -21% SSIM BD-rate,
BLS MS-SSIM_p -22% MS-SSIM BD-rate, BLS VMAF_p -23% VMAF BD-rate, each at a cost in PSNR BD-rate (+16%, +12%, +5%)
after the full 2.1M-step schedule on ImageNet. What the `demo` variant and the small-scale CPU runs give, with
their commands: docs/proxiqa.md.

Hyper-parameters from the paper (Sec. III-B, III-D): alpha = 3e-3 for SSIM / MS-SSIM and 1.5e-3 for VMAF; M_max = 1
(VMAF enters as VMAF / 100: alphas of one size imply metrics on one scale, and on 0-100 a fresh proxy's term
swamps the MSE term; docs/proxiqa.md); Adam (0.9, 0.999) for both networks at 1e-4 for 2M steps then 1e-5 for 100K steps;
mini-batches of 8 patches of 128x128 (the ProxIQA network's fc layer is 16384 = 64 x 16 x 16 inputs wide).
Not given by the paper, so taken from the public implementations it builds on:
- lambda: eight rate points were trained (Sec. IV-A-2) but their lambdas are not listed; `LAMBDAS` is CompressAI's
  ladder for its MSE-optimised Ballé models (qualities 1-8), which spans the paper's 0.05-2 bpp. Choose with
  `--config.lmbda=`.
- the distortion scale: CompressAI / TFC weigh MSE of [0, 1] images by 255^2 (`L = lmbda * 255^2 * MSE + bpp`); here
  the whole bracket of eq. 10 is scaled so, `L_t = lmbda * 255^2 * [alpha L_p + (1 - alpha) MSE] + bpp`, which
  reduces to the baseline at alpha = 0 and keeps alpha L_p (L_p ~ 0.1 for SSIM) comparable to (1 - alpha) MSE
  (~1e-3), the balance the paper's alpha values imply.
- the entropy bottleneck's quantile (auxiliary) loss uses Adam at 1e-3 on the `quantiles` only, as CompressAI/TFC.
Options beyond the paper's main runs: `use_proxy=False` is its Sec. IV-E ablation (eq. 13: the metric itself, same
alpha, no proxy); `pristine_fraction` (off) mixes pristine pairs (x, x) into the proxy's batch as the authors'
script does.
"""

from __future__ import annotations

import ml_collections

from jaxcomp.train.config import add_shared

LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)
"""CompressAI's lambdas for MSE-optimised bmshj2018 models, quality 1..8 (weights of 255^2 * MSE)."""

# loss variant -> (metric M, alpha, M_max); Sec. III-B-3.
LOSSES = {
    "mse": ("", 0.0, 0.0),
    "ssim_p": ("ssim", 3e-3, 1.0),
    "msssim_p": ("ms_ssim", 3e-3, 1.0),
    "vmaf_p": ("vmaf", 1.5e-3, 1.0),  # M = VMAF / 100 (train.vmaf_unit), on the scale of SSIM
}
MODELS = {
    "bls": "BLS (Balle 2017, 3 layers 9x9/4, 5x5/2, 5x5/2 + GDN, 192 filters, factorized prior)",
    "bmshj": "BMSHJ (Balle 2018 scale hyperprior, N=128, M=192 as CompressAI quality 1-5)",
}
_LOSS_TEXT = {"mse": "MSE baseline (eq. 8)", "ssim_p": "SSIM_p (eq. 10-11, alpha 3e-3)",
              "msssim_p": "MS-SSIM_p (eq. 10-11, alpha 3e-3)",
              "vmaf_p": "VMAF_p (eq. 10-11, alpha 1.5e-3; needs ffmpeg with libvmaf)"}

VARIANTS = {
    "default": "= bls_msssim_p: BLS MS-SSIM_p (eq. 10-11, alpha 3e-3), the paper's schedule",
    **{f"{m}_{l}": f"{m.upper()} {_LOSS_TEXT[l]}, paper schedule (2.1M steps, batch 8 of 128x128)"
       for m in MODELS for l in LOSSES},
    "tiny": "tests: BLS N=M=8, SSIM_p, 2 steps of 8 32x32 crops of `sample`",
    "demo": "README job: BLS N=M=64, SSIM_p, 64x64 crops of `sample`, a few minutes on a 2-core CPU",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The locked config of one variant (see VARIANTS); `None` / "" means "default"."""
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"unknown proxiqa variant {variant!r}; choose from {', '.join(VARIANTS)}")
  if variant == "default":
    variant = "bls_msssim_p"

  c = ml_collections.ConfigDict()
  c.method = "proxiqa"
  c.variant = variant
  # Shared keys (jaxcomp.train.config), Sec. III-D: Adam at 1e-4 for 2.1M steps, mini-batches of 8 patches of
  # 128x128. The paper used 6507 ImageNet images: point `train_data` at a folder of training images (or a tfds
  # name); `sample` is the small built-in set. `init_from`: e.g. an SSIM_p fine-tune of an MSE model (same model,
  # N, M); optimizers, proxy and step count start fresh.
  add_shared(c, train_data="sample", eval_data="sample", patch_size=128, global_batch_size=8, steps=2_100_000,
             learning_rate=1e-4, log_every=100, checkpoint_every=10_000)

  # Compression network (models.py).
  c.model = "bls"
  c.layout = "bls2017"
  c.N = 192
  c.M = 192
  c.quantizer = "noise"  # additive uniform noise in training (Sec. III-B-1)

  # Losses: L_t = lmbda * 255^2 * [alpha (M_max - M_hat) + (1 - alpha) MSE] + bpp (eq. 10); alpha = 0 gives eq. 8.
  c.loss = "msssim_p"
  c.metric = "ms_ssim"
  c.alpha = 3e-3
  c.m_max = 1.0
  # False: the ablation of Sec. IV-E, eq. 13-14: the metric M itself (differentiable: ssim, ms_ssim) in place of
  # the ProxIQA network's M_hat, same alpha; no proxy is trained.
  c.use_proxy = True
  # Fraction of the proxy's training pairs replaced by pristine pairs (x, x), scored by M like the others. Not in
  # the paper; the authors' script does it (one of the 8 pairs in half of the batches: 1/16). 0 = the paper.
  c.pristine_fraction = 0.0
  c.lmbda = LAMBDAS[3]
  c.distortion_scale = 255.0 ** 2

  # Optimisation (Sec. III-D): Adam for both networks, 1e-4 for 2M steps then 1e-5 for 100K.
  c.lr_boundary = 2_000_000
  c.lr_after = 1e-5
  c.proxy_learning_rate = 1e-4
  c.aux_learning_rate = 1e-3
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999

  model, loss = variant.split("_", 1) if variant not in ("tiny", "demo") else ("bls", "ssim_p")
  c.model = model
  c.loss = loss
  c.metric, c.alpha, c.m_max = LOSSES[loss]
  # MS-SSIM on the paper's 128x128 patches: 5 scales of 11x11 windows need 161 px, so train.ms_ssim_window picks
  # the largest window that fits (7); evaluation on full images uses the standard 11.
  if model == "bmshj":
    c.layout, c.N, c.M = "bmshj2018", 128, 192

  if variant == "tiny":
    c.N = c.M = 8
    c.steps = 2
    c.patch_size = 32
    c.log_every = 1
    c.checkpoint_every = 1
    c.eval_max_images = 1
  elif variant == "demo":
    c.N = c.M = 64
    c.steps = 600
    c.patch_size = 64
    c.learning_rate = 1e-3   # a short run: a larger step than the paper's 1e-4
    c.proxy_learning_rate = 1e-3
    c.lr_boundary = 500
    c.lr_after = 1e-4
    c.lmbda = LAMBDAS[5]
    c.log_every = 25
    c.checkpoint_every = 200
    c.eval_max_images = 4
  c.lock()
  return c

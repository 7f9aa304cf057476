"""RL-SRGAN (Savioli, "A hybrid approach between adversarial generative networks and actor-critic policy gradient
for low rate high-resolution image compression", CLIC 2019): JPEG of a bicubic-downsampled image, restored by an
SRGAN generator whose encoder is also an actor-critic policy rewarded for raising a (non-differentiable) metric.

Run (variant after the colon; `jaxcomp list` shows them all):

  jaxcomp train --config configs/rl_srgan.py:demo --workdir runs/rl_srgan_demo      # minutes on a 2-core CPU
  jaxcomp eval --workdir runs/rl_srgan_demo --data ../shared/data/kodak
  jaxcomp compress --workdir runs/rl_srgan_demo kodim01.png kodim01.jxc
  jaxcomp train --config configs/rl_srgan.py --workdir runs/rl_srgan \
      --config.train_data=/data/clic/train --config.vgg.weights=/data/vgg19.npz     # the paper's recipe

Variants: `default` (RL-SRGAN, eq. 12), `srgan` (the same recipe with the RL term off: the paper's SRGAN row),
`tiny` (tests), `demo` (a narrow generator predicting a correction to the bicubic upsampling, 48x48 crops of
`sample`, VGG term off).

Paper settings (Sec. 2.1-2.3): r = 4; generator: conv 9x9/64 + PReLU, 5 residual blocks, conv 3x3/64 + BN with the
long skip, sub-pixel upsampling to r; discriminator: VGG-style, LeakyReLU(0.2), strided convolutions, dense head;
L_SRGAN = MSE + 1e-3 adversarial + 6e-3 VGG (eq. 4); L_RL = 5e-3 sum (R - V)^2 - log pi(PSNR_pred | I_LR)(R - V)
(eqs. 10-11) added every k iterations (eq. 12); Adam at 1e-3; 22,876 iterations on CLIC (1,634 training images).
Not given by the paper, our choices: the JPEG quality (85: Kodak lands at 0.152 bpp, the CLIC low-rate target
being 0.15 bpp; measured by the command in docs/rl_srgan.md), the crop (96x96 HR, SRGAN's) and batch (16,
SRGAN's), k = 4 and gamma = 0.9 for the return (eq. 7), Adam's betas (0.9, 0.999), the VGG layer (conv5_4 after
ReLU, SRGAN's VGG54) and the fully connected heads on the globally pooled latent (the paper does not say how a
fully connected layer reads a latent of variable size).

The VGG19 term (eq. 3) needs ImageNet weights, which cannot be downloaded here: convert a published checkpoint once
(`python -m jaxcomp.methods.rl_srgan.convert_vgg19 vgg19-dcbb9e9d.pth vgg19.npz`, docs/rl_srgan.md) and pass
`--config.vgg.weights=vgg19.npz`. Without a weights file the VGG term is refused unless `--config.vgg.weight=0`:
features of a random VGG are never used silently.

Expected result (paper, Table 1, CLIC validation): PSNR / MS-SSIM 22.34 / 0.783 (RL-SRGAN), 22.15 / 0.780 (SRGAN),
21.44 / 0.760 (Lanczos). What the CPU-sized runs give, with their commands: docs/rl_srgan.md.
"""

from __future__ import annotations

import ml_collections

from jaxcomp.train.config import add_shared

VARIANTS = {
    "default": "RL-SRGAN (eq. 12): SRGAN loss + actor-critic term every k=4 steps, r=4, JPEG q85, paper schedule",
    "srgan": "the SRGAN row of Table 1: the same recipe with the RL term off",
    "tiny": "tests: 8-wide generator with 1 residual block, 16x16 crops of `sample`, 3 steps, VGG off",
    "demo": "a few minutes on a 2-core CPU: 16-wide residual generator, 2 blocks, 48x48 crops of `sample`, VGG off",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The locked config of one variant (see VARIANTS); `None` / "" means "default"."""
  variant = arg or "default"
  if variant not in VARIANTS:
    raise ValueError(f"unknown rl_srgan variant {variant!r}; choose from {', '.join(VARIANTS)}")

  c = ml_collections.ConfigDict()
  c.method = "rl_srgan"
  c.variant = variant
  # Shared keys (jaxcomp.train.config), Sec. 2.3: Adam at 1e-3 for 22,876 iterations; the paper trains on CLIC.
  add_shared(c, train_data="sample", eval_data="sample", patch_size=96, global_batch_size=16, learning_rate=1e-3,
             steps=22_876, log_every=100, checkpoint_every=1000)

  # The codec (codec.py): bicubic downsampling by r, JPEG of the LR image.
  c.scale = 4
  c.jpeg_quality = 85

  # Networks (models.py).
  # residual: not in the paper (False = the paper's form); True predicts a correction to the bicubic upsampling of
  # the LR image (models.Generator), so an untrained generator starts at bicubic quality.
  c.generator = ml_collections.ConfigDict({"features": 64, "num_res_blocks": 5, "residual": False})
  c.heads = ml_collections.ConfigDict({"hidden": 256})
  c.discriminator = ml_collections.ConfigDict({"features": 64})

  # SRGAN loss (eq. 4): weights of the MSE, adversarial (eq. 1) and VGG (eq. 3) terms.
  c.mse_weight = 1.0
  c.adversarial_weight = 1e-3
  c.vgg = ml_collections.ConfigDict({"weight": 6e-3, "weights": "", "layer": "conv5_4"})
  c.d_learning_rate = 1e-3
  c.adam_b1 = 0.9
  c.adam_b2 = 0.999

  # RL loss (eqs. 5-11) and when it is added (eq. 12).
  c.rl = ml_collections.ConfigDict({
      "enabled": True,
      "metric": "psnr",          # reward metric: psnr, ssim, ms_ssim, vmaf, or "module:function" (host callable)
      "k": 4,                    # iterations per return window (eq. 7, 12)
      "gamma": 0.9,              # discount (eq. 7)
      "value_weight": 5e-3,      # eq. 11
      "weight": 1.0,             # of l_RL in eq. 12 (1 in the paper)
      "reward_mode": "per_batch",  # or "per_image" (rl.py): the paper does not say
      # Where the RL gradient flows: True (the paper, "REINFORCE on the encoder parameters") into the encoder
      # through the heads; False, the heads only (the generator then trains on the SRGAN loss alone).
      "update_encoder": True,
  })

  if variant == "srgan":
    c.rl.enabled = False
  if variant == "tiny":
    c.generator.features, c.generator.num_res_blocks = 8, 1
    c.heads.hidden = 16
    c.discriminator.features = 4
    c.vgg.weight = 0.0
    c.patch_size = 16
    c.global_batch_size = 8
    c.steps = 3
    c.rl.k = 2
    c.log_every = 1
    c.checkpoint_every = 2
    c.eval_max_images = 1
  if variant == "demo":
    c.generator.features, c.generator.num_res_blocks = 16, 2
    c.generator.residual = True  # a short run: start at the bicubic upsampling, not at noise (docs/rl_srgan.md)
    c.heads.hidden = 64
    c.discriminator.features = 8
    c.vgg.weight = 0.0
    c.patch_size = 48
    c.global_batch_size = 8
    c.steps = 600
    c.log_every = 25
    c.checkpoint_every = 200
    c.eval_max_images = 4
  c.lock()
  return c

"""Pixel shuffle (Shi et al. 2016, "Real-time single image and video super-resolution using an efficient sub-pixel
convolutional neural network") in NHWC, with the channel order of PyTorch's `nn.PixelShuffle` (channel c*r*r +
i*r + j of the input becomes channel c at sub-pixel (i, j)), so weights ported from PyTorch models line up.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def depth_to_space(x_BHWC: jax.Array, r: int) -> jax.Array:
  """[B, H, W, C*r*r] -> [B, H*r, W*r, C]."""
  b, h, w, crr = x_BHWC.shape
  if crr % (r * r):
    raise ValueError(f"depth_to_space: channels {crr} not divisible by r*r = {r * r}")
  c = crr // (r * r)
  x = x_BHWC.reshape(b, h, w, c, r, r)
  return jnp.transpose(x, (0, 1, 4, 2, 5, 3)).reshape(b, h * r, w * r, c)


def space_to_depth(x_BHWC: jax.Array, r: int) -> jax.Array:
  """[B, H*r, W*r, C] -> [B, H, W, C*r*r]; the inverse of `depth_to_space`."""
  b, hr, wr, c = x_BHWC.shape
  if hr % r or wr % r:
    raise ValueError(f"space_to_depth: spatial size {hr}x{wr} not divisible by r = {r}")
  x = x_BHWC.reshape(b, hr // r, r, wr // r, r, c)
  return jnp.transpose(x, (0, 1, 3, 5, 2, 4)).reshape(b, hr // r, wr // r, c * r * r)

"""Pixel shuffle against an explicit loop in PyTorch's channel order."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.nn import depth_to_space, space_to_depth


def test_depth_to_space_matches_loop_and_inverts():
  r, c = 2, 3
  x = np.arange(2 * 3 * 4 * c * r * r, dtype=np.float32).reshape(2, 3, 4, c * r * r)
  ref = np.zeros((2, 3 * r, 4 * r, c), np.float32)
  for ch in range(c):
    for i in range(r):
      for j in range(r):
        ref[:, i::r, j::r, ch] = x[..., ch * r * r + i * r + j]
  y = depth_to_space(jnp.asarray(x), r)
  np.testing.assert_array_equal(y, ref)
  np.testing.assert_array_equal(space_to_depth(y, r), x)


def test_bad_shapes_rejected():
  with pytest.raises(ValueError, match="divisible"):
    depth_to_space(jnp.zeros((1, 2, 2, 3)), 2)
  with pytest.raises(ValueError, match="divisible"):
    space_to_depth(jnp.zeros((1, 3, 2, 1)), 2)

"""conv_transpose: forward equals flax.linen.ConvTranspose / lax.conv_transpose; the custom VJP equals autodiff."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcomp.nn import conv as conv_mod
from jaxcomp.nn import Conv, ConvTranspose, conv2d, conv_transpose, same_upsampling_padding, torch_padding

# (kernel, strides, padding, input HW): the CompressAI deconv(5, 2), the BLS 9x9/4, stride 1, an asymmetric case, and
# paddings beyond k - 1 (negative padding in the adjoint strided conv and in the sub-pixel forward).
CASES = [
    (5, (2, 2), (same_upsampling_padding(5, 2),) * 2, (4, 5)),
    (9, (4, 4), (same_upsampling_padding(9, 4),) * 2, (3, 3)),
    (3, (1, 1), ((1, 1), (1, 1)), (5, 4)),
    (4, (2, 3), ((1, 2), (0, 3)), (3, 4)),
    (3, (2, 2), ((0, 4), (2, 5)), (3, 3)),
    (5, (2, 2), ((6, 1), (0, 0)), (3, 4)),  # padding beyond the kernel on one side, none on the other
]


def _ref(x, k, strides, padding):
  return lax.conv_transpose(x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_padding_helpers_match_pytorch_output_size():
  for k, s, p, op in [(5, 2, 2, 1), (9, 4, 4, 3), (3, 1, 1, 0)]:
    lo, hi = torch_padding(k, s, p, op)
    h = 7
    dilated = (h - 1) * s + 1 + lo + hi
    assert dilated - k + 1 == (h - 1) * s - 2 * p + k + op
  assert same_upsampling_padding(5, 2) == (2, 3)


def _assert_gradients_match(f, f_ref, x, kern, strides, padding, g):
  """Input and kernel gradients of sum(f(x, kern) * g) equal those of the autodiff reference f_ref."""
  loss = lambda conv: (lambda x, k: jnp.sum(conv(x, k, strides, padding) * g))
  dx, dk = jax.grad(loss(f), argnums=(0, 1))(x, kern)
  dx_ref, dk_ref = jax.grad(loss(f_ref), argnums=(0, 1))(x, kern)
  chex.assert_trees_all_equal_shapes((dx, dk), (x, kern))
  np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dk, dk_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,strides,padding,hw", CASES)
def test_forward_and_gradients_match_autodiff(k, strides, padding, hw):
  kx, kk, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (2, *hw, 3))
  kern = jax.random.normal(kk, (k, k, 3, 4)) / k
  y = conv_transpose(x, kern, strides, padding)
  y_ref = _ref(x, kern, strides, padding)
  chex.assert_equal_shape([y, y_ref])
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)

  _assert_gradients_match(conv_transpose, _ref, x, kern, strides, padding, jax.random.normal(kg, y.shape))


def test_module_equals_flax_conv_transpose_and_doubles_size():
  x = jax.random.normal(jax.random.key(1), (2, 6, 5, 4))
  ours = ConvTranspose(features=3, kernel_size=5, strides=2)
  ref = nn.ConvTranspose(features=3, kernel_size=(5, 5), strides=(2, 2), padding=((2, 3), (2, 3)))
  params = ours.init(jax.random.key(2), x)
  ref_params = ref.init(jax.random.key(3), x)
  chex.assert_trees_all_equal_shapes(params, ref_params)
  params = jax.tree.map(lambda a: a + 0.1, ref_params)  # nonzero bias too
  y = ours.apply(params, x)
  chex.assert_shape(y, (2, 12, 10, 3))
  np.testing.assert_allclose(y, ref.apply(params, x), rtol=1e-5, atol=1e-5)

  f = lambda mod: (lambda p, x: jnp.sum(jnp.sin(mod.apply(p, x))))
  g_ours = jax.grad(f(ours), argnums=(0, 1))(params, x)
  g_ref = jax.grad(f(ref), argnums=(0, 1))(params, x)
  chex.assert_trees_all_close(g_ours, g_ref, rtol=1e-5, atol=1e-5)


def test_second_order_jvp_of_gradient_is_finite():
  # Custom VJP functions are still differentiable in forward mode through the VJP's own ops (needed by e.g. hvp).
  x = jax.random.normal(jax.random.key(4), (1, 3, 3, 2))
  k = jax.random.normal(jax.random.key(5), (5, 5, 2, 2))
  f = lambda k: jnp.sum(conv_transpose(x, k, (2, 2), ((2, 3), (2, 3))) ** 2)
  g = jax.grad(f)(k)
  assert np.all(np.isfinite(g))


def test_bad_padding_string_rejected():
  with pytest.raises(ValueError, match="padding"):
    ConvTranspose(features=2, padding="SAME").init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)))


# (kernel, strides, padding, input HW) of the strided conv2d: CompressAI's conv(5, 2) on even and odd sizes, the BLS
# 9x9/4, stride 1, no padding, asymmetric strides, padding beyond the kernel (a negative adjoint padding) and a
# kernel smaller than the stride (phases of the input gradient that read nothing).
CONV_CASES = [
    (5, (2, 2), ((2, 2), (2, 2)), (8, 9)),
    (9, (4, 4), ((4, 4), (4, 4)), (13, 16)),
    (3, (1, 1), ((1, 1), (1, 1)), (5, 4)),
    (5, (2, 2), ((0, 0), (0, 0)), (9, 10)),
    (4, (2, 3), ((1, 2), (0, 3)), (7, 8)),
    (3, (2, 2), ((5, 1), (4, 6)), (6, 7)),
    (2, (3, 3), ((0, 0), (1, 0)), (7, 8)),
]


@pytest.mark.parametrize("k,strides,padding,hw", CONV_CASES)
def test_conv2d_forward_and_gradients_match_autodiff(k, strides, padding, hw):
  kx, kk, kg = jax.random.split(jax.random.key(6), 3)
  x = jax.random.normal(kx, (2, *hw, 3))
  kern = jax.random.normal(kk, (k, k, 3, 4)) / k
  ref = lambda x, k, strides, padding: lax.conv_general_dilated(x, k, strides, padding,
                                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = conv2d(x, kern, strides, padding)
  np.testing.assert_array_equal(y, ref(x, kern, strides, padding))
  _assert_gradients_match(conv2d, ref, x, kern, strides, padding, jax.random.normal(kg, y.shape))


def test_conv_module_equals_flax_conv():
  x = jax.random.normal(jax.random.key(7), (2, 9, 8, 4))
  ours = Conv(features=3, kernel_size=5, strides=2)
  ref = nn.Conv(features=3, kernel_size=(5, 5), strides=(2, 2), padding=((2, 2), (2, 2)))
  params = ours.init(jax.random.key(8), x)
  chex.assert_trees_all_equal(params, ref.init(jax.random.key(8), x))  # same names, shapes and initial values
  params = jax.tree.map(lambda a: a + 0.1, params)
  y = ours.apply(params, x)
  chex.assert_shape(y, (2, 5, 4, 3))
  np.testing.assert_allclose(y, ref.apply(params, x), rtol=1e-6, atol=1e-6)
  f = lambda mod: (lambda p, x: jnp.sum(jnp.sin(mod.apply(p, x))))
  chex.assert_trees_all_close(jax.grad(f(ours), argnums=(0, 1))(params, x), jax.grad(f(ref), argnums=(0, 1))(params, x),
                              rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="Conv: padding"):
    Conv(features=3, padding="SAME").init(jax.random.key(0), x)


@pytest.mark.parametrize("per_phase", [True, False])
@pytest.mark.parametrize("k,strides,padding,hw", CASES + [(3, (2, 2), ((-1, 2), (2, -2)), (4, 5)),
                                                        (2, (3, 3), ((1, 1), (0, 2)), (4, 4))])
def test_both_subpixel_forwards_equal_lax(per_phase, k, strides, padding, hw):
  # Both sub-pixel layouts (chosen by output channel count in conv_transpose), incl. a negative (cropping) padding
  # and a kernel smaller than the stride.
  x = jax.random.normal(jax.random.key(9), (2, *hw, 3))
  kern = jax.random.normal(jax.random.key(10), (k, k, 3, 4)) / k
  y = conv_mod._forward(x, kern, strides, padding, per_phase=per_phase)
  y_ref = _ref(x, kern, strides, padding)
  chex.assert_equal_shape([y, y_ref])
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)

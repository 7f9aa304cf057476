"""Shared layers: GDN/IGDN, strided and transposed convolutions with fast gradients on XLA:CPU, pixel shuffle."""

from jaxcomp.nn.conv import Conv, ConvTranspose, conv2d, conv_transpose, same_upsampling_padding, torch_padding
from jaxcomp.nn.gdn import GDN, NonNegativeParametrizer, gdn_effective_params, lower_bound
from jaxcomp.nn.shuffle import depth_to_space, space_to_depth
from jaxcomp.nn.xla_options import configure_xla_flags, cpu_compiler_options

__all__ = [
    "Conv", "ConvTranspose", "conv2d", "conv_transpose", "same_upsampling_padding", "torch_padding",
    "GDN", "NonNegativeParametrizer", "gdn_effective_params", "lower_bound",
    "depth_to_space", "space_to_depth",
    "configure_xla_flags", "cpu_compiler_options",
]

"""Shared layers: GDN/IGDN, a transposed convolution with a fast kernel gradient, pixel shuffle."""

from jaxcomp.nn.conv import ConvTranspose, conv_transpose, same_upsampling_padding, torch_padding
from jaxcomp.nn.gdn import GDN, NonNegativeParametrizer, gdn_effective_params, lower_bound
from jaxcomp.nn.shuffle import depth_to_space, space_to_depth

__all__ = [
    "ConvTranspose", "conv_transpose", "same_upsampling_padding", "torch_padding",
    "GDN", "NonNegativeParametrizer", "gdn_effective_params", "lower_bound",
    "depth_to_space", "space_to_depth",
]

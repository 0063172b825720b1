"""slimtorch-convops: depthwise, grouped 1x1 + channel shuffle and shift kernels, fused with
their BatchNorm and activation, as drop-in layers (see README.md)."""

from slimtorch.convops.api import FuseConfig, fuse_
from slimtorch.convops.depthwise import (
    depthwise_conv2d,
    depthwise_conv2d_grad_input,
    depthwise_conv2d_grad_weight,
)
from slimtorch.convops.export import to_torch_
from slimtorch.convops.index_maps import grouped_shift_offsets, shuffle_permutation
from slimtorch.convops.layers import (
    ActiveShift2d,
    ChannelShuffle,
    DepthwiseConv2d,
    GroupedPointwiseConv2d,
    Shift2d,
    ShiftConv2d,
    ShuffleConcat,
    SparseShift2d,
)
from slimtorch.convops.pointwise import pointwise_conv2d, pointwise_conv2d_grad_weight
from slimtorch.convops.shift import active_shift, integer_shift, quantized_shift
from slimtorch.convops.shuffle import channel_shuffle, channel_split, shuffle_concat
from slimtorch.core.registry import RegisteredConversion, register_conversion

__version__ = "0.1.0"

__all__ = [
    "ActiveShift2d",
    "ChannelShuffle",
    "DepthwiseConv2d",
    "FuseConfig",
    "GroupedPointwiseConv2d",
    "Shift2d",
    "ShiftConv2d",
    "ShuffleConcat",
    "SparseShift2d",
    "active_shift",
    "channel_shuffle",
    "channel_split",
    "depthwise_conv2d",
    "depthwise_conv2d_grad_input",
    "depthwise_conv2d_grad_weight",
    "fuse_",
    "grouped_shift_offsets",
    "integer_shift",
    "pointwise_conv2d",
    "pointwise_conv2d_grad_weight",
    "quantized_shift",
    "shuffle_concat",
    "shuffle_permutation",
    "to_torch_",
]


register_conversion(
    RegisteredConversion(
        name="fused",
        family="convops",
        description="BatchNorm folded; depthwise, 1x1 (grouped) convs and channel shuffles as fused "
        "conv + bias + activation (+ shuffle) kernels",
        convert=fuse_,
    )
)

"""slimtorch-convops: depthwise, grouped 1x1 + channel shuffle and shift kernels, fused with
their BatchNorm and activation, as drop-in layers (see README.md)."""

from slimtorch.convops.api import ConvertConfig, convert, fold_bn
from slimtorch.convops.depthwise import (
    depthwise_conv2d,
    depthwise_conv2d_grad_input,
    depthwise_conv2d_grad_weight,
)
from slimtorch.convops.export import to_torch
from slimtorch.convops.formats import grouped_shift_offsets, shuffle_permutation
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
from slimtorch.convops.shift import active_shift, integer_shift, quantized_shift, use_cuda_shift
from slimtorch.convops.shuffle import channel_shuffle, channel_split, shuffle_concat
from slimtorch.core.formats import CompressionFormat, register_format

__version__ = "0.1.0"

__all__ = [
    "ActiveShift2d",
    "ChannelShuffle",
    "ConvertConfig",
    "DepthwiseConv2d",
    "GroupedPointwiseConv2d",
    "Shift2d",
    "ShiftConv2d",
    "ShuffleConcat",
    "SparseShift2d",
    "active_shift",
    "channel_shuffle",
    "channel_split",
    "convert",
    "depthwise_conv2d",
    "depthwise_conv2d_grad_input",
    "depthwise_conv2d_grad_weight",
    "fold_bn",
    "grouped_shift_offsets",
    "integer_shift",
    "pointwise_conv2d",
    "pointwise_conv2d_grad_weight",
    "quantized_shift",
    "shuffle_concat",
    "shuffle_permutation",
    "to_torch",
    "use_cuda_shift",
]


def _fused(model):
    return convert(fold_bn(model))


register_format(
    CompressionFormat(
        name="convops-fused",
        family="convops",
        description="BatchNorm folded; depthwise, 1x1 (grouped) convs and channel shuffles as fused "
        "conv + bias + activation (+ shuffle) kernels",
        convert=_fused,
    )
)

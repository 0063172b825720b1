"""Building blocks of the zoo and the one place that decides which layers implement them.

**The convops seam.** Every depthwise convolution, (grouped, shuffled) pointwise convolution,
channel shuffle and shift in the zoo is created by a factory of the first section below, which
returns the ``slimtorch.convops`` layer (``DepthwiseConv2d``, ``GroupedPointwiseConv2d``,
``channel_shuffle`` / ``ChannelShuffle``, ``Shift2d``, ``ShiftConv2d``): Triton kernels on the
GPU, their pure-torch references on CPU. The convops conv layers subclass ``nn.Conv2d``, so zoo
state_dicts are those of plain torch models.

Models keep convolution → BatchNorm → activation as separate modules (:class:`ConvNormAct`,
timm's ConvNormAct layout) so they train; folding BatchNorm and fusing activations for
deployment is convops' ``fold_bn`` / ``convert`` (``slimtorch.zoo.variants`` applies them).
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
from timm.layers import SelectAdaptivePool2d
from timm.layers import make_divisible as _timm_make_divisible
from torch import nn

from slimtorch import convops

# ----------------------------------------------------------------------------- the convops seam


def depthwise_conv(
    channels: int, kernel_size: int, stride: int = 1, dilation: int = 1, channel_multiplier: int = 1
) -> nn.Module:
    """``channels → channels·channel_multiplier`` depthwise k×k convolution, padding
    ``k//2·dilation``, no bias."""
    return convops.DepthwiseConv2d(
        channels, kernel_size, stride, dilation=dilation, channel_multiplier=channel_multiplier
    )


def grouped_pointwise_conv(
    in_channels: int, out_channels: int, groups: int = 1, shuffle_groups: Optional[int] = None, bias: bool = False
) -> nn.Module:
    """1x1 convolution in ``groups`` groups of the channel-shuffled input
    ``channel_shuffle(x, shuffle_groups)`` (no shuffle when None); the shuffle is folded into
    the kernel's input read."""
    return convops.GroupedPointwiseConv2d(in_channels, out_channels, groups, shuffle_groups, bias=bias)


def pointwise_conv(in_channels: int, out_channels: int, bias: bool = False) -> nn.Module:
    """Dense 1x1 convolution (a one-group :func:`grouped_pointwise_conv`)."""
    return grouped_pointwise_conv(in_channels, out_channels, 1, None, bias=bias)


channel_shuffle = convops.channel_shuffle
"""``channel_shuffle(x, groups)``: ``out[:, j·groups + i] = x[:, i·(C/groups) + j]``."""


def channel_shuffle_layer(groups: int) -> nn.Module:
    """The module form of :func:`channel_shuffle`."""
    return convops.ChannelShuffle(groups)


def shuffle_concat_layer(groups: int = 2) -> nn.Module:
    """``module(a, b) = channel_shuffle(cat([a, b], 1), groups)`` in one pass (ShuffleNet V2)."""
    return convops.ShuffleConcat(groups)


def shift2d(channels: int, kernel_size: int = 3) -> nn.Module:
    """Grouped shift (Wu et al. 2018): no parameters, no FLOPs."""
    return convops.Shift2d(channels, kernel_size)


def shift_conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Module:
    """Grouped shift over a k×k neighbourhood fused with a strided 1x1 convolution; ``weight`` is
    ``(out, in, 1, 1)``."""
    return convops.ShiftConv2d(in_channels, out_channels, kernel_size, stride, shift="grouped")


def dense_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: Optional[int] = None,
    bias: bool = False,
) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` (stems, 3x3 expand convolutions, strided 1x1 shortcuts): cuDNN's job."""
    padding = kernel_size // 2 if padding is None else padding
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


# ----------------------------------------------------------------------------- activations, widths

_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "hardswish": nn.Hardswish,
    "none": nn.Identity,
}


def make_act(name: str) -> nn.Module:
    """``"relu" | "relu6" | "hardswish" | "none"`` -> a fresh activation module."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"act: expected one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


def make_divisible(value: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), never more than 10% below ``value``:
    the rounding of torchvision's and timm's MobileNets (``_make_divisible``)."""
    return int(_timm_make_divisible(value, divisor))


def pruned_width(channels: int, ratio: float, divisor: int = 8) -> int:
    """Width left after pruning ``ratio`` of ``channels`` (rounded by :func:`make_divisible`)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio: expected a pruned fraction in [0, 1), got {ratio}")
    return make_divisible(channels * (1.0 - ratio), divisor)


# ----------------------------------------------------------------------------- composite blocks


class ConvNormAct(nn.Module):
    """``act(bn(conv(x)))`` as three modules ``conv``, ``bn`` (Identity when ``norm=False``), ``act``."""

    def __init__(self, conv: nn.Module, channels: int, act: str = "none", *, norm: bool = True, bn_eps: float = 1e-5):
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps) if norm else nn.Identity()
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """``x · hardsigmoid(conv_expand(relu(conv_reduce(mean_hw(x)))))`` (MobileNetV3's SE)."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv_reduce = dense_conv(channels, reduced, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = dense_conv(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.conv_expand(self.act(self.conv_reduce(scale))))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: [1x1 expand in→mid] → k×k depthwise (stride) → [SE] → 1x1 project
    mid→out (no activation), plus the input when ``stride == 1`` and ``in == out``.

    ``expand=False`` (expansion ratio 1) drops the expand convolution; then ``mid == in``.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        act: str = "relu6",
        se_chs: int = 0,
        expand: bool = True,
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        if not expand and mid_chs != in_chs:
            raise ValueError(f"mid_chs: a block without expand convolution needs mid == in ({in_chs}), got {mid_chs}")
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = ConvNormAct(pointwise_conv(in_chs, mid_chs), mid_chs, act, bn_eps=bn_eps) if expand else None
        self.conv_dw = ConvNormAct(depthwise_conv(mid_chs, kernel_size, stride), mid_chs, act, bn_eps=bn_eps)
        self.se = SqueezeExcite(mid_chs, se_chs) if se_chs else None
        self.conv_pwl = ConvNormAct(pointwise_conv(mid_chs, out_chs), out_chs, "none", bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.conv_pw is None else self.conv_pw(x)
        out = self.conv_dw(out)
        if self.se is not None:
            out = self.se(out)
        out = self.conv_pwl(out)
        return out + x if self.has_skip else out


# ----------------------------------------------------------------------------- the timm model interface


class ZooModel(nn.Module):
    """The timm classification interface every zoo model shares.

    A family's ``__init__`` builds its feature modules in execution order (timm's
    ``features_only`` wrapper runs the children in that order), sets ``feature_info``, then
    calls :meth:`build_head`. ``forward = forward_head(forward_features(x))``.

    Weight conversion (``slimtorch.zoo.weights``): a family supporting foreign checkpoints
    overrides :meth:`source_prefix_map` and lists the sources in ``weight_sources``;
    ``source_bn_eps`` gives a source's BatchNorm epsilon where it differs from the model's.
    """

    feature_info: list[dict]
    weight_sources: tuple[str, ...] = ()
    source_bn_eps: ClassVar[dict[str, float]] = {}

    def build_head(
        self,
        num_features: int,
        num_classes: int,
        *,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        hidden_size: Optional[int] = None,
    ) -> None:
        """Pooling, dropout and classifier after ``num_features`` channels (``hidden_size``: the
        width the classifier sees when a family adds a pre-logits layer, as MobileNetV3 does)."""
        self.num_features = num_features
        self.head_hidden_size = hidden_size or num_features
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = self.new_classifier(num_classes)

    def new_classifier(self, num_classes: int) -> nn.Module:
        width = self.head_hidden_size * self.global_pool.feat_mult()
        return nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()

    def init_weights(self) -> None:
        """Kaiming-normal (fan-out) convolutions, unit BatchNorm, N(0, 0.01) linear layers."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.classifier = self.new_classifier(num_classes)

    def source_prefix_map(self, source: str, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
        """``{source module prefix: our module prefix}`` for a checkpoint of ``source``."""
        supported = ", ".join(self.weight_sources) or "none"
        raise ValueError(f"source: {type(self).__name__} cannot load {source} weights (supported: {supported})")


def feature_points(stage_chs: list[int], stage_strides: list[int], reduction: int) -> list[dict]:
    """timm ``feature_info`` at the last stage of each resolution: ``stage_strides`` are the
    strides of the stages (of ``self.stages``), ``reduction`` that of their input."""
    info = []
    for index, (chs, stride) in enumerate(zip(stage_chs, stage_strides, strict=True)):
        reduction *= stride
        entry = {"num_chs": chs, "reduction": reduction, "module": f"stages.{index}"}
        if info and info[-1]["reduction"] == reduction:
            info[-1] = entry
        else:
            info.append(entry)
    return info


def stage_blocks(stages: nn.Sequential) -> list[tuple[str, nn.Module]]:
    """``[("stages.<s>.<b>", block), ...]`` in execution order."""
    return [(f"stages.{s}.{b}", block) for s, stage in enumerate(stages) for b, block in enumerate(stage)]

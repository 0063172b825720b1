"""MobileNetV1 (Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks for
Mobile Vision Applications", arXiv:1704.04861), layer for layer timm's ``mobilenetv1_100``.

A 3x3 stride-2 stem and 13 depthwise-separable layers (3x3 depthwise → BN → ReLU6 → 1x1
pointwise → BN → ReLU6; Table 1 of the paper, the last depthwise at stride 1), global average
pooling and a linear classifier. The width multiplier α scales every layer's channels
(rounded to multiples of 8; exact for α ∈ {0.25, 0.5, 0.75, 1}). The stages group the layers by
resolution, as timm does.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from slimtorch.zoo._timm import _cfg, build
from slimtorch.zoo.blocks import (
    ConvNormAct,
    ZooModel,
    dense_conv,
    depthwise_conv,
    feature_points,
    make_divisible,
    pointwise_conv,
    stage_blocks,
)
from slimtorch.zoo.cards import ModelCard, Published, register_cards, timm_equivalent
from slimtorch.zoo.weights import conv_bn

__all__ = ["DepthwiseSeparable", "MobileNetV1"]

# (output channels, stride) of the depthwise-separable layers, one tuple per stage.
STAGES = (
    ((64, 1),),
    ((128, 2), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2),) + ((512, 1),) * 5,
    ((1024, 2), (1024, 1)),
)
STEM = 32


class DepthwiseSeparable(nn.Module):
    """k×k depthwise (stride) → BN → act, then 1x1 pointwise → BN → act; no residual."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, act: str, kernel_size: int = 3):
        super().__init__()
        self.conv_dw = ConvNormAct(depthwise_conv(in_chs, kernel_size, stride), in_chs, act)
        self.conv_pw = ConvNormAct(pointwise_conv(in_chs, out_chs), out_chs, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))


class MobileNetV1(ZooModel):
    weight_sources = ("timm",)

    def __init__(
        self,
        multiplier: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        act: str = "relu6",
    ):
        super().__init__()
        self.in_chans = in_chans
        in_chs = make_divisible(STEM * multiplier)
        self.stem = ConvNormAct(dense_conv(in_chans, in_chs, 3, 2), in_chs, act)
        stages = []
        for stage in STAGES:
            blocks = []
            for chs, stride in stage:
                out_chs = make_divisible(chs * multiplier)
                blocks.append(DepthwiseSeparable(in_chs, out_chs, stride, act))
                in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        stage_chs = [make_divisible(stage[-1][0] * multiplier) for stage in STAGES]
        self.feature_info = feature_points(stage_chs, [stage[0][1] for stage in STAGES], 2)
        self.build_head(in_chs, num_classes, drop_rate=drop_rate, global_pool=global_pool)
        self.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def source_prefix_map(self, source: str, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
        if source != "timm":
            return super().source_prefix_map(source, state_dict)
        prefixes = {**conv_bn("conv_stem", "bn1", "stem"), "classifier": "classifier"}
        for path, _ in stage_blocks(self.stages):
            src = "blocks" + path.removeprefix("stages")
            prefixes.update(conv_bn(f"{src}.conv_dw", f"{src}.bn1", f"{path}.conv_dw"))
            prefixes.update(conv_bn(f"{src}.conv_pw", f"{src}.bn2", f"{path}.conv_pw"))
        return prefixes


def _create(variant: str, multiplier: float, pretrained: bool = False, **kwargs: Any) -> MobileNetV1:
    return build(MobileNetV1, variant, pretrained, 5, multiplier=multiplier, **kwargs)


_PAPER = {"paper_ids": "arXiv:1704.04861", "paper_name": "MobileNets"}
default_cfgs = generate_default_cfgs({f"slim_mobilenetv1_{k}": _cfg(**_PAPER) for k in ("025", "050", "075", "100")})

_TABLE6 = "Howard et al. 2017, Table 6"
register_cards(
    {
        "slim_mobilenetv1_025": ModelCard(470_072, Published(_TABLE6, "0.5M", "41M", "conv+linear")),
        "slim_mobilenetv1_050": ModelCard(1_331_592, Published(_TABLE6, "1.3M", "149M", "conv+linear")),
        "slim_mobilenetv1_075": ModelCard(2_585_560, Published(_TABLE6, "2.6M", "325M", "conv+linear")),
        "slim_mobilenetv1_100": ModelCard(
            4_231_976, Published(_TABLE6, "4.2M", "569M", "conv+linear"), (timm_equivalent("mobilenetv1_100"),)
        ),
    }
)


@register_model
def slim_mobilenetv1_025(pretrained: bool = False, **kwargs: Any) -> MobileNetV1:
    return _create("slim_mobilenetv1_025", 0.25, pretrained, **kwargs)


@register_model
def slim_mobilenetv1_050(pretrained: bool = False, **kwargs: Any) -> MobileNetV1:
    return _create("slim_mobilenetv1_050", 0.5, pretrained, **kwargs)


@register_model
def slim_mobilenetv1_075(pretrained: bool = False, **kwargs: Any) -> MobileNetV1:
    return _create("slim_mobilenetv1_075", 0.75, pretrained, **kwargs)


@register_model
def slim_mobilenetv1_100(pretrained: bool = False, **kwargs: Any) -> MobileNetV1:
    return _create("slim_mobilenetv1_100", 1.0, pretrained, **kwargs)

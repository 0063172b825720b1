"""ShuffleNet (V1) (Zhang et al. 2018, "ShuffleNet: An Extremely Efficient Convolutional Neural
Network for Mobile Devices", arXiv:1707.01083). Neither timm nor torchvision has it.

A 3x3 stride-2 stem, a 3x3 stride-2 max pool, three stages of ShuffleNet units (4, 8, 4),
global average pooling and a linear classifier. A unit is: 1x1 group convolution (g groups;
dense in the very first unit, whose input is narrow) → BN → ReLU → 3x3 depthwise (stride) → BN
→ channel shuffle → 1x1 group convolution → BN; a stride-1 unit adds its input, a stride-2
unit concatenates a 3x3 stride-2 average pool of its input; then ReLU. The bottleneck is a
quarter of the unit's output width. The shuffle sits before the second group convolution (as
in the authors' reference implementation, megvii-model/ShuffleNet-Series), where convops folds
it into that convolution's input read (``grouped_pointwise_conv(..., shuffle_groups=g)``).

Widths: Table 1 of the paper gives the stage-2 width at 1x per group count (144, 200, 240, 272,
384 for g = 1, 2, 3, 4, 8; stages 3 and 4 double it); "ShuffleNet s×" scales it by s, rounded
to a multiple of 4g so that bottlenecks split into groups. The stem (24 at 1x) follows the
reference implementation's per-scale widths (12, 24, 24, 48 for 0.5x, 1x, 1.5x, 2x), rounded
up to a multiple of g.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from slimtorch.zoo._timm import _cfg, build
from slimtorch.zoo.blocks import (
    ConvNormAct,
    ZooModel,
    dense_conv,
    depthwise_conv,
    grouped_pointwise_conv,
    make_divisible,
)
from slimtorch.zoo.cards import ModelCard, Published, register_cards

__all__ = ["ShuffleNetV1", "ShuffleUnitV1", "shufflenetv1_widths"]

REPEATS = (4, 8, 4)
STAGE2_AT_1X = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
STEM = {0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}


def shufflenetv1_widths(groups: int, scale: float) -> dict[str, Any]:
    """``{"stem": int, "stages": [int, int, int]}`` for ``groups`` and ``scale`` (the s in s×)."""
    if groups not in STAGE2_AT_1X or scale not in STEM:
        raise ValueError(f"groups, scale: expected groups in {sorted(STAGE2_AT_1X)} and scale in {sorted(STEM)}")
    stage2 = make_divisible(STAGE2_AT_1X[groups] * scale, 4 * groups)
    return {"stem": make_divisible(STEM[scale], groups), "stages": [stage2, 2 * stage2, 4 * stage2]}


class ShuffleUnitV1(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, groups: int, stride: int, dense_first: bool = False):
        super().__init__()
        branch = out_chs - in_chs if stride > 1 else out_chs
        mid = out_chs // 4
        for name, value in (("bottleneck", mid), ("branch output", branch), ("input", in_chs)):
            if value % groups or value <= 0:
                raise ValueError(f"widths: {name} width {value} must be a positive multiple of groups ({groups})")
        self.stride = stride
        self.conv_pw = ConvNormAct(grouped_pointwise_conv(in_chs, mid, 1 if dense_first else groups), mid, "relu")
        self.conv_dw = ConvNormAct(depthwise_conv(mid, 3, stride), mid)
        shuffle = groups if groups > 1 else None
        self.conv_pwl = ConvNormAct(grouped_pointwise_conv(mid, branch, groups, shuffle_groups=shuffle), branch)
        self.shortcut = nn.AvgPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.conv_pwl(self.conv_dw(self.conv_pw(x)))
        out = torch.cat((self.shortcut(x), main), dim=1) if self.stride > 1 else x + main
        return self.act(out)


class ShuffleNetV1(ZooModel):
    feature_units: ClassVar[tuple[str, ...]] = ("stem", "stem_pool", "stages")

    def __init__(
        self,
        groups: int = 3,
        scale: float = 1.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        super().__init__()
        self.in_chans = in_chans
        widths = shufflenetv1_widths(groups, scale)
        in_chs = widths["stem"]
        self.stem = ConvNormAct(dense_conv(in_chans, in_chs, 3, 2), in_chs, "relu")
        self.stem_pool = nn.MaxPool2d(3, 2, 1)
        stages = []
        for index, (out_chs, repeats) in enumerate(zip(widths["stages"], REPEATS, strict=True)):
            units = []
            for i in range(repeats):
                units.append(ShuffleUnitV1(in_chs, out_chs, groups, 2 if i == 0 else 1, index == 0 and i == 0))
                in_chs = out_chs
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [
            {"num_chs": widths["stem"], "reduction": 2, "module": "stem"},
            {"num_chs": widths["stem"], "reduction": 4, "module": "stem_pool"},
        ] + [{"num_chs": c, "reduction": 8 * 2**i, "module": f"stages.{i}"} for i, c in enumerate(widths["stages"])]
        self.build_head(in_chs, num_classes, drop_rate=drop_rate, global_pool=global_pool)
        self.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem_pool(self.stem(x)))


_PAPER = {"paper_ids": "arXiv:1707.01083", "paper_name": "ShuffleNet"}
_SCALES = {"050": 0.5, "100": 1.0, "150": 1.5, "200": 2.0}
_GROUPS = (1, 2, 3, 4, 8)
_NAMES = {f"slim_shufflenetv1_g{g}_{s}": (g, scale) for g in _GROUPS for s, scale in _SCALES.items()}
default_cfgs = generate_default_cfgs({name: _cfg(**_PAPER) for name in _NAMES})

# Published: Table 1 of the paper (1x; its MFLOPs are multiply-adds), Table 2 (0.5x: about 38M;
# for g = 2 and 4 the paper's 0.5x widths (100, 136) do not split into groups and our rounded
# ones cost 41M, so that figure is not claimed), and the authors' reference implementation for
# g = 3 and 8 (megvii-model/ShuffleNet-Series).
_T1, _T2, _REF = (
    "Zhang et al. 2018, Table 1",
    "Zhang et al. 2018, Table 2",
    "megvii-model/ShuffleNet-Series, ShuffleNetV1",
)
_PUBLISHED = {
    (1, 1.0): Published(_T1, None, "143M"),
    (2, 1.0): Published(_T1, None, "140M"),
    (3, 1.0): Published(_T1, "1.9M", "137M"),
    (4, 1.0): Published(_T1, None, "133M"),
    (8, 1.0): Published(_T1, "2.4M", "137M"),
    (3, 0.5): Published(_REF, "0.7M", "38M"),
    (8, 0.5): Published(_REF, "1.0M", "40M"),
    (3, 1.5): Published(_REF, "3.4M", "292M"),
    (8, 1.5): Published(_REF, "4.3M", "290M"),
    (3, 2.0): Published(_REF, "5.4M", "524M"),
    (8, 2.0): Published(_REF, "6.5M", "522M"),
    (1, 0.5): Published(_T2, None, "38M"),
}
# Exact parameter counts (1000 classes).
_PARAMS = {
    "slim_shufflenetv1_g1_050": 534_484,
    "slim_shufflenetv1_g1_100": 1_531_936,
    "slim_shufflenetv1_g1_150": 2_993_032,
    "slim_shufflenetv1_g1_200": 4_918_744,
    "slim_shufflenetv1_g2_050": 678_520,
    "slim_shufflenetv1_g2_100": 1_733_848,
    "slim_shufflenetv1_g2_150": 3_342_000,
    "slim_shufflenetv1_g2_200": 5_257_896,
    "slim_shufflenetv1_g3_050": 718_324,
    "slim_shufflenetv1_g3_100": 1_865_728,
    "slim_shufflenetv1_g3_150": 3_442_168,
    "slim_shufflenetv1_g3_200": 5_450_776,
    "slim_shufflenetv1_g4_050": 835_984,
    "slim_shufflenetv1_g4_100": 1_968_344,
    "slim_shufflenetv1_g4_150": 3_679_712,
    "slim_shufflenetv1_g4_200": 5_593_528,
    "slim_shufflenetv1_g8_050": 1_011_448,
    "slim_shufflenetv1_g8_100": 2_434_768,
    "slim_shufflenetv1_g8_150": 4_269_952,
    "slim_shufflenetv1_g8_200": 6_522_232,
}
register_cards({name: ModelCard(_PARAMS[name], _PUBLISHED.get(key)) for name, key in _NAMES.items()})


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    groups, scale = _NAMES[variant]
    return build(ShuffleNetV1, variant, pretrained, 5, groups=groups, scale=scale, **kwargs)


@register_model
def slim_shufflenetv1_g1_050(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g1_050", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g1_100(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g1_100", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g1_150(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g1_150", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g1_200(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g1_200", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g2_050(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g2_050", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g2_100(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g2_100", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g2_150(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g2_150", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g2_200(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g2_200", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g3_050(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g3_050", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g3_100(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g3_100", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g3_150(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g3_150", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g3_200(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g3_200", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g4_050(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g4_050", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g4_100(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g4_100", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g4_150(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g4_150", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g4_200(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g4_200", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g8_050(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g8_050", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g8_100(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g8_100", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g8_150(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g8_150", pretrained, **kwargs)


@register_model
def slim_shufflenetv1_g8_200(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV1:
    return _create("slim_shufflenetv1_g8_200", pretrained, **kwargs)

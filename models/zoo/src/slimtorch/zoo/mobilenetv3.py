"""MobileNetV3 Large and Small (Howard et al. 2019, "Searching for MobileNetV3",
arXiv:1905.02244), layer for layer torchvision's ``mobilenet_v3_large/small`` and timm's
``mobilenetv3_large_100/small_100``.

A 3x3 stride-2 hardswish stem, inverted residual blocks (Tables 1 and 2 of the paper: kernel,
expanded width, output width, squeeze-excite, ReLU or hardswish, stride; SE squeezes to
``make_divisible(expanded/4, 8)`` with a hardsigmoid gate, after the depthwise convolution), a
1x1 convolution (960 / 576 channels), global average pooling, a 1280 / 1024-wide hardswish
pre-logits layer and the classifier. BatchNorm epsilon 1e-3 as torchvision and the paper's
TensorFlow models (timm uses 1e-5: :func:`slimtorch.zoo.load_timm_weights` adopts it).
Blocks are grouped in stages by output width, as timm does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from slimtorch.zoo._timm import _cfg, build
from slimtorch.zoo.blocks import (
    ConvNormAct,
    InvertedResidual,
    ZooModel,
    dense_conv,
    feature_points,
    make_divisible,
    make_pool,
    per_position,
    pointwise_conv,
    stage_blocks,
)
from slimtorch.zoo.cards import ModelCard, Published, register_cards, timm_equivalent, torchvision_equivalent
from slimtorch.zoo.mobilenetv2 import timm_block_prefixes
from slimtorch.zoo.weights import conv_bn

__all__ = ["LARGE", "SMALL", "MobileNetV3"]

R, H = "relu", "hardswish"
# Per stage, per block: (kernel, expanded width, output width, squeeze-excite, activation, stride).
LARGE = {
    "stem": 16,
    "stages": (
        ((3, 16, 16, False, R, 1),),
        ((3, 64, 24, False, R, 2), (3, 72, 24, False, R, 1)),
        ((5, 72, 40, True, R, 2), (5, 120, 40, True, R, 1), (5, 120, 40, True, R, 1)),
        ((3, 240, 80, False, H, 2), (3, 200, 80, False, H, 1), (3, 184, 80, False, H, 1), (3, 184, 80, False, H, 1)),
        ((3, 480, 112, True, H, 1), (3, 672, 112, True, H, 1)),
        ((5, 672, 160, True, H, 2), (5, 960, 160, True, H, 1), (5, 960, 160, True, H, 1)),
    ),
    "final": 960,
    "head": 1280,
}
SMALL = {
    "stem": 16,
    "stages": (
        ((3, 16, 16, True, R, 2),),
        ((3, 72, 24, False, R, 2), (3, 88, 24, False, R, 1)),
        ((5, 96, 40, True, H, 2), (5, 240, 40, True, H, 1), (5, 240, 40, True, H, 1)),
        ((5, 120, 48, True, H, 1), (5, 144, 48, True, H, 1)),
        ((5, 288, 96, True, H, 2), (5, 576, 96, True, H, 1), (5, 576, 96, True, H, 1)),
    ),
    "final": 576,
    "head": 1024,
}
BN_EPS = 1e-3


class MobileNetV3(ZooModel):
    weight_sources = ("torchvision", "timm")
    source_bn_eps: ClassVar[dict[str, float]] = {"torchvision": BN_EPS, "timm": 1e-5}
    feature_units: ClassVar[tuple[str, ...]] = ("stem", "stages", "final_conv")

    def __init__(
        self,
        arch: dict[str, Any],
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        global_pool: str = "avg",
        bn_eps: float = BN_EPS,
    ):
        super().__init__()
        self.in_chans = in_chans
        in_chs = arch["stem"]
        self.stem = ConvNormAct(dense_conv(in_chans, in_chs, 3, 2), in_chs, H, bn_eps=bn_eps)
        stages = []
        for stage in arch["stages"]:
            blocks = []
            for k, mid, out, se, act, stride in stage:
                se_chs = make_divisible(mid // 4) if se else 0
                expand = mid != in_chs
                blocks.append(
                    InvertedResidual(in_chs, mid, out, k, stride, act=act, se_chs=se_chs, expand=expand, bn_eps=bn_eps)
                )
                in_chs = out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        final = arch["final"]
        self.final_conv = ConvNormAct(pointwise_conv(in_chs, final), final, H, bn_eps=bn_eps)
        stage_chs = [stage[-1][2] for stage in arch["stages"]]
        info = feature_points(stage_chs, [stage[0][5] for stage in arch["stages"]], 2)
        info[-1] = {**info[-1], "num_chs": final, "module": "final_conv"}
        if info[0]["reduction"] > 2:
            info.insert(0, {"num_chs": arch["stem"], "reduction": 2, "module": "stem"})
        self.feature_info = info
        # the pre-logits layer, after the pooling (timm's conv_head): sized for the pooled width
        self.head_fc = nn.Linear(final * make_pool(global_pool).feat_mult(), arch["head"])
        self.head_act = nn.Hardswish()
        self.build_head(final, num_classes, drop_rate=drop_rate, global_pool=global_pool)
        self.init_weights()

    def head_width(self) -> int:
        if not isinstance(self.head_fc, nn.Linear):  # removed by prune_intermediate_layers
            return super().head_width()
        pooled = self.num_features * self.global_pool.feat_mult()
        if pooled != self.head_fc.in_features:
            raise ValueError(
                f"global_pool: the pre-logits layer takes {self.head_fc.in_features} features, "
                f"pooling {self.global_pool.pool_type!r} gives {pooled}"
            )
        return self.head_fc.out_features

    def remove_pre_logits(self) -> None:
        self.head_fc, self.head_act = nn.Identity(), nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_act(per_position(self.head_fc, x) if self.global_pool.is_identity() else self.head_fc(x))
        return x if pre_logits else self.classify(self.head_drop(x))

    def source_prefix_map(self, source: str, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
        blocks = stage_blocks(self.stages)
        if source == "torchvision":  # features.0 stem, features.1..n blocks, features.n+1 final conv
            prefixes = conv_bn("features.0.0", "features.0.1", "stem")
            for i, (path, block) in enumerate(blocks, start=1):
                parts = [name for name in ("conv_pw", "conv_dw", "se", "conv_pwl") if getattr(block, name) is not None]
                for j, name in enumerate(parts):
                    src = f"features.{i}.block.{j}"
                    if name == "se":
                        prefixes.update(
                            {f"{src}.fc1": f"{path}.se.conv_reduce", f"{src}.fc2": f"{path}.se.conv_expand"}
                        )
                    else:
                        prefixes.update(conv_bn(f"{src}.0", f"{src}.1", f"{path}.{name}"))
            last = len(blocks) + 1
            prefixes.update(conv_bn(f"features.{last}.0", f"features.{last}.1", "final_conv"))
            return {**prefixes, "classifier.0": "head_fc", "classifier.3": "classifier"}
        if source == "timm":  # blocks.0..n-1 as ours, blocks.n.0 the final ConvBnAct, conv_head a 1x1 conv
            prefixes = conv_bn("conv_stem", "bn1", "stem")
            for path, block in blocks:
                prefixes.update(timm_block_prefixes(path, block))
            final = f"blocks.{len(self.stages)}.0"
            prefixes.update(conv_bn(f"{final}.conv", f"{final}.bn1", "final_conv"))
            return {**prefixes, "conv_head": "head_fc", "classifier": "classifier"}
        return super().source_prefix_map(source, state_dict)


def _create(variant: str, arch: dict[str, Any], pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    return build(MobileNetV3, variant, pretrained, 5, arch=arch, **kwargs)


_PAPER = {"paper_ids": "arXiv:1905.02244", "paper_name": "Searching for MobileNetV3"}
default_cfgs = generate_default_cfgs(
    {"slim_mobilenetv3_large_100": _cfg(**_PAPER), "slim_mobilenetv3_small_100": _cfg(**_PAPER)}
)

_TABLE3 = "Howard et al. 2019, Table 3"
register_cards(
    {
        "slim_mobilenetv3_large_100": ModelCard(
            5_483_032,
            Published(_TABLE3, "5.4M", "219M", "conv+linear"),
            (torchvision_equivalent("mobilenet_v3_large"), timm_equivalent("mobilenetv3_large_100")),
        ),
        "slim_mobilenetv3_small_100": ModelCard(
            2_542_856,
            Published(_TABLE3, "2.5M", "56M", "conv+linear"),
            (torchvision_equivalent("mobilenet_v3_small"), timm_equivalent("mobilenetv3_small_100")),
        ),
    }
)


@register_model
def slim_mobilenetv3_large_100(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    return _create("slim_mobilenetv3_large_100", LARGE, pretrained, **kwargs)


@register_model
def slim_mobilenetv3_small_100(pretrained: bool = False, **kwargs: Any) -> MobileNetV3:
    return _create("slim_mobilenetv3_small_100", SMALL, pretrained, **kwargs)

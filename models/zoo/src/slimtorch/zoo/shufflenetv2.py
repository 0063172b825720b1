"""ShuffleNetV2 (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design", arXiv:1807.11164), layer for layer torchvision's ``shufflenet_v2_x*``.

A 3x3 stride-2 stem and a 3x3 stride-2 max pool, three stages of units (4, 8, 4), a 1x1
convolution, global average pooling and a linear classifier. A stride-1 unit splits its input
in two halves, keeps the first and sends the second through 1x1 → BN → ReLU → 3x3 depthwise →
BN → 1x1 → BN → ReLU (the main branch); a stride-2 unit sends the whole input through the main
branch and a projection branch (3x3 depthwise stride 2 → BN → 1x1 → BN → ReLU). Both
concatenate [kept or projected half, main branch] and shuffle the channels in two groups.

**Widths** (the data structure a channel-pruning tool produces)::

    {"stem": 24, "stages": [{"out": 116, "mid": [58, 58, 58, 58]}, ...], "head": 1024}

``out`` is shared by a stage's units (the kept halves tie it), ``mid`` is each unit's
main-branch width (free; ``out/2`` in the paper).
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
    pointwise_conv,
    pruned_width,
    shuffle_concat_layer,
    stage_blocks,
)
from slimtorch.zoo.cards import ModelCard, Published, register_cards, torchvision_equivalent
from slimtorch.zoo.weights import conv_bn

__all__ = ["ShuffleNetV2", "ShuffleUnitV2", "pruned_shufflenetv2_widths", "shufflenetv2_widths"]

REPEATS = (4, 8, 4)
# Stage output widths and head width per multiplier (Table 5 of the paper).
WIDTHS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024), 1.5: (176, 352, 704, 1024), 2.0: (244, 488, 976, 2048)}
STEM = 24


def shufflenetv2_widths(multiplier: float = 1.0) -> dict[str, Any]:
    """The paper's widths for multiplier 0.5, 1.0, 1.5 or 2.0."""
    if multiplier not in WIDTHS:
        raise ValueError(f"multiplier: expected one of {sorted(WIDTHS)}, got {multiplier}")
    *outs, head = WIDTHS[multiplier]
    return {
        "stem": STEM,
        "stages": [{"out": c, "mid": [c // 2] * n} for c, n in zip(outs, REPEATS, strict=True)],
        "head": head,
    }


def pruned_shufflenetv2_widths(widths: dict[str, Any], ratio: float) -> dict[str, Any]:
    """``widths`` with ``ratio`` of every main-branch width and of the head removed."""
    stages = [{"out": st["out"], "mid": [pruned_width(m, ratio) for m in st["mid"]]} for st in widths["stages"]]
    return {"stem": widths["stem"], "stages": stages, "head": pruned_width(widths["head"], ratio)}


class ShuffleUnitV2(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, mid_chs: int, stride: int):
        super().__init__()
        if out_chs % 2:
            raise ValueError(f"widths: a ShuffleNetV2 stage width must be even, got {out_chs}")
        if stride == 1 and in_chs != out_chs:
            raise ValueError(f"widths: a stride-1 unit needs in == out, got {in_chs} -> {out_chs}")
        half = out_chs // 2
        self.stride = stride
        if stride > 1:
            self.proj_dw = ConvNormAct(depthwise_conv(in_chs, 3, stride), in_chs)
            self.proj_pw = ConvNormAct(pointwise_conv(in_chs, half), half, "relu")
        main_in = in_chs if stride > 1 else half
        self.conv_pw = ConvNormAct(pointwise_conv(main_in, mid_chs), mid_chs, "relu")
        self.conv_dw = ConvNormAct(depthwise_conv(mid_chs, 3, stride), mid_chs)
        self.conv_pwl = ConvNormAct(pointwise_conv(mid_chs, half), half, "relu")
        self.shuffle = shuffle_concat_layer(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            kept, main = self.proj_pw(self.proj_dw(x)), x
        else:
            kept, main = x.chunk(2, dim=1)
        return self.shuffle(kept, self.conv_pwl(self.conv_dw(self.conv_pw(main))))


class ShuffleNetV2(ZooModel):
    weight_sources = ("torchvision",)
    feature_units: ClassVar[tuple[str, ...]] = ("stem", "stem_pool", "stages", "final_conv")

    def __init__(
        self,
        widths: dict[str, Any],
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        super().__init__()
        self.in_chans = in_chans
        if [len(st["mid"]) for st in widths["stages"]] != list(REPEATS):
            raise ValueError(f"widths: expected {REPEATS} mid widths per stage, got {widths['stages']}")
        in_chs = widths["stem"]
        self.stem = ConvNormAct(dense_conv(in_chans, in_chs, 3, 2), in_chs, "relu")
        self.stem_pool = nn.MaxPool2d(3, 2, 1)
        stages = []
        for stage in widths["stages"]:
            units = []
            for i, mid in enumerate(stage["mid"]):
                units.append(ShuffleUnitV2(in_chs, stage["out"], mid, 2 if i == 0 else 1))
                in_chs = stage["out"]
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.final_conv = ConvNormAct(pointwise_conv(in_chs, widths["head"]), widths["head"], "relu")
        self.feature_info = [
            {"num_chs": widths["stem"], "reduction": 2, "module": "stem"},
            {"num_chs": widths["stem"], "reduction": 4, "module": "stem_pool"},
        ] + [
            {"num_chs": st["out"], "reduction": 8 * 2**i, "module": f"stages.{i}"}
            for i, st in enumerate(widths["stages"])
        ]
        self.build_head(widths["head"], num_classes, drop_rate=drop_rate, global_pool=global_pool)
        self.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.stages(self.stem_pool(self.stem(x))))

    def source_prefix_map(self, source: str, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
        if source != "torchvision":
            return super().source_prefix_map(source, state_dict)
        prefixes = {**conv_bn("conv1.0", "conv1.1", "stem"), **conv_bn("conv5.0", "conv5.1", "final_conv")}
        branches = {"branch1.0": "proj_dw", "branch1.2": "proj_pw", "branch2.0": "conv_pw"}
        branches |= {"branch2.3": "conv_dw", "branch2.5": "conv_pwl"}
        for path, _ in stage_blocks(self.stages):
            _, s, b = path.split(".")
            for conv, ours in branches.items():
                branch, index = conv.split(".")
                src = f"stage{int(s) + 2}.{b}.{branch}"
                prefixes.update(conv_bn(f"{src}.{index}", f"{src}.{int(index) + 1}", f"{path}.{ours}"))
        return {**prefixes, "fc": "classifier"}


def _create(variant: str, widths: dict[str, Any], pretrained: bool = False, **kwargs: Any) -> ShuffleNetV2:
    return build(ShuffleNetV2, variant, pretrained, 5, widths=widths, **kwargs)


_PAPER = {"paper_ids": "arXiv:1807.11164", "paper_name": "ShuffleNet V2"}
_NAMES = {"x0_5": 0.5, "x1_0": 1.0, "x1_5": 1.5, "x2_0": 2.0}
default_cfgs = generate_default_cfgs(
    {f"slim_shufflenetv2_{k}": _cfg(**_PAPER) for k in _NAMES}
    | {f"slim_shufflenetv2_x1_0_pruned{p}": _cfg(**_PAPER) for p in (25, 50)}
)

_TABLE = "Ma et al. 2018, Table 5"
register_cards(
    {
        "slim_shufflenetv2_x0_5": ModelCard(
            1_366_792, Published(_TABLE, "1.4M", "41M"), (torchvision_equivalent("shufflenet_v2_x0_5"),)
        ),
        "slim_shufflenetv2_x1_0": ModelCard(
            2_278_604, Published(_TABLE, "2.3M", "146M"), (torchvision_equivalent("shufflenet_v2_x1_0"),)
        ),
        "slim_shufflenetv2_x1_5": ModelCard(
            3_503_624, Published(_TABLE, "3.5M", "299M"), (torchvision_equivalent("shufflenet_v2_x1_5"),)
        ),
        "slim_shufflenetv2_x2_0": ModelCard(
            7_393_996, Published(_TABLE, "7.4M", "591M"), (torchvision_equivalent("shufflenet_v2_x2_0"),)
        ),
        "slim_shufflenetv2_x1_0_pruned25": ModelCard(1_732_904),
        "slim_shufflenetv2_x1_0_pruned50": ModelCard(1_184_184),
    }
)


@register_model
def slim_shufflenetv2_x0_5(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV2:
    return _create("slim_shufflenetv2_x0_5", shufflenetv2_widths(0.5), pretrained, **kwargs)


@register_model
def slim_shufflenetv2_x1_0(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV2:
    return _create("slim_shufflenetv2_x1_0", shufflenetv2_widths(1.0), pretrained, **kwargs)


@register_model
def slim_shufflenetv2_x1_5(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV2:
    return _create("slim_shufflenetv2_x1_5", shufflenetv2_widths(1.5), pretrained, **kwargs)


@register_model
def slim_shufflenetv2_x2_0(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV2:
    return _create("slim_shufflenetv2_x2_0", shufflenetv2_widths(2.0), pretrained, **kwargs)


@register_model
def slim_shufflenetv2_x1_0_pruned25(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV2:
    widths = pruned_shufflenetv2_widths(shufflenetv2_widths(1.0), 0.25)
    return _create("slim_shufflenetv2_x1_0_pruned25", widths, pretrained, **kwargs)


@register_model
def slim_shufflenetv2_x1_0_pruned50(pretrained: bool = False, **kwargs: Any) -> ShuffleNetV2:
    widths = pruned_shufflenetv2_widths(shufflenetv2_widths(1.0), 0.5)
    return _create("slim_shufflenetv2_x1_0_pruned50", widths, pretrained, **kwargs)

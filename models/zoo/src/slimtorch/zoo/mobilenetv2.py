"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
arXiv:1801.04381), layer for layer torchvision's and timm's ``mobilenet_v2``.

A 3x3 stride-2 stem, seven stages of inverted residual blocks (Table 2 of the paper: expansion
t, output channels c, repeats n, first stride s), a 1x1 convolution to 1280 channels, global
average pooling and a linear classifier. ReLU6 throughout, none after the projections.

**Widths** are a plain data structure, the one a channel-pruning tool produces::

    {"stem": 32,
     "stages": [{"out": 16, "mid": [32]}, {"out": 24, "mid": [96, 144]}, ...],   # per block
     "head": 1280}

``out`` is shared by a stage's blocks (their residual additions tie it), ``mid`` is each
block's expanded width (free), the first block has no expand convolution so its ``mid`` is
the stem width. :func:`mobilenetv2_widths` gives the paper's widths for a width multiplier
(torchvision's rounding: multiples of 8, never 10% below); :func:`pruned_mobilenetv2_widths`
removes a fraction of every free width (the ``_pruned25`` / ``_pruned50`` architectures).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from timm.models import generate_default_cfgs, register_model

from slimtorch.zoo._timm import _cfg, build
from slimtorch.zoo.blocks import (
    ConvNormAct,
    InvertedResidual,
    ZooModel,
    dense_conv,
    feature_points,
    make_divisible,
    pointwise_conv,
    pruned_width,
    stage_blocks,
)
from slimtorch.zoo.cards import ModelCard, Published, register_cards, timm_equivalent, torchvision_equivalent
from slimtorch.zoo.weights import conv_bn

__all__ = ["MobileNetV2", "mobilenetv2_widths", "pruned_mobilenetv2_widths", "timm_block_prefixes"]

# (expansion t, output channels c, repeats n, first stride s) per stage: Table 2 of the paper.
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM, HEAD = 32, 1280


def mobilenetv2_widths(multiplier: float = 1.0) -> dict[str, Any]:
    """The paper's widths scaled by ``multiplier`` (the head never shrinks below 1280)."""
    stem = make_divisible(STEM * multiplier)
    stages, in_chs = [], stem
    for t, c, n, _ in STAGES:
        out = make_divisible(c * multiplier)
        stages.append({"out": out, "mid": [in_chs * t] + [out * t] * (n - 1)})
        in_chs = out
    return {"stem": stem, "stages": stages, "head": make_divisible(HEAD * max(1.0, multiplier))}


def pruned_mobilenetv2_widths(widths: dict[str, Any], ratio: float) -> dict[str, Any]:
    """``widths`` with ``ratio`` of every expanded (``mid``) width and of the head removed;
    stem and stage outputs, tied by residual additions, stay."""
    stages = [
        {"out": stage["out"], "mid": [m if t == 1 else pruned_width(m, ratio) for m in stage["mid"]]}
        for stage, (t, *_) in zip(widths["stages"], STAGES, strict=True)
    ]
    return {"stem": widths["stem"], "stages": stages, "head": pruned_width(widths["head"], ratio)}


class MobileNetV2(ZooModel):
    weight_sources = ("torchvision", "timm")
    feature_units: ClassVar[tuple[str, ...]] = ("stem", "stages", "final_conv")

    def __init__(
        self,
        widths: dict[str, Any],
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        global_pool: str = "avg",
        act: str = "relu6",
    ):
        super().__init__()
        self.in_chans = in_chans
        if len(widths["stages"]) != len(STAGES):
            raise ValueError(f"widths: expected {len(STAGES)} stages, got {len(widths['stages'])}")
        self.stem = ConvNormAct(dense_conv(in_chans, widths["stem"], 3, 2), widths["stem"], act)
        stages, in_chs = [], widths["stem"]
        for index, ((t, _, n, stride), stage) in enumerate(zip(STAGES, widths["stages"], strict=True)):
            if len(stage["mid"]) != n:
                raise ValueError(f"widths: stage {index} needs {n} mid widths, got {stage['mid']}")
            blocks = []
            for i, mid in enumerate(stage["mid"]):
                s = stride if i == 0 else 1
                blocks.append(InvertedResidual(in_chs, mid, stage["out"], 3, s, act=act, expand=t != 1))
                in_chs = stage["out"]
            stages.append(torch.nn.Sequential(*blocks))
        self.stages = torch.nn.Sequential(*stages)
        self.final_conv = ConvNormAct(pointwise_conv(in_chs, widths["head"]), widths["head"], act)
        strides = [s for *_, s in STAGES]
        self.feature_info = feature_points([st["out"] for st in widths["stages"]], strides, 2)
        self.build_head(widths["head"], num_classes, drop_rate=drop_rate, global_pool=global_pool)
        self.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_conv(self.stages(self.stem(x)))

    def source_prefix_map(self, source: str, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
        blocks = stage_blocks(self.stages)
        if source == "torchvision":  # features.0 stem, features.1..n blocks, features.n+1 head conv
            prefixes = conv_bn("features.0.0", "features.0.1", "stem")
            for i, (path, block) in enumerate(blocks, start=1):
                convs = (["conv_pw"] if block.conv_pw is not None else []) + ["conv_dw"]
                for j, name in enumerate(convs):
                    prefixes.update(conv_bn(f"features.{i}.conv.{j}.0", f"features.{i}.conv.{j}.1", f"{path}.{name}"))
                j = len(convs)
                prefixes.update(conv_bn(f"features.{i}.conv.{j}", f"features.{i}.conv.{j + 1}", f"{path}.conv_pwl"))
            last = len(blocks) + 1
            prefixes.update(conv_bn(f"features.{last}.0", f"features.{last}.1", "final_conv"))
            return {**prefixes, "classifier.1": "classifier"}
        if source == "timm":
            prefixes = conv_bn("conv_stem", "bn1", "stem")
            for path, block in blocks:
                prefixes.update(timm_block_prefixes(path, block))
            return {**prefixes, **conv_bn("conv_head", "bn2", "final_conv"), "classifier": "classifier"}
        return super().source_prefix_map(source, state_dict)


def timm_block_prefixes(path: str, block: InvertedResidual) -> dict[str, str]:
    """timm's ``blocks.s.b`` of an efficientnet-builder model onto our ``stages.s.b``: a
    DepthwiseSeparableConv (no expand) or an InvertedResidual, either with an optional SE."""
    src = "blocks" + path.removeprefix("stages")
    if block.conv_pw is None:
        prefixes = {**conv_bn(f"{src}.conv_dw", f"{src}.bn1", f"{path}.conv_dw")}
        prefixes.update(conv_bn(f"{src}.conv_pw", f"{src}.bn2", f"{path}.conv_pwl"))
    else:
        prefixes = {**conv_bn(f"{src}.conv_pw", f"{src}.bn1", f"{path}.conv_pw")}
        prefixes.update(conv_bn(f"{src}.conv_dw", f"{src}.bn2", f"{path}.conv_dw"))
        prefixes.update(conv_bn(f"{src}.conv_pwl", f"{src}.bn3", f"{path}.conv_pwl"))
    for conv in ("conv_reduce", "conv_expand"):
        prefixes[f"{src}.se.{conv}"] = f"{path}.se.{conv}"
    return prefixes


def _create(variant: str, widths: dict[str, Any], pretrained: bool = False, **kwargs: Any) -> MobileNetV2:
    return build(MobileNetV2, variant, pretrained, 5, widths=widths, **kwargs)


_PAPER = {"paper_ids": "arXiv:1801.04381", "paper_name": "MobileNetV2: Inverted Residuals and Linear Bottlenecks"}
_MULTIPLIERS = {"035": 0.35, "050": 0.5, "075": 0.75, "100": 1.0, "140": 1.4}
default_cfgs = generate_default_cfgs(
    {f"slim_mobilenetv2_{k}": _cfg(**_PAPER) for k in _MULTIPLIERS}
    | {f"slim_mobilenetv2_100_pruned{p}": _cfg(**_PAPER) for p in (25, 50)}
)

# Published: the paper authors' TF-slim model zoo table (224x224), which counts convolution and linear
# parameters only (our BatchNorm adds 1-2%).
_TF_SLIM = "TF-slim MobileNetV2 checkpoints, tensorflow/models research/slim/nets/mobilenet"
register_cards(
    {
        "slim_mobilenetv2_035": ModelCard(
            1_677_128,
            Published(_TF_SLIM, "1.66M", "59M", "conv+linear"),
            (torchvision_equivalent("mobilenet_v2", width_mult=0.35), timm_equivalent("mobilenetv2_035")),
        ),
        "slim_mobilenetv2_050": ModelCard(
            1_968_680,
            Published(_TF_SLIM, "1.95M", "97M", "conv+linear"),
            (torchvision_equivalent("mobilenet_v2", width_mult=0.5), timm_equivalent("mobilenetv2_050")),
        ),
        "slim_mobilenetv2_075": ModelCard(
            2_636_424,
            Published(_TF_SLIM, "2.61M", "209M", "conv+linear"),
            (torchvision_equivalent("mobilenet_v2", width_mult=0.75), timm_equivalent("mobilenetv2_075")),
        ),
        "slim_mobilenetv2_100": ModelCard(
            3_504_872,
            Published(_TF_SLIM, "3.47M", "300M", "conv+linear"),
            (torchvision_equivalent("mobilenet_v2", width_mult=1.0), timm_equivalent("mobilenetv2_100")),
        ),
        "slim_mobilenetv2_140": ModelCard(
            6_108_776,
            Published(_TF_SLIM, "6.06M", "582M", "conv+linear"),
            (torchvision_equivalent("mobilenet_v2", width_mult=1.4), timm_equivalent("mobilenetv2_140")),
        ),
        "slim_mobilenetv2_100_pruned25": ModelCard(2_630_624),
        "slim_mobilenetv2_100_pruned50": ModelCard(1_755_336),
    }
)


@register_model
def slim_mobilenetv2_035(pretrained: bool = False, **kwargs: Any) -> MobileNetV2:
    return _create("slim_mobilenetv2_035", mobilenetv2_widths(0.35), pretrained, **kwargs)


@register_model
def slim_mobilenetv2_050(pretrained: bool = False, **kwargs: Any) -> MobileNetV2:
    return _create("slim_mobilenetv2_050", mobilenetv2_widths(0.5), pretrained, **kwargs)


@register_model
def slim_mobilenetv2_075(pretrained: bool = False, **kwargs: Any) -> MobileNetV2:
    return _create("slim_mobilenetv2_075", mobilenetv2_widths(0.75), pretrained, **kwargs)


@register_model
def slim_mobilenetv2_100(pretrained: bool = False, **kwargs: Any) -> MobileNetV2:
    return _create("slim_mobilenetv2_100", mobilenetv2_widths(1.0), pretrained, **kwargs)


@register_model
def slim_mobilenetv2_140(pretrained: bool = False, **kwargs: Any) -> MobileNetV2:
    return _create("slim_mobilenetv2_140", mobilenetv2_widths(1.4), pretrained, **kwargs)


@register_model
def slim_mobilenetv2_100_pruned25(pretrained: bool = False, **kwargs: Any) -> MobileNetV2:
    widths = pruned_mobilenetv2_widths(mobilenetv2_widths(1.0), 0.25)
    return _create("slim_mobilenetv2_100_pruned25", widths, pretrained, **kwargs)


@register_model
def slim_mobilenetv2_100_pruned50(pretrained: bool = False, **kwargs: Any) -> MobileNetV2:
    widths = pruned_mobilenetv2_widths(mobilenetv2_widths(1.0), 0.5)
    return _create("slim_mobilenetv2_100_pruned50", widths, pretrained, **kwargs)

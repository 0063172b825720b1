"""Bi-Real Net (Liu et al. 2018, "Bi-Real Net: Enhancing the Performance of 1-bit CNNs With Improved
Representational Capability and Advanced Training Algorithm", arXiv:1808.00278), the 18-layer
ResNet-style network of the paper, as its authors' code builds it (liuzechun/Bi-Real-net).

Every block is ONE binary 3x3 convolution with its own real-valued shortcut (the paper's point:
the real activations before the sign reach the next block, one shortcut per binary conv):

    out = BN(BinaryConv3x3(sign(x))) + shortcut(x)
    shortcut = identity, or AvgPool 2x2 (stride 2, ceil mode) → real 1x1 conv → BN where the
               block halves the resolution or changes the width

The binary convolution is :class:`slimtorch.quant.binary.BinaryActivationConv2d` with Bi-Real's
ApproxSign gradient (``ste="approx"``), weights α·sign(W) (α = mean |W| per output channel, the
scale of the paper's magnitude-aware weights; the weight gradient is XNOR-Net's
∂W̃/∂W = 1/n + α·1{|W| ≤ 1}, not the paper's magnitude-aware one) and no activation scaling
(Bi-Real has no β). Real-valued, as in
the paper: the 7x7 stem (conv → BN, no ReLU) and its 3x3 max pool, the 1x1 downsample convs, the
classifier. Stages of 4 blocks at widths 64, 128, 256, 512 (strides 1, 2, 2, 2): 16 binary convs.

The parameters are exactly torchvision ResNet-18's (each basic block's two 3x3 convs are two
blocks here, a projection is the same 1x1 conv + BN), and a ResNet-18 checkpoint loads
(``source="torchvision"``): Bi-Real trains from a real-valued network. For deployment,
``binarize_(model, BinarizeConfig(freeze=True))`` packs the 16 binary convs (32 weights per int32)
and they run through the xnor-popcount kernels (:mod:`slimtorch.quant.xnor_mm`).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import register_notrace_module
from timm.models import generate_default_cfgs, register_model
from torch import nn

from slimtorch.quant.binary import BinaryActivationConv2d
from slimtorch.zoo._timm import _cfg, build
from slimtorch.zoo.blocks import ConvNormAct, ZooModel, dense_conv
from slimtorch.zoo.cards import ModelCard, register_cards
from slimtorch.zoo.weights import indices

__all__ = ["BiRealBlock", "BiRealNet"]

WIDTHS = (64, 128, 256, 512)
DEPTHS = {18: (4, 4, 4, 4)}  # binary convs per stage (ResNet-18's 2 basic blocks x 2 convs)

# timm's FX feature extraction keeps the binary conv whole (its forward checks its input, which a
# symbolic trace cannot see); torch.compile and torch.export trace into it.
register_notrace_module(BinaryActivationConv2d)


class BiRealBlock(nn.Module):
    """``bn(binary_conv(x)) + downsample(x)`` (module docstring)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv = BinaryActivationConv2d(in_chs, out_chs, 3, stride, 1, scale_activations=False, ste="approx")
        self.bn = nn.BatchNorm2d(out_chs)
        if stride != 1 or in_chs != out_chs:
            pool = nn.AvgPool2d(2, stride, ceil_mode=True) if stride != 1 else nn.Identity()
            self.downsample = nn.Sequential(pool, dense_conv(in_chs, out_chs, 1), nn.BatchNorm2d(out_chs))
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + self.downsample(x)


class BiRealNet(ZooModel):
    weight_sources = ("torchvision",)

    def __init__(
        self,
        depth: int = 18,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth: expected one of {sorted(DEPTHS)}, got {depth!r}")
        self.in_chans = in_chans
        self.stem = ConvNormAct(dense_conv(in_chans, WIDTHS[0], 7, 2), WIDTHS[0])  # conv → BN, no ReLU
        in_chs, stages = WIDTHS[0], []
        for index, (width, blocks) in enumerate(zip(WIDTHS, DEPTHS[depth], strict=True)):
            units: list[nn.Module] = [nn.MaxPool2d(3, 2, 1)] if index == 0 else []
            for i in range(blocks):
                units.append(BiRealBlock(in_chs, width, 2 if index > 0 and i == 0 else 1))
                in_chs = width
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [{"num_chs": WIDTHS[0], "reduction": 2, "module": "stem"}] + [
            {"num_chs": width, "reduction": 4 * 2**i, "module": f"stages.{i}"} for i, width in enumerate(WIDTHS)
        ]
        self.build_head(in_chs, num_classes, drop_rate=drop_rate, global_pool=global_pool)
        self.init_weights()

    def init_weights(self) -> None:
        """The zoo's initialisation, the binary convs' latent weights Kaiming-normal (fan-out) too."""
        super().init_weights()
        for module in self.modules():
            if isinstance(module, BinaryActivationConv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def source_prefix_map(self, source: str, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
        """torchvision ResNet-18: basic block ``layer{s}.{b}``'s conv1/bn1 → our block 2b of stage
        s − 1, conv2/bn2 → block 2b + 1; its ``downsample.0/1`` → our ``downsample.1/2``."""
        if source != "torchvision":
            return super().source_prefix_map(source, state_dict)
        prefixes = {"conv1": "stem.conv", "bn1": "stem.bn", "fc": "classifier"}
        pool = 1  # stages.0 starts with the max pool
        for s in range(4):
            offset = pool if s == 0 else 0
            for b in indices(state_dict, rf"layer{s + 1}\.(\d+)\."):
                for half in (0, 1):
                    ours = f"stages.{s}.{2 * b + half + offset}"
                    prefixes[f"layer{s + 1}.{b}.conv{half + 1}"] = f"{ours}.conv"
                    prefixes[f"layer{s + 1}.{b}.bn{half + 1}"] = f"{ours}.bn"
                prefixes[f"layer{s + 1}.{b}.downsample.0"] = f"stages.{s}.{2 * b + offset}.downsample.1"
                prefixes[f"layer{s + 1}.{b}.downsample.1"] = f"stages.{s}.{2 * b + offset}.downsample.2"
        return prefixes


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> BiRealNet:
    return build(BiRealNet, variant, pretrained, 5, **kwargs)


_PAPER = {"paper_ids": "arXiv:1808.00278", "paper_name": "Bi-Real Net"}
default_cfgs = generate_default_cfgs({"slim_birealnet18": _cfg(classifier="classifier", **_PAPER)})

# torchvision's resnet18 has the same parameters (and its weights load) but is not the same
# function (two-conv ReLU blocks), so it is not listed as an equivalent (whose logits would match).
register_cards({"slim_birealnet18": ModelCard(11_689_512)})


@register_model
def slim_birealnet18(pretrained: bool = False, **kwargs: Any) -> BiRealNet:
    return _create("slim_birealnet18", pretrained, depth=18, **kwargs)

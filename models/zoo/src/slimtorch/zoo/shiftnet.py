"""Shift networks (Wu et al. 2018, "Shift: A Zero FLOP, Zero Parameter Alternative to Spatial
Convolutions", arXiv:1711.08141): spatial convolutions replaced by a grouped shift between two
1x1 convolutions (the Conv-Shift-Conv "CSC" module), the shift and the second 1x1 convolution
being one fused ``shift_conv`` layer.

**ShiftResNet-20/56** (CIFAR, 32x32): the CIFAR ResNet (3x3 stem to 16 channels, three stages
of n = 3 / 9 blocks at widths 16, 32, 64, strides 1, 2, 2) with every basic block's two 3x3
convolutions replaced by 1x1 in→ε·out → BN → ReLU → shift 3x3 + 1x1 ε·out→out (stride) → BN,
plus the (1x1-projected where shapes change) input, then ReLU; the authors' CIFAR code
(alvinwan/shiftresnet-cifar). ε is the expansion rate; the registered models use ε = 6.

**ShiftNet-A** (ImageNet, 224x224): a 7x7/32 stride-2 stem, four stages of pre-activation CSC
blocks (BN → ReLU → 1x1 → BN → ReLU → shift + 1x1), widths 64, 128, 256, 512, depths 5, 6, 7, 3,
shift kernels 5, 5, 3, 3, expansions (first block, others) (4, 4), (4, 3), (3, 2), (2, 1); a
stage's first block halves the resolution and concatenates its branch with a 3x3 stride-2
average pool of its input; then BN → ReLU, global pooling, a linear classifier (4.1M
parameters, 1.4G multiply-adds as published). "ShiftNet-A style": the paper's appendix
places the shift before the second BatchNorm; here it sits right before the second 1x1
convolution so that the two fuse (same parameters and multiply-adds).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from slimtorch.zoo._timm import _cfg, _cifar_cfg, build
from slimtorch.zoo.blocks import ConvNormAct, ZooModel, dense_conv, pointwise_conv, shift_conv
from slimtorch.zoo.cards import ModelCard, Published, register_cards

__all__ = ["CSCBlock", "ShiftBasicBlock", "ShiftNetA", "ShiftResNet"]

CIFAR_WIDTHS = (16, 32, 64)
# (width, blocks, shift kernel, (first-block expansion, other expansion)) per ShiftNet-A stage.
SHIFTNET_A = ((64, 5, 5, (4, 4)), (128, 6, 5, (4, 3)), (256, 7, 3, (3, 2)), (512, 3, 3, (2, 1)))


class ShiftBasicBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: float):
        super().__init__()
        mid = int(out_chs * expansion)
        self.conv1 = ConvNormAct(pointwise_conv(in_chs, mid), mid, "relu")
        self.conv2 = ConvNormAct(shift_conv(mid, out_chs, 3, stride), out_chs)
        projected = stride != 1 or in_chs != out_chs
        self.shortcut = ConvNormAct(dense_conv(in_chs, out_chs, 1, stride), out_chs) if projected else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ShiftResNet(ZooModel):
    def __init__(
        self,
        depth: int = 20,
        expansion: float = 6.0,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        super().__init__()
        self.in_chans = in_chans
        if (depth - 2) % 6:
            raise ValueError(f"depth: a CIFAR ResNet has depth 6n + 2 (20, 56, 110), got {depth}")
        blocks = (depth - 2) // 6
        in_chs = CIFAR_WIDTHS[0]
        self.stem = ConvNormAct(dense_conv(in_chans, in_chs, 3), in_chs, "relu")
        stages = []
        for index, width in enumerate(CIFAR_WIDTHS):
            units = []
            for i in range(blocks):
                units.append(ShiftBasicBlock(in_chs, width, 2 if index > 0 and i == 0 else 1, expansion))
                in_chs = width
            stages.append(nn.Sequential(*units))
        self.stages = nn.Sequential(*stages)
        self.feature_info = [
            {"num_chs": c, "reduction": 2**i, "module": f"stages.{i}"} for i, c in enumerate(CIFAR_WIDTHS)
        ]
        self.build_head(in_chs, num_classes, drop_rate=drop_rate, global_pool=global_pool)
        self.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class CSCBlock(nn.Module):
    """Pre-activation Conv-Shift-Conv block of ShiftNet-A."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, kernel_size: int, expansion: float):
        super().__init__()
        self.downsample = stride > 1
        branch = out_chs - in_chs if self.downsample else out_chs
        if branch <= 0 or (not self.downsample and in_chs != out_chs):
            raise ValueError(f"widths: a CSC block cannot go from {in_chs} to {out_chs} channels at stride {stride}")
        mid = int(branch * expansion)
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.conv1 = pointwise_conv(in_chs, mid)
        self.norm2 = nn.BatchNorm2d(mid)
        self.act2 = nn.ReLU(inplace=True)
        self.conv2 = shift_conv(mid, branch, kernel_size, stride)
        self.shortcut = nn.AvgPool2d(3, stride, 1) if self.downsample else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act2(self.norm2(self.conv1(self.act1(self.norm1(x))))))
        return torch.cat((out, self.shortcut(x)), dim=1) if self.downsample else x + out


class ShiftNetA(ZooModel):
    feature_units: ClassVar[tuple[str, ...]] = ("stem", "stages", "final_norm", "final_act")
    post_is_norm: ClassVar[bool] = True  # the final BatchNorm + ReLU

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        self.in_chans = in_chans
        in_chs = 32
        self.stem = ConvNormAct(dense_conv(in_chans, in_chs, 7, 2), in_chs, norm=False)
        stages = []
        for width, depth, kernel, (first, other) in SHIFTNET_A:
            blocks = []
            for i in range(depth):
                blocks.append(CSCBlock(in_chs, width, 2 if i == 0 else 1, kernel, first if i == 0 else other))
                in_chs = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final_norm = nn.BatchNorm2d(in_chs)
        self.final_act = nn.ReLU(inplace=True)
        self.feature_info = [{"num_chs": 32, "reduction": 2, "module": "stem"}] + [
            {"num_chs": stage[0], "reduction": 4 * 2**i, "module": f"stages.{i}"} for i, stage in enumerate(SHIFTNET_A)
        ]
        self.build_head(in_chs, num_classes, drop_rate=drop_rate, global_pool=global_pool)
        self.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self.final_norm(self.stages(self.stem(x))))


_PAPER = {"paper_ids": "arXiv:1711.08141", "paper_name": "Shift: A Zero FLOP, Zero Parameter Alternative"}
default_cfgs = generate_default_cfgs(
    {
        "slim_shiftresnet20": _cifar_cfg(**_PAPER),
        "slim_shiftresnet56": _cifar_cfg(**_PAPER),
        "slim_shiftnet_a": _cfg(**_PAPER),
    }
)

_SHIFT = "Wu et al. 2018, ImageNet table"
_CIFAR = "alvinwan/shiftresnet-cifar README, CIFAR-10, a = 6c"
register_cards(
    {
        "slim_shiftresnet20": ModelCard(186_746, Published(_CIFAR, "0.19M")),
        "slim_shiftresnet56": ModelCard(583_226, Published(_CIFAR, "0.58M")),
        # The paper does not say what it counted; 4.1M matches our convolution and linear
        # parameters (4.16M), not all of them (4.19M with BatchNorm).
        "slim_shiftnet_a": ModelCard(4_188_680, Published(_SHIFT, "4.1M", "1.4G", "conv+linear")),
    }
)


@register_model
def slim_shiftresnet20(pretrained: bool = False, **kwargs: Any) -> ShiftResNet:
    return build(ShiftResNet, "slim_shiftresnet20", pretrained, 3, depth=20, **kwargs)


@register_model
def slim_shiftresnet56(pretrained: bool = False, **kwargs: Any) -> ShiftResNet:
    return build(ShiftResNet, "slim_shiftresnet56", pretrained, 3, depth=56, **kwargs)


@register_model
def slim_shiftnet_a(pretrained: bool = False, **kwargs: Any) -> ShiftNetA:
    return build(ShiftNetA, "slim_shiftnet_a", pretrained, 5, **kwargs)

"""SqueezeNet 1.0 and 1.1 (Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with 50x
fewer parameters and <0.5MB model size", arXiv:1602.07360), layer for layer torchvision's
``squeezenet1_0`` / ``squeezenet1_1``, and the paper's simple-bypass variant.

A stem convolution (7x7/96 in 1.0, 3x3/64 in 1.1, stride 2, no padding) and eight Fire
modules (1x1 squeeze → ReLU, then concatenated 1x1 and 3x3 expands → ReLU) with 3x3 stride-2
max pools (ceil mode) before fire2, fire4, fire8 (1.0) or fire2, fire4, fire6 (1.1); the
classifier is a 1x1 convolution to the classes → ReLU → global average pooling. No
BatchNorm, every convolution has a bias. The simple bypass adds a Fire module's input to its
output around fire3, fire5, fire7 and fire9 (Section 6 of the paper; no parameters).

**Widths**: ``{"stem": 96, "fires": [{"squeeze": 16, "expand1x1": 64, "expand3x3": 64}, ...]}``
(eight Fire modules; every width free except around a bypass, where the module's output
``expand1x1 + expand3x3`` must equal its input).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs, register_model
from torch import nn

from slimtorch.zoo._timm import _cfg, build
from slimtorch.zoo.blocks import POOL_TYPES, ConvNormAct, ZooModel, dense_conv, pointwise_conv, pruned_width
from slimtorch.zoo.cards import ModelCard, Published, register_cards, torchvision_equivalent
from slimtorch.zoo.weights import indices

__all__ = ["Fire", "SqueezeNet", "pruned_squeezenet_widths", "squeezenet_widths"]

# (squeeze, expand1x1, expand3x3) of fire2..fire9, the same in both versions (Table 1).
FIRES = ((16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128), (48, 192, 192), (48, 192, 192))
FIRES += ((64, 256, 256), (64, 256, 256))
# version -> (stem width, stem kernel, indices of the Fire modules a max pool precedes)
VERSIONS = {"1_0": (96, 7, (0, 3, 7)), "1_1": (64, 3, (0, 2, 4))}
BYPASSED = (1, 3, 5, 7)  # fire3, fire5, fire7, fire9


def squeezenet_widths(version: str = "1_0") -> dict[str, Any]:
    fires = [{"squeeze": s, "expand1x1": e1, "expand3x3": e3} for s, e1, e3 in FIRES]
    return {"stem": VERSIONS[version][0], "fires": fires}


def pruned_squeezenet_widths(widths: dict[str, Any], ratio: float) -> dict[str, Any]:
    """``widths`` with ``ratio`` of every squeeze and expand width removed (stem kept)."""
    fires = [{key: pruned_width(value, ratio) for key, value in fire.items()} for fire in widths["fires"]]
    return {"stem": widths["stem"], "fires": fires}


def _relu_conv(conv: nn.Module, channels: int) -> ConvNormAct:
    return ConvNormAct(conv, channels, "relu", norm=False)


class Fire(nn.Module):
    def __init__(self, in_chs: int, squeeze: int, expand1x1: int, expand3x3: int, bypass: bool = False):
        super().__init__()
        if bypass and expand1x1 + expand3x3 != in_chs:
            raise ValueError(f"widths: a bypassed Fire module needs expand1x1 + expand3x3 == in ({in_chs})")
        self.bypass = bypass
        self.out_chs = expand1x1 + expand3x3
        self.squeeze = _relu_conv(pointwise_conv(in_chs, squeeze, bias=True), squeeze)
        self.expand1x1 = _relu_conv(pointwise_conv(squeeze, expand1x1, bias=True), expand1x1)
        self.expand3x3 = _relu_conv(dense_conv(squeeze, expand3x3, 3, bias=True), expand3x3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        out = torch.cat((self.expand1x1(s), self.expand3x3(s)), dim=1)
        return out + x if self.bypass else out


class SqueezeNet(ZooModel):
    weight_sources = ("torchvision",)

    def __init__(
        self,
        version: str = "1_0",
        widths: dict[str, Any] | None = None,
        bypass: bool = False,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.5,
        global_pool: str = "avg",
    ):
        super().__init__()
        self.in_chans = in_chans
        if version not in VERSIONS:
            raise ValueError(f"version: expected one of {sorted(VERSIONS)}, got {version!r}")
        widths = widths or squeezenet_widths(version)
        if len(widths["fires"]) != len(FIRES):
            raise ValueError(f"widths: expected {len(FIRES)} Fire modules, got {len(widths['fires'])}")
        _, stem_kernel, pools = VERSIONS[version]
        in_chs = widths["stem"]
        self.stem = _relu_conv(dense_conv(in_chans, in_chs, stem_kernel, 2, padding=0, bias=True), in_chs)
        stages: list[list[nn.Module]] = []
        for index, fire in enumerate(widths["fires"]):
            if index in pools:
                stages.append([nn.MaxPool2d(3, 2, ceil_mode=True)])
            stages[-1].append(Fire(in_chs, **fire, bypass=bypass and index in BYPASSED))
            in_chs = stages[-1][-1].out_chs
        self.stages = nn.Sequential(*(nn.Sequential(*stage) for stage in stages))
        self.feature_info = [{"num_chs": widths["stem"], "reduction": 2, "module": "stem"}] + [
            {"num_chs": stage[-1].out_chs, "reduction": 2 ** (i + 2), "module": f"stages.{i}"}
            for i, stage in enumerate(self.stages)
        ]
        self.build_head(in_chs, num_classes, drop_rate=drop_rate, global_pool=global_pool)
        self.head_act = nn.ReLU(inplace=True)
        self.init_weights()

    def head_width(self) -> int:
        """The classifier acts before the pooling, which must therefore keep the width (pooling
        that concatenates would double the logits)."""
        if self.global_pool.feat_mult() != 1:
            raise ValueError(
                f"global_pool: SqueezeNet pools its logits, expected one of "
                f"{tuple(p for p in POOL_TYPES if p != 'catavgmax')}, "
                f"got {self.global_pool.pool_type!r}"
            )
        return self.num_features

    def new_classifier(self, num_classes: int) -> nn.Module:
        """The classifier is a 1x1 convolution applied before pooling, N(0, 0.01) initialised."""
        if num_classes <= 0:
            return nn.Identity()
        conv = dense_conv(self.num_features, num_classes, 1, bias=True)
        nn.init.normal_(conv.weight, 0.0, 0.01)
        return conv

    def init_weights(self) -> None:
        super().init_weights()
        if isinstance(self.classifier, nn.Conv2d):
            nn.init.normal_(self.classifier.weight, 0.0, 0.01)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``pre_logits``: the pooled features (the classifier convolution acts per position)."""
        x = self.head_drop(x)
        if pre_logits:
            return self.global_pool(x)
        return self.global_pool(self.head_act(self.classifier(x)))

    def source_prefix_map(self, source: str, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
        if source != "torchvision":
            return super().source_prefix_map(source, state_dict)
        ours = [name for name, module in self.named_modules() if isinstance(module, Fire)]
        theirs = indices(state_dict, r"features\.(\d+)\.squeeze\.")
        prefixes = {"features.0": "stem.conv", "classifier.1": "classifier"}
        for fire, index in zip(ours, theirs, strict=False):  # surplus ones end up missing / unexpected
            for conv in ("squeeze", "expand1x1", "expand3x3"):
                prefixes[f"features.{index}.{conv}"] = f"{fire}.{conv}.conv"
        return prefixes


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> SqueezeNet:
    return build(SqueezeNet, variant, pretrained, 4, **kwargs)


_PAPER = {"paper_ids": "arXiv:1602.07360", "paper_name": "SqueezeNet"}
_NAMES = ("1_0", "1_1", "1_0_bypass", "1_1_bypass", "1_1_pruned25", "1_1_pruned50")
# 224x224 in: 13x13 out (unpadded stem and ceil-mode pools: 224 -> 109/111 -> 54/55 -> 27 -> 13).
default_cfgs = generate_default_cfgs({f"slim_squeezenet{k}": _cfg(pool_size=(13, 13), **_PAPER) for k in _NAMES})

_TABLE1 = "Iandola et al. 2016, Table 1 (the simple bypass adds no parameters, Section 6)"
register_cards(
    {
        "slim_squeezenet1_0": ModelCard(
            1_248_424, Published(_TABLE1, "1,248,424"), (torchvision_equivalent("squeezenet1_0"),)
        ),
        "slim_squeezenet1_1": ModelCard(1_235_496, None, (torchvision_equivalent("squeezenet1_1"),)),
        "slim_squeezenet1_0_bypass": ModelCard(1_248_424, Published(_TABLE1, "1,248,424")),
        "slim_squeezenet1_1_bypass": ModelCard(1_235_496),
        "slim_squeezenet1_1_pruned25": ModelCard(810_856),
        "slim_squeezenet1_1_pruned50": ModelCard(439_944),
    }
)


@register_model
def slim_squeezenet1_0(pretrained: bool = False, **kwargs: Any) -> SqueezeNet:
    return _create("slim_squeezenet1_0", pretrained, version="1_0", **kwargs)


@register_model
def slim_squeezenet1_1(pretrained: bool = False, **kwargs: Any) -> SqueezeNet:
    return _create("slim_squeezenet1_1", pretrained, version="1_1", **kwargs)


@register_model
def slim_squeezenet1_0_bypass(pretrained: bool = False, **kwargs: Any) -> SqueezeNet:
    return _create("slim_squeezenet1_0_bypass", pretrained, version="1_0", bypass=True, **kwargs)


@register_model
def slim_squeezenet1_1_bypass(pretrained: bool = False, **kwargs: Any) -> SqueezeNet:
    return _create("slim_squeezenet1_1_bypass", pretrained, version="1_1", bypass=True, **kwargs)


@register_model
def slim_squeezenet1_1_pruned25(pretrained: bool = False, **kwargs: Any) -> SqueezeNet:
    widths = pruned_squeezenet_widths(squeezenet_widths("1_1"), 0.25)
    return _create("slim_squeezenet1_1_pruned25", pretrained, version="1_1", widths=widths, **kwargs)


@register_model
def slim_squeezenet1_1_pruned50(pretrained: bool = False, **kwargs: Any) -> SqueezeNet:
    widths = pruned_squeezenet_widths(squeezenet_widths("1_1"), 0.5)
    return _create("slim_squeezenet1_1_pruned50", pretrained, version="1_1", widths=widths, **kwargs)

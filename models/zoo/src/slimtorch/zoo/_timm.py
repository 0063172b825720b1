"""timm glue shared by the family modules: default pretrained configs and the builder."""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg
from torch import nn

from slimtorch.zoo.weights import checkpoint_filter_fn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    """An ImageNet-1k 224x224 config without hosted weights: load your own with
    ``pretrained=True, pretrained_cfg_overlay=dict(file="....safetensors")``."""
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv",
        "classifier": "classifier",
        "license": "apache-2.0",
        **kwargs,
    }


def _cifar_cfg(**kwargs: Any) -> dict[str, Any]:
    cifar = {"num_classes": 10, "input_size": (3, 32, 32), "pool_size": (8, 8), "crop_pct": 1.0}
    return _cfg(**cifar, mean=CIFAR_MEAN, std=CIFAR_STD, **kwargs)


def build(model_cls: type[nn.Module], variant: str, pretrained: bool, feature_levels: int, **kwargs: Any) -> nn.Module:
    """``build_model_with_cfg`` with our checkpoint filter (own, torchvision and timm weights)
    and ``features_only`` returning all ``feature_levels`` feature levels by default."""
    return build_model_with_cfg(
        model_cls,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg={"flatten_sequential": True, "out_indices": tuple(range(feature_levels))},
        **kwargs,
    )

"""slimtorch-zoo: the compact CNNs of the surveys (MobileNet V1/V2/V3, ShuffleNet V1/V2,
SqueezeNet, ShiftNet, Bi-Real Net) registered in timm, loadable from torchvision and timm weights, with
pruned architectures, quantized / 2:4-sparse conversions and distillation recipes.

After ``import slimtorch.zoo`` every model is a timm model (``timm.create_model("slim_...")``);
:func:`create_model` and :func:`list_models` are the same restricted to the zoo.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import timm
from torch import nn

# importing a family registers its models with timm
from slimtorch.zoo import (
    birealnet,
    mobilenetv1,
    mobilenetv2,
    mobilenetv3,
    shiftnet,
    shufflenetv1,
    shufflenetv2,
    squeezenet,
)
from slimtorch.zoo._timm import check_model_name
from slimtorch.zoo.cards import ModelCard, Published, model_card
from slimtorch.zoo.profile import ModelProfile, profile
from slimtorch.zoo.variants import (
    DISTILLATION_RECIPES,
    apply_variant,
    list_variants,
)
from slimtorch.zoo.weights import convert_state_dict, load_timm_weights, load_torchvision_weights

__version__ = "0.1.0"

__all__ = [
    "DISTILLATION_RECIPES",
    "ModelCard",
    "ModelProfile",
    "Published",
    "apply_variant",
    "convert_state_dict",
    "create_model",
    "list_models",
    "list_variants",
    "load_timm_weights",
    "load_torchvision_weights",
    "model_card",
    "profile",
]

_FAMILIES = (mobilenetv1, mobilenetv2, mobilenetv3, shufflenetv1, shufflenetv2, squeezenet, shiftnet, birealnet)
_NAMES = frozenset(name for family in _FAMILIES for name in family.default_cfgs)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the zoo's models matching the shell-style ``pattern``."""
    return sorted(name for name in _NAMES if fnmatch.fnmatchcase(name, pattern))


def create_model(name: str, *, variant: str | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` for a zoo model, then, if ``variant`` names one, the
    conversion of core's registry (see :func:`list_variants`) applied to it in eval mode."""
    check_model_name(name, _NAMES)  # the other arguments are checked by every family's builder (_timm.build)
    model = timm.create_model(name, **kwargs)
    return model if variant is None else apply_variant(model, variant).model

"""Weights people already have: torchvision and timm checkpoints, read from safetensors files.

A zoo model converts a foreign state_dict by module prefix: its ``source_prefix_map(source,
state_dict)`` returns ``{"features.3.conv.1.0": "stages.1.0.conv_dw.conv", ...}`` and every
tensor ``<prefix>.<leaf>`` of the checkpoint moves to ``<our prefix>.<leaf>``. The conversion
is exact or fails: a checkpoint tensor no prefix claims ("unexpected"), a model tensor nothing
fills ("missing") or a shape that differs ("mismatched") raise one ``ValueError`` listing them.
The only reshape is between a Linear weight ``(out, in)`` and a 1x1 convolution weight
``(out, in, 1, 1)`` (timm's MobileNetV3 head is a 1x1 convolution, ours a Linear).

Files are read with ``safetensors`` only, never unpickled. To convert a torchvision or timm
checkpoint once: ``safetensors.torch.save_file(tv_model.state_dict(), "mobilenet_v2.safetensors")``.

The same conversion runs inside timm's loader (``checkpoint_filter_fn``), so
``timm.create_model("slim_mobilenetv2_100", pretrained=True,
pretrained_cfg_overlay=dict(file="mobilenet_v2.safetensors"))`` accepts our own, torchvision's
or timm's checkpoints.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Union

import safetensors.torch
import torch
from torch import nn

from slimtorch.zoo.blocks import ZooModel

StateDictSource = Union[Mapping[str, torch.Tensor], str, os.PathLike]

CLASSIFIER = "classifier"
_SHOWN = 12  # entries of each kind an error message lists before "... and N more"


def read_state_dict(source: StateDictSource) -> dict[str, torch.Tensor]:
    """A state_dict given directly, or read from a ``.safetensors`` file (never a pickle)."""
    if isinstance(source, Mapping):
        return dict(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"state_dict: expected a mapping or a .safetensors path, got {type(source).__name__}")
    path = Path(source)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"state_dict: expected a .safetensors file, got {str(path)!r}; files are never unpickled, convert once "
            "with safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
        )
    if not path.is_file():
        raise FileNotFoundError(f"state_dict: no such file {str(path)!r}")
    return safetensors.torch.load_file(str(path))


def _listing(kind: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    more = f" ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{len(items)} {kind}: {shown}{more}"


def _linear_conv_pair(a: torch.Size, b: torch.Size) -> bool:
    """(out, in) vs (out, in, 1, 1), either way round."""
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return len(short) == 2 and len(long) == 4 and tuple(long) == (*short, 1, 1)


def convert_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, *, check_classifier: bool = True
) -> dict[str, torch.Tensor]:
    """``state_dict`` of a ``source`` ("torchvision" or "timm") model renamed to ``model``'s keys.

    ``check_classifier=False`` passes the classifier through whatever its shape (timm's
    loader then drops it when the class counts differ).
    """
    if not isinstance(model, ZooModel):
        raise TypeError(f"model: expected a slimtorch.zoo model, got {type(model).__name__}")
    prefix_map = model.source_prefix_map(source, dict(state_dict))
    target = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unexpected, mismatched, claimed = [], [], set()
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        new_key = f"{prefix_map[prefix]}.{leaf}" if prefix in prefix_map else None
        if new_key not in target:
            unexpected.append(key)
            continue
        claimed.add(new_key)
        want = target[new_key].shape
        if value.shape != want:
            if _linear_conv_pair(value.shape, want):
                value = value.reshape(want)
            elif check_classifier or not new_key.startswith(f"{CLASSIFIER}."):
                mismatched.append(f"{key} {tuple(value.shape)} -> {new_key} {tuple(want)}")
                continue
        converted[new_key] = value
    missing = [k for k in target if k not in claimed]
    if missing or unexpected or mismatched:
        problems = [
            _listing(kind, items)
            for kind, items in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched))
            if items
        ]
        raise ValueError(
            f"state_dict: this {source} checkpoint does not fit {type(model).__name__} "
            f"({getattr(model, 'pretrained_cfg', {}).get('architecture', 'unnamed')}): " + "; ".join(problems)
        )
    return converted


def adopt_source_bn_eps(model: nn.Module, source: str) -> None:
    """Give every BatchNorm the epsilon ``source`` used (timm's MobileNetV3: 1e-5, not 1e-3)."""
    eps = getattr(model, "source_bn_eps", {}).get(source)
    if eps is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eps = eps


def _load(model: nn.Module, state_dict: StateDictSource, source: str) -> nn.Module:
    converted = convert_state_dict(model, read_state_dict(state_dict), source)
    adopt_source_bn_eps(model, source)
    model.load_state_dict(converted, strict=True)
    return model


def load_torchvision_weights(model: nn.Module, state_dict: StateDictSource) -> nn.Module:
    """Load a torchvision MobileNetV2 / MobileNetV3 (large, small) / ShuffleNetV2 / SqueezeNet
    state_dict (or ``.safetensors`` path) into the matching zoo model; returns the model.

    The zoo model must have the source's architecture (width, version) and class count.
    """
    return _load(model, state_dict, "torchvision")


def load_timm_weights(model: nn.Module, state_dict: StateDictSource) -> nn.Module:
    """Load a timm ``mobilenetv1_*`` / ``mobilenetv2_*`` / ``mobilenetv3_*`` state_dict (or
    ``.safetensors`` path) into the matching zoo model; returns the model.

    timm's MobileNetV3 normalises with BatchNorm epsilon 1e-5 where ours (like torchvision and
    the paper's TensorFlow models) uses 1e-3: the loader sets the model's epsilon to 1e-5.
    """
    return _load(model, state_dict, "timm")


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's ``pretrained_filter_fn``: our own checkpoints pass through; torchvision and timm
    checkpoints (whichever of ``model.weight_sources`` fits) are converted."""
    if set(state_dict) == set(model.state_dict()):
        return state_dict
    failures = []
    for source in model.weight_sources:
        try:
            converted = convert_state_dict(model, state_dict, source, check_classifier=False)
        except ValueError as err:
            failures.append(str(err))
            continue
        adopt_source_bn_eps(model, source)
        return converted
    ours = set(model.state_dict())
    missing, unexpected = sorted(ours - set(state_dict)), sorted(set(state_dict) - ours)
    listing = "; ".join(
        _listing(kind, keys) for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys
    )
    failures.insert(0, f"state_dict: not a checkpoint of this model ({listing})")
    raise ValueError("\n".join(failures))


# ----------------------------------------------------------------------------- helpers for families


def indices(state_dict: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) at the start of the keys."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for key in state_dict if (m := regex.match(key))})


def conv_bn(conv: str, bn: str, ours: str) -> dict[str, str]:
    """A source convolution + BatchNorm pair onto our ConvNormAct ``ours``."""
    return {conv: f"{ours}.conv", bn: f"{ours}.bn"}

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
A file that is not a whole safetensors file fails with its path named.

**Every stored tensor is checked before it is used** (:func:`check_tensor_value`), the error
naming the file and the tensor's key: a model's floating tensor must come from a real floating
tensor (no complex, integer or bool weights, which ``load_state_dict`` would silently cast),
an integer buffer (BatchNorm's ``num_batches_tracked``) from an integer one; values must be
finite, BatchNorm running variances and batch counts non-negative; shapes must be the model's
(up to the Linear ↔ 1x1 convolution reshape).

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
from safetensors import SafetensorError, safe_open
from torch import nn

from slimtorch.zoo.blocks import ZooModel

StateDictSource = Union[Mapping[str, torch.Tensor], str, os.PathLike]

CLASSIFIER = "classifier"
_SHOWN = 12  # entries of each kind an error message lists before "... and N more"


def describe(source: object) -> str:
    """How errors name where a state_dict came from."""
    return f"file {str(source)!r}" if isinstance(source, (str, os.PathLike)) else "the given state_dict"


def read_safetensors(path: Union[str, os.PathLike]) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; a truncated or foreign file fails naming its path."""
    try:
        return safetensors.torch.load_file(str(path))
    except SafetensorError as err:
        raise ValueError(f"state_dict: {str(path)!r} is not a complete safetensors file ({err})") from err


def check_safetensors_file(path: Union[str, os.PathLike], name: str = "state_dict") -> None:
    """``path`` is a complete safetensors file (its header read and checked against the file
    size, no tensor loaded), else an error naming ``name`` and the path."""
    try:
        with safe_open(str(path), "pt"):
            pass
    except SafetensorError as err:
        raise ValueError(f"{name}: {str(path)!r} is not a complete safetensors file ({err})") from err


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
    return read_safetensors(path)


class TensorValueError(ValueError):
    """A stored tensor with values a model cannot use (NaN, infinity, a negative variance)."""


def check_tensor_value(value: object, key: str, target: torch.Tensor, origin: str) -> None:
    """``value`` (stored under ``key`` in ``origin``) may fill the model tensor ``target``:
    a tensor of the same kind of dtype (real floating for floating targets, integer for
    integer ones), finite, and in range (running variances and batch counts >= 0)."""
    where = f"tensor {key!r} of {origin}"
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"state_dict: {where}: expected a torch.Tensor, got {type(value).__name__}")
    if target.is_floating_point():
        if not value.is_floating_point():  # complex, integer and bool are all refused
            raise TypeError(f"state_dict: {where}: expected a real floating dtype, got {value.dtype}")
    elif value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"state_dict: {where}: expected an integer dtype ({target.dtype}), got {value.dtype}")
    if value.is_meta:
        return
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise TensorValueError(
            f"state_dict: {where}: expected finite values, got {bad} NaN or infinite of {value.numel()}"
        )
    if key.endswith(("running_var", "num_batches_tracked")) and value.numel() and bool((value < 0).any()):
        raise TensorValueError(f"state_dict: {where}: expected values >= 0, got minimum {value.min().item()}")


def check_state_dict(state_dict: Mapping[str, torch.Tensor], model: nn.Module, origin: str) -> None:
    """Our own checkpoint for ``model``: every tensor checked by :func:`check_tensor_value` and
    shaped as the model's."""
    target = model.state_dict()
    for key, value in state_dict.items():
        if key in target:
            check_tensor_value(value, key, target[key], origin)
            if value.shape != target[key].shape:
                raise ValueError(
                    f"state_dict: tensor {key!r} of {origin}: expected shape {tuple(target[key].shape)}, "
                    f"got {tuple(value.shape)}"
                )


def _listing(kind: str, items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    more = f" ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{len(items)} {kind}: {shown}{more}"


def _linear_conv_pair(a: torch.Size, b: torch.Size) -> bool:
    """(out, in) vs (out, in, 1, 1), either way round."""
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return len(short) == 2 and len(long) == 4 and tuple(long) == (*short, 1, 1)


def convert_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    *,
    check_classifier: bool = True,
    origin: str = "the given state_dict",
) -> dict[str, torch.Tensor]:
    """``state_dict`` of a ``source`` ("torchvision" or "timm") model renamed to ``model``'s keys.

    Every tensor is checked (:func:`check_tensor_value`; errors name ``origin`` and the key).
    ``check_classifier=False`` passes the classifier through whatever its shape (timm's
    loader then drops it when the class counts differ).
    """
    if not isinstance(model, ZooModel):
        raise TypeError(f"model: expected a slimtorch.zoo model, got {type(model).__name__}")
    prefix_map = model.source_prefix_map(source, dict(state_dict))
    target = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unexpected, mismatched, claimed = [], [], set()
    bad_value: Exception | None = None  # raised once the checkpoint is known to fit
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        new_key = f"{prefix_map[prefix]}.{leaf}" if prefix in prefix_map else None
        if new_key not in target:
            unexpected.append(key)
            continue
        claimed.add(new_key)
        try:
            check_tensor_value(value, key, target[new_key], origin)
        except (TypeError, ValueError) as err:
            bad_value = bad_value or err
            continue
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
    if bad_value is not None:
        raise bad_value
    return converted


def adopt_source_bn_eps(model: nn.Module, source: str) -> None:
    """Give every BatchNorm the epsilon ``source`` used (timm's MobileNetV3: 1e-5, not 1e-3)."""
    eps = getattr(model, "source_bn_eps", {}).get(source)
    if eps is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eps = eps


def _load(model: nn.Module, state_dict: StateDictSource, source: str) -> nn.Module:
    converted = convert_state_dict(model, read_state_dict(state_dict), source, origin=describe(state_dict))
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
    checkpoints (whichever of ``model.weight_sources`` fits) are converted. Every tensor is
    checked; errors name the file of ``model.pretrained_cfg``.

    A wrong dtype raises ``ValueError`` here, not ``TypeError``: timm's loader takes a
    ``TypeError`` from a filter for an old one-argument filter and calls it again without the model.
    """
    try:
        return _filter(state_dict, model)
    except TypeError as err:
        raise ValueError(str(err)) from err


def _filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    where = cfg.get("file") or cfg.get("url") or cfg.get("hf_hub_id")
    origin = describe(where) if where else "the pretrained state_dict"
    if set(state_dict) == set(model.state_dict()):
        check_state_dict(state_dict, model, origin)
        return state_dict
    failures = []
    for source in model.weight_sources:
        try:
            converted = convert_state_dict(model, state_dict, source, check_classifier=False, origin=origin)
        except TensorValueError:
            raise
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

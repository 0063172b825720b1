"""timm glue shared by the family modules: default pretrained configs and the builder."""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, get_arch_pretrained_cfgs, resolve_pretrained_cfg, split_model_name_tag
from torch import nn

from slimtorch.zoo.blocks import POOL_TYPES
from slimtorch.zoo.weights import check_safetensors_file, checkpoint_filter_fn

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


# build_model_with_cfg's own arguments that reach build() through a family's entry point
_BUILDER_ARGS = (
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "cache_dir",
    "pretrained_strict",
    "kwargs_filter",
    "pretrained_model_args",
)
# ... and those timm's builder takes out of the model arguments
_FEATURE_ARGS = ("features_only", "out_indices", "feature_cls", "feature_cfg")


def check_model_name(name: object, names: frozenset[str]) -> str:
    """``name`` (``arch`` or ``arch.tag``) of a zoo model, or a clear error before timm parses it."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a model name (str), got {type(name).__name__} {name!r}")
    arch, tag = split_model_name_tag(name)
    if arch not in names:
        raise ValueError(f"name: {name!r} is not a slimtorch.zoo model; choose from slimtorch.zoo.list_models()")
    tags = [t for t in (split_model_name_tag(key)[1] for key in get_arch_pretrained_cfgs(arch)) if t]
    if tag and tag not in tags:
        raise ValueError(f"name: {arch} has no tag {tag!r} (its tags: {tags or 'none'})")
    return name


def _check_int(value: object, name: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def _check_weights(variant: str, kwargs: dict[str, Any]) -> None:
    """``pretrained=True`` needs weights the zoo can read: ours are not hosted, so a
    ``.safetensors`` file (own, torchvision or timm checkpoint), a state_dict, or a hub/url
    ``.safetensors`` in ``pretrained_cfg(_overlay)``; never a pickle."""
    overlay = kwargs.get("pretrained_cfg_overlay")
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get("pretrained_cfg"), pretrained_cfg_overlay=overlay)
    hint = "pass pretrained_cfg_overlay=dict(file='weights.safetensors') or pretrained=False"
    if cfg.state_dict is not None or cfg.hf_hub_id:
        return
    if cfg.file:
        path = Path(cfg.file)
        if path.suffix != ".safetensors":
            raise ValueError(f"pretrained_cfg_overlay: expected a .safetensors file (never a pickle), got {cfg.file!r}")
        if not path.is_file():
            raise FileNotFoundError(f"pretrained_cfg_overlay: no such file {str(path)!r}")
        check_safetensors_file(path, "pretrained_cfg_overlay")
        return
    if cfg.url:
        if not cfg.url.endswith(".safetensors"):
            raise ValueError(f"pretrained_cfg_overlay: expected a .safetensors url (never a pickle), got {cfg.url!r}")
        return
    raise ValueError(f"pretrained: {variant} has no hosted weights; {hint}")


def check_build_args(model_cls: type[nn.Module], variant: str, pretrained: object, kwargs: dict[str, Any]) -> None:
    """The arguments of ``timm.create_model`` / ``slimtorch.zoo.create_model`` for a zoo model,
    checked before timm's builder uses them (errors name the argument, the expected and the got)."""
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained: expected a bool, got {type(pretrained).__name__} {pretrained!r}")
    params = list(inspect.signature(model_cls.__init__).parameters.values())[1:]
    own = [p.name for p in params]
    unknown = sorted(set(kwargs) - {*own, *_BUILDER_ARGS, *_FEATURE_ARGS, "device", "dtype"})
    if unknown:  # (the family's entry point supplies the arguments without a default)
        optional = [p.name for p in params if p.default is not inspect.Parameter.empty]
        accepted = ", ".join([*optional, *_FEATURE_ARGS, "pretrained_cfg_overlay", "device", "dtype"])
        names = ", ".join(unknown)
        raise TypeError(f"{names}: not an argument of {variant} ({model_cls.__name__}); accepted: {accepted}")
    for name, minimum in (("num_classes", 0), ("in_chans", 1)):
        if name in kwargs:
            _check_int(kwargs[name], name, minimum)
    if "drop_rate" in kwargs and not (isinstance(kwargs["drop_rate"], (int, float)) and 0 <= kwargs["drop_rate"] < 1):
        raise ValueError(f"drop_rate: expected a dropout probability in [0, 1), got {kwargs['drop_rate']!r}")
    if "global_pool" in kwargs and kwargs["global_pool"] not in POOL_TYPES:
        raise ValueError(f"global_pool: expected one of {POOL_TYPES}, got {kwargs['global_pool']!r}")
    if not isinstance(kwargs.get("features_only", False), bool):
        raise TypeError(f"features_only: expected a bool, got {kwargs['features_only']!r}")
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    if device is not None and not isinstance(device, (str, torch.device)):
        raise TypeError(f"device: expected a torch.device or str, got {type(device).__name__} {device!r}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    if pretrained:
        _check_weights(variant, kwargs)


def _check_out_indices(model: nn.Module, out_indices: object, variant: str) -> None:
    levels = len(model.feature_info)
    values = (out_indices,) if isinstance(out_indices, int) else out_indices
    ok = isinstance(values, (tuple, list)) and all(isinstance(i, int) and not isinstance(i, bool) for i in values)
    if not ok or not all(-levels <= i < levels for i in values):
        raise ValueError(
            f"out_indices: expected feature levels in [-{levels}, {levels}) of {variant} "
            f"(feature_info has {levels}), got {out_indices!r}"
        )


def build(model_cls: type[nn.Module], variant: str, pretrained: bool, feature_levels: int, **kwargs: Any) -> nn.Module:
    """``build_model_with_cfg`` with our checkpoint filter (own, torchvision and timm weights)
    and ``features_only`` returning all ``feature_levels`` feature levels by default, after
    :func:`check_build_args`.

    timm's factory arguments ``device`` and ``dtype`` (``timm.create_model(..., device="meta")``)
    are honoured here rather than by every layer: the model is built under ``torch.device(device)``
    (parameters are created there, nothing is allocated elsewhere) and cast to ``dtype`` after.
    """
    check_build_args(model_cls, variant, pretrained, kwargs)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    if kwargs.get("features_only") and "out_indices" in kwargs:
        with torch.device("meta"):  # free: only its feature_info is read
            args = {k: v for k, v in kwargs.items() if k not in (*_BUILDER_ARGS, *_FEATURE_ARGS)}
            _check_out_indices(model_cls(**args), kwargs["out_indices"], variant)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = build_model_with_cfg(
            model_cls,
            variant,
            pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg={"flatten_sequential": True, "out_indices": tuple(range(feature_levels))},
            **kwargs,
        )
    return model if dtype is None else model.to(dtype=dtype)

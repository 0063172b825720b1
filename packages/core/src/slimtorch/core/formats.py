"""The registry of compression formats that the installed slimtorch packages offer.

A kernel package registers each of its model conversions when it is imported::

    register_format(CompressionFormat(
        name="int8-weight-only", family="quant",
        description="int8 weights, per-channel scales; fp activations",
        convert=lambda model: quantize_(model, Int8WeightOnlyConfig()),
    ))

:func:`available_formats` imports every installed ``slimtorch.*`` distribution (installed or on
``PYTHONPATH``: the namespace is walked, no entry points needed) and returns what registered.
The demo converts a model with each of them; tests iterate the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

_REGISTRY: dict[str, CompressionFormat] = {}


@dataclass(frozen=True)
class CompressionFormat:
    """A named way to compress a whole model.

    ``convert`` takes a float model (a private deep copy the caller owns, in eval mode, on the
    target device) and returns the compressed model (it may modify and return its argument).
    ``dtype`` is the activation dtype the converted model expects (None: unchanged).
    ``devices`` lists the device types the format runs on.
    """

    name: str
    family: str
    description: str
    convert: Callable[[nn.Module], nn.Module]
    dtype: torch.dtype | None = None
    devices: tuple[str, ...] = ("cpu", "cuda")


def register_format(fmt: CompressionFormat) -> CompressionFormat:
    existing = _REGISTRY.get(fmt.name)
    if existing is not None and existing.family != fmt.family:
        raise ValueError(f"format name {fmt.name!r} is already registered by {existing.family!r}")
    _REGISTRY[fmt.name] = fmt
    return fmt


def import_all_packages() -> list[str]:
    """Import every installed ``slimtorch.<name>`` package; return the names imported."""
    import slimtorch

    names = sorted({info.name for info in pkgutil.iter_modules(slimtorch.__path__)})
    for name in names:
        importlib.import_module(f"slimtorch.{name}")
    return names


def available_formats(device: torch.device | str | None = None) -> list[CompressionFormat]:
    """Every registered format (optionally only those that run on ``device``), by family, name."""
    import_all_packages()
    formats = sorted(_REGISTRY.values(), key=lambda f: (f.family, f.name))
    if device is not None:
        kind = torch.device(device).type
        formats = [f for f in formats if kind in f.devices]
    return formats


# Casting to 16-bit floats is the simplest real compression (2x smaller, tensor-core speed).
for _name, _dtype, _devices in (("fp16", torch.float16, ("cuda",)), ("bf16", torch.bfloat16, ("cpu", "cuda"))):
    register_format(
        CompressionFormat(
            name=_name,
            family="core",
            description=f"all weights and activations in {str(_dtype).removeprefix('torch.')}",
            convert=lambda model, dtype=_dtype: model.to(dtype),
            dtype=_dtype,
            devices=_devices,
        )
    )

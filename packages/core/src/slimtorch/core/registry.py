"""The registry of named model conversions that the installed slimtorch packages offer.

One name per conversion, used everywhere: the demo's rows, the zoo's variants
(``create_model("slim_mobilenetv2_100", variant="int8")``), ``slimtorch formats`` and the tests.
A package registers each of its conversions when it is imported::

    register_conversion(RegisteredConversion(
        name="int8", family="quant", description="int8 weights, per-channel scales; fp activations",
        convert=lambda model: quantize_(model, Int8WeightOnlyConfig()),
    ))

``convert`` runs a conversion of :mod:`slimtorch.core.conversions` and returns its
:class:`~slimtorch.core.conversions.ConversionReport` (``report.model`` is the converted model).
:func:`available_conversions` imports every installed ``slimtorch.*`` distribution (installed or
on ``PYTHONPATH``: the namespace is walked, no entry points needed) and returns what registered.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from slimtorch.core.conversions import ConversionReport

_REGISTRY: dict[str, RegisteredConversion] = {}

# The distribution behind each family, to name what to install when a conversion is missing.
DISTRIBUTIONS = {
    "core": "slimtorch-core",
    "quant": "slimtorch-quant",
    "sparse": "slimtorch-sparse",
    "convops": "slimtorch-convops",
    "structured": "slimtorch-structured",
    "compress": "slimtorch-compress",
}


@dataclass(frozen=True)
class RegisteredConversion:
    """A named way to compress a whole model.

    ``convert`` takes a float model in eval mode on the target device (the caller's to modify)
    and returns the conversion's report. ``dtype`` is the activation dtype the converted model
    expects (None: unchanged); ``devices`` the device types it runs on.
    """

    name: str
    family: str
    description: str
    convert: Callable[[nn.Module], ConversionReport]
    dtype: torch.dtype | None = None
    devices: tuple[str, ...] = ("cpu", "cuda")


def register_conversion(entry: RegisteredConversion) -> RegisteredConversion:
    existing = _REGISTRY.get(entry.name)
    if existing is not None and existing.family != entry.family:
        raise ValueError(f"conversion name {entry.name!r} is already registered by {existing.family!r}")
    _REGISTRY[entry.name] = entry
    return entry


def import_all_packages() -> list[str]:
    """Import every installed ``slimtorch.<name>`` package; return the names imported."""
    import slimtorch

    names = sorted({info.name for info in pkgutil.iter_modules(slimtorch.__path__)})
    for name in names:
        importlib.import_module(f"slimtorch.{name}")
    return names


def available_conversions(device: torch.device | str | None = None) -> list[RegisteredConversion]:
    """Every registered conversion (optionally only those that run on ``device``), by family, name."""
    import_all_packages()
    entries = sorted(_REGISTRY.values(), key=lambda e: (e.family, e.name))
    if device is not None:
        kind = torch.device(device).type
        entries = [e for e in entries if kind in e.devices]
    return entries


def get_conversion(name: str) -> RegisteredConversion:
    """The conversion registered as ``name``; a missing one names the distributions not installed."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a conversion name (str), got {type(name).__name__}")
    installed = import_all_packages()
    if name in _REGISTRY:
        return _REGISTRY[name]
    missing = [dist for family, dist in DISTRIBUTIONS.items() if family not in installed]
    hint = f"; not installed: {', '.join(missing)} (pip install one to get its conversions)" if missing else ""
    raise ValueError(f"conversion: expected one of {sorted(_REGISTRY)}, got {name!r}{hint}")


def _cast(dtype: torch.dtype) -> Callable[[nn.Module], ConversionReport]:
    from slimtorch.core.model_stats import memory_bytes

    def convert(model: nn.Module) -> ConversionReport:
        before = memory_bytes(model)
        model = model.to(dtype)
        what = f"all weights to {str(dtype).removeprefix('torch.')}"
        return ConversionReport(f"cast({dtype})", model, {"": what}, {}, before, memory_bytes(model))

    return convert


# Casting to 16-bit floats is the simplest real compression (2x smaller, tensor-core speed).
for _name, _dtype, _devices in (("fp16", torch.float16, ("cuda",)), ("bf16", torch.bfloat16, ("cpu", "cuda"))):
    register_conversion(
        RegisteredConversion(
            name=_name,
            family="core",
            description=f"all weights and activations in {str(_dtype).removeprefix('torch.')}",
            convert=_cast(_dtype),
            dtype=_dtype,
            devices=_devices,
        )
    )

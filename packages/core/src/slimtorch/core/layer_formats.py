"""How each package's compressed layers are stored in the compressed file and rebuilt from it.

The compressed file (:mod:`slimtorch.core.container`) stores any model's ``state_dict`` generically;
what it cannot know is how to rebuild a package's own layer (an int4 linear, a block-circulant
conv) before loading that state into it. Each package registers one :class:`LayerFormat` when it
is imported::

    register_layer_format(LayerFormat(
        name="quant", family="quant",
        claims=lambda m: isinstance(m, QuantizedLinear) or ...,   # the layers this format stores
        describe=describe_layer,                                  # layer -> JSON (shapes, options)
        build=lambda description, device, dtype: build_layer(description, device),
    ))

Saving: the outermost module of a model that a format ``claims`` is written to the manifest as
``{"format": name, "layer": describe(module)}``; loading rebuilds it with ``build(layer, device,
dtype)`` (an empty layer of that shape, ready for ``load_state_dict``, whose own checks validate
every stored tensor's dtype, shape and range) and runs from the packed form.

Optionally a format stores a packed buffer as a stream of small integers that the file
entropy-codes (Deep Compression's codebook indices): ``to_symbols(module, buffer_name, tensor)``
returns :class:`Symbols` (or None: stored as it is), and ``from_symbols(values, params)`` packs the
decoded integers back into exactly the same tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

_FORMATS: dict[str, LayerFormat] = {}


@dataclass(frozen=True)
class Symbols:
    """A packed buffer as integers in ``[0, alphabet)`` (row-major), with the JSON ``params``
    that :attr:`LayerFormat.from_symbols` needs to pack them again."""

    values: np.ndarray
    alphabet: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerFormat:
    """One package's layers in the compressed file (module docstring)."""

    name: str
    family: str
    claims: Callable[[nn.Module], bool]
    describe: Callable[[nn.Module], dict[str, Any]]
    build: Callable[[dict[str, Any], torch.device, torch.dtype | None], nn.Module]
    to_symbols: Callable[[nn.Module, str, torch.Tensor], Symbols | None] | None = None
    from_symbols: Callable[[np.ndarray, dict[str, Any]], torch.Tensor] | None = None


def register_layer_format(entry: LayerFormat) -> LayerFormat:
    existing = _FORMATS.get(entry.name)
    if existing is not None and existing.family != entry.family:
        raise ValueError(f"layer format {entry.name!r} is already registered by {existing.family!r}")
    _FORMATS[entry.name] = entry
    return entry


def layer_formats() -> dict[str, LayerFormat]:
    """The formats registered so far (by the packages imported so far)."""
    return dict(_FORMATS)


def get_layer_format(name: str) -> LayerFormat:
    """The format ``name``, importing every installed slimtorch package if it is not registered yet;
    ``KeyError`` naming the distribution to install when none registers it."""
    if name not in _FORMATS:
        from slimtorch.core.registry import DISTRIBUTIONS, import_all_packages

        import_all_packages()
        if name not in _FORMATS:
            hint = DISTRIBUTIONS.get(name, f"the package that registers {name!r}")
            raise KeyError(f"layer format {name!r} is not registered (install {hint})")
    return _FORMATS[name]


def stored_layers(model: nn.Module) -> dict[str, tuple[LayerFormat, nn.Module]]:
    """The outermost modules of ``model`` that a registered format claims, by name."""
    found: dict[str, tuple[LayerFormat, nn.Module]] = {}
    for name, module in model.named_modules():
        if any(outer == "" or name.startswith(f"{outer}.") for outer in found):
            continue
        for entry in _FORMATS.values():
            if entry.claims(module):
                found[name] = (entry, module)
                break
    return found

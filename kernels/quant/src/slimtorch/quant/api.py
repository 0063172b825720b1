"""Model-level quantization: typed configs, ``quantize_``, and safetensors export/import.

    from slimtorch.quant import quantize_, Int4WeightOnlyConfig
    report = quantize_(model, Int4WeightOnlyConfig(group_size=32))   # in place
    report.model     # the quantized model
    report.skipped   # {"features.1.conv": "groups=32: grouped/depthwise convolutions stay as they are ...", ...}

``quantize_`` is core's conversion walk (:mod:`slimtorch.core.conversions`) with a
:class:`WeightConfig`: every ``nn.Linear`` and groups=1 ``nn.Conv2d`` (by the walk's one
eligibility rule) becomes the config's quantized linear layer, a convolution as a
:class:`~slimtorch.core.modules.GemmConv2d` around one. Ineligible modules stay as they are and
the report says why: grouped/depthwise convolutions, string padding or non-zero padding modes,
K not a multiple of the int4 group size, attention's ``out_proj`` (read directly by
``nn.MultiheadAttention``), our own fused layers (a shift, a shuffle, a fused activation) and
layers already compressed. Non-finite weights raise ``ValueError``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import safetensors
import safetensors.torch
import torch
from torch import nn

from slimtorch.core.checks import check_choice
from slimtorch.core.conversions import ConversionReport, FilterFn, GemmConversion, convert_model
from slimtorch.core.model_stats import state_dict_tensors
from slimtorch.core.modules import GemmConv2d, replace_submodule
from slimtorch.quant import formats
from slimtorch.quant.layers import (
    BinaryLinear,
    CodebookLinear,
    Int4WeightOnlyLinear,
    Int8DynamicActivationInt8WeightLinear,
    Int8WeightOnlyLinear,
    QuantizedLinear,
    TernaryLinear,
    build_layer,
    describe_layer,
)

METADATA_KEY = "slimtorch.quant.layers"


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class WeightConfig(GemmConversion):
    """Base of the quantization configs: which layer class, with which options."""

    linear_class: ClassVar[type[QuantizedLinear]]

    def options(self) -> dict[str, Any]:
        return {}

    def quantize_weight(self, weight: torch.Tensor, bias: torch.Tensor | None) -> QuantizedLinear:
        """An (N, K) weight (a Conv2d's reshaped) as this config's linear layer."""
        return self.linear_class.from_weight(weight, bias, **self.options())

    def to_gemm(self, linear: nn.Linear) -> QuantizedLinear:
        return self.quantize_weight(linear.weight.detach(), linear.bias)


@dataclass(frozen=True)
class Int8WeightOnlyConfig(WeightConfig):
    """int8 weights with per-output-channel scales; activations stay in floating point."""

    linear_class = Int8WeightOnlyLinear


@dataclass(frozen=True)
class Int8DynamicActivationInt8WeightConfig(WeightConfig):
    """W8A8: int8 per-channel weights, activations quantized per token at run time."""

    linear_class = Int8DynamicActivationInt8WeightLinear


@dataclass(frozen=True)
class Int4WeightOnlyConfig(WeightConfig):
    """int4 weights, asymmetric, in groups of ``group_size`` ∈ {32, 64, 128} along K."""

    linear_class = Int4WeightOnlyLinear
    group_size: int = 128
    scale_dtype: torch.dtype = torch.float16

    def __post_init__(self):
        check_choice(self.group_size, "group_size", formats.INT4_GROUP_SIZES)
        check_choice(self.scale_dtype, "scale_dtype", (torch.float16, torch.bfloat16, torch.float32))

    def options(self) -> dict[str, Any]:
        return {"group_size": self.group_size, "scale_dtype": self.scale_dtype}

    def gemm_skip_reason(self, out_features: int, in_features: int) -> str | None:
        if in_features % self.group_size:
            return f"in_features {in_features} is not a multiple of group_size {self.group_size}"
        return None


@dataclass(frozen=True)
class BinaryWeightConfig(WeightConfig):
    """1-bit weights α_n · sign(W) (BWN / XNOR-Net weights); activations stay in floating point."""

    linear_class = BinaryLinear


@dataclass(frozen=True)
class TernaryWeightConfig(WeightConfig):
    """2-bit ternary weights with the TWN threshold 0.7·mean|W_n|; ``asymmetric`` gives each channel
    separate positive and negative values (TTQ-style {−a_n, 0, +a_p})."""

    linear_class = TernaryLinear
    asymmetric: bool = False

    def options(self) -> dict[str, Any]:
        return {"asymmetric": self.asymmetric}


@dataclass(frozen=True)
class CodebookWeightConfig(WeightConfig):
    """Deep Compression weight sharing: a 2^bits-entry k-means codebook per layer (bits 2..8)."""

    linear_class = CodebookLinear
    bits: int = 4
    iterations: int = formats.KMEANS_ITERATIONS

    def __post_init__(self):
        check_choice(self.bits, "bits", formats.CODEBOOK_BITS)

    def options(self) -> dict[str, Any]:
        return {"bits": self.bits}

    def quantize_weight(self, weight: torch.Tensor, bias: torch.Tensor | None) -> QuantizedLinear:
        packed = formats.quantize_codebook(weight.detach(), self.bits, self.iterations)
        return CodebookLinear.from_packed(packed, weight.shape[1], weight.shape[0], bias, bits=self.bits)


# ----------------------------------------------------------------------------- quantize_


def quantize_(model: nn.Module, config: WeightConfig, filter_fn: FilterFn | None = None) -> ConversionReport:
    """Quantize every eligible Linear and groups=1 Conv2d of ``model`` in place (module docstring).

    ``filter_fn(module, fqn)`` returning False leaves a module alone. Returns the report;
    ``report.model`` is the model (a new object only when the root itself was a Linear/Conv2d).
    """
    if not isinstance(config, WeightConfig):
        raise TypeError(f"config: expected a quantization config such as Int8WeightOnlyConfig, got {config!r}")
    return convert_model(model, config, filter_fn, conversion="quantize_")


# ----------------------------------------------------------------------------- safetensors


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every quantized layer (a quantized linear, or a GemmConv2d around one; not the linear inside
    a conv) by name."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        parent = found.get(name.rpartition(".")[0])
        quantized_conv = isinstance(module, GemmConv2d) and isinstance(module.gemm, QuantizedLinear)
        if (isinstance(module, QuantizedLinear) or quantized_conv) and not isinstance(parent, GemmConv2d):
            found[name] = module
    return found


def to_safetensors(model: nn.Module, path: str | Path) -> None:
    """Save the model's state_dict (packed weights included) with the layout of its quantized
    layers in the file's metadata, so :func:`load_quantized` can rebuild them. No pickle."""
    layers = {name: describe_layer(module) for name, module in quantized_layers(model).items()}
    safetensors.torch.save_file(state_dict_tensors(model), str(path), metadata={METADATA_KEY: json.dumps(layers)})


def _read_layouts(path: str | Path) -> dict[str, dict[str, Any]]:
    """The file's layer descriptions, validated: a ``ValueError`` naming the file for a file that is
    not safetensors (empty, truncated, foreign), and for metadata that is not our JSON layout."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"path: {path} is not a readable safetensors file ({error})") from None
    if METADATA_KEY not in metadata:
        raise ValueError(f"path: {path} has no {METADATA_KEY!r} metadata; was it written by to_safetensors?")
    try:
        layouts = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ValueError(f"path: {path}: metadata {METADATA_KEY!r} is not valid JSON ({error})") from None
    if not isinstance(layouts, dict):
        raise ValueError(
            f"path: {path}: metadata {METADATA_KEY!r}: expected a JSON object, got {type(layouts).__name__}"
        )
    for name, description in layouts.items():
        if not isinstance(description, dict) or not isinstance(description.get("class"), str):
            raise ValueError(
                f"path: {path}: metadata {METADATA_KEY!r}[{name!r}]: expected an object with a 'class' name, "
                f"got {description!r}"
            )
    return layouts


def _build(path: str | Path, name: str, description: dict[str, Any], device: torch.device) -> nn.Module:
    try:
        return build_layer(description, device)
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise ValueError(
            f"path: {path}: metadata for layer {name!r} cannot build a layer ({error}): {description}"
        ) from None


def load_quantized(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a file written by :func:`to_safetensors` into ``model``, the float architecture it was
    quantized from: the quantized layers are rebuilt at their names, then every tensor is loaded
    (strict; each stored tensor's dtype, shape and value range checked, naming its key). Returns
    the model (a new object only if the root itself was quantized). A file that is not a readable
    safetensors file, metadata that is not our layout, and missing or extra tensors raise
    ``ValueError`` naming the path. (No checksums: a flipped byte inside a tensor's data loads as
    what the file holds if that is a valid value; the compressed file of slimtorch-compress has them.)"""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    for name, description in _read_layouts(path).items():
        try:
            target = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"path: {path}: metadata names a layer {name!r} that the model does not have") from None
        device = next(iter(target.parameters()), torch.empty(0)).device
        model = replace_submodule(model, name, _build(path, name, description, device))
    device = next(iter(model.buffers()), torch.empty(0)).device
    try:
        tensors = safetensors.torch.load_file(str(path), device=str(device))
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"path: {path} is not a readable safetensors file ({error})") from None
    try:
        model.load_state_dict(tensors, strict=True, assign=False)
    except RuntimeError as error:  # missing or unexpected keys
        raise ValueError(f"path: {path}: {error}") from None
    except (ValueError, TypeError) as error:  # a stored tensor's dtype, shape or values (named by key)
        raise type(error)(f"path: {path}: {error}") from None
    return model

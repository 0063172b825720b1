"""Model-level quantization: typed configs, ``quantize_``, and safetensors export/import.

    from slimtorch.quant import quantize_, Int4WeightOnlyConfig, QuantizeReport
    report = QuantizeReport()
    quantize_(model, Int4WeightOnlyConfig(group_size=32), report=report)   # in place, returns model
    report.skipped   # {"features.1.conv": "grouped/depthwise convolution (groups=32) stays in float", ...}

``quantize_`` replaces every eligible ``nn.Linear`` by the config's quantized linear layer and
every eligible ``nn.Conv2d`` by a :class:`~slimtorch.quant.layers.QuantizedConv2d` around one.
Ineligible layers stay as they are and are listed in the report (and logged at INFO on the
``slimtorch.quant`` logger): grouped/depthwise convolutions, string padding or non-zero padding
modes, K not a multiple of the int4 group size, Linear layers read directly by their parent
(``nn.MultiheadAttention.out_proj``). Non-finite weights raise ``ValueError``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import safetensors
import safetensors.torch
import torch
from torch import nn

from slimtorch.core.checks import check_choice
from slimtorch.core.model_stats import state_dict_tensors
from slimtorch.core.modules import replace_submodule
from slimtorch.quant import formats
from slimtorch.quant.layers import (
    BinaryLinear,
    CodebookLinear,
    Int4WeightOnlyLinear,
    Int8DynamicActivationInt8WeightLinear,
    Int8WeightOnlyLinear,
    QuantizedConv2d,
    QuantizedLinear,
    TernaryLinear,
    build_layer,
)

logger = logging.getLogger("slimtorch.quant")

METADATA_KEY = "slimtorch.quant.layers"

FilterFn = Callable[[nn.Module, str], bool]


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class WeightConfig:
    """Base of the quantization configs: which layer class, with which options."""

    linear_class: ClassVar[type[QuantizedLinear]]

    def options(self) -> dict[str, Any]:
        return {}

    def skip_reason(self, in_features: int) -> str | None:
        """Why a layer with this K cannot take the format (None: it can)."""
        return None

    def quantize_weight(self, weight: torch.Tensor, bias: torch.Tensor | None) -> QuantizedLinear:
        """An (N, K) weight (a Conv2d's reshaped) as this config's linear layer."""
        return self.linear_class.from_weight(weight, bias, **self.options())


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

    def skip_reason(self, in_features: int) -> str | None:
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


@dataclass
class QuantizeReport:
    """What ``quantize_`` / ``prepare_qat`` did: converted module names and skipped ones with why."""

    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def module_skip_reason(module: nn.Module, parent: nn.Module | None) -> str | None:
    """Why a Linear/Conv2d cannot be replaced by a GEMM-backed layer, whatever the format."""
    if isinstance(parent, nn.MultiheadAttention):
        return "nn.MultiheadAttention reads its out_proj weight directly"
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"grouped/depthwise convolution (groups={module.groups}) stays in float"
        if isinstance(module.padding, str):
            return f"string padding {module.padding!r} is not supported"
        if module.padding_mode != "zeros":
            return f"padding_mode {module.padding_mode!r} is not supported"
    return None


def in_features_of(module: nn.Module) -> int:
    """K of the GEMM a Linear or Conv2d becomes (C·kh·kw for a convolution)."""
    return module.weight[0].numel()


def eligible_modules(
    model: nn.Module,
    kinds: tuple[type[nn.Module], ...],
    skip_reason: Callable[[nn.Module], str | None],
    filter_fn: FilterFn | None,
    report: QuantizeReport,
) -> list[str]:
    """Names of the modules of ``kinds`` to convert; the rest of them are recorded in ``report``."""
    parents = {
        f"{name}.{child}" if name else child: m for name, m in model.named_modules() for child, _ in m.named_children()
    }
    chosen = []
    for name, module in model.named_modules():
        if not isinstance(module, kinds) or (filter_fn is not None and not filter_fn(module, name)):
            continue
        reason = module_skip_reason(module, parents.get(name)) or skip_reason(module)
        if reason is None:
            chosen.append(name)
        else:
            report.skipped[name] = reason
            logger.info("slimtorch.quant: %s left as is: %s", name or "<root>", reason)
    return chosen


def quantize_module(module: nn.Module, config: WeightConfig) -> nn.Module:
    """One Linear or Conv2d as the config's quantized layer."""
    if isinstance(module, nn.Conv2d):
        return QuantizedConv2d.wrap(module, config.quantize_weight)
    return config.quantize_weight(module.weight, module.bias)


def quantize_(
    model: nn.Module,
    config: WeightConfig,
    filter_fn: FilterFn | None = None,
    *,
    report: QuantizeReport | None = None,
) -> nn.Module:
    """Quantize every eligible Linear and groups=1 Conv2d of ``model`` in place; returns the model.

    ``filter_fn(module, name)`` returning False leaves a module alone (not reported). Pass a
    :class:`QuantizeReport` to learn what was converted and what was skipped and why.
    """
    if not isinstance(config, WeightConfig):
        raise TypeError(f"config: expected a quantization config such as Int8WeightOnlyConfig, got {config!r}")
    report = report if report is not None else QuantizeReport()
    names = eligible_modules(
        model, (nn.Linear, nn.Conv2d), lambda m: config.skip_reason(in_features_of(m)), filter_fn, report
    )
    for name in names:
        model = replace_submodule(model, name, quantize_module(model.get_submodule(name), config))
        report.converted.append(name)
    return model


# ----------------------------------------------------------------------------- safetensors


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every quantized layer (linear or conv; not the linear inside a conv) by name."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        parent = found.get(name.rpartition(".")[0])
        if isinstance(module, (QuantizedLinear, QuantizedConv2d)) and not isinstance(parent, QuantizedConv2d):
            found[name] = module
    return found


def to_safetensors(model: nn.Module, path: str | Path) -> None:
    """Save the model's state_dict (packed weights included) with the layout of its quantized
    layers in the file's metadata, so :func:`load_quantized` can rebuild them. No pickle."""
    layers = {name: module.describe() for name, module in quantized_layers(model).items()}
    safetensors.torch.save_file(state_dict_tensors(model), str(path), metadata={METADATA_KEY: json.dumps(layers)})


def load_quantized(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a file written by :func:`to_safetensors` into ``model``, the float architecture it was
    quantized from: the quantized layers are rebuilt at their names, then every tensor is loaded
    (strict). Returns the model (a new object only if the root itself was quantized)."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"path: {path} has no {METADATA_KEY!r} metadata; was it written by to_safetensors?")
    for name, description in json.loads(metadata[METADATA_KEY]).items():
        device = next(iter(model.get_submodule(name).parameters()), torch.empty(0)).device
        model = replace_submodule(model, name, build_layer(description, device))
    device = next(iter(model.buffers()), torch.empty(0)).device
    model.load_state_dict(safetensors.torch.load_file(str(path), device=str(device)), strict=True, assign=False)
    return model

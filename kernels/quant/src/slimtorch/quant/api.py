"""Model-level quantization: typed configs, ``quantize_``, and the layers' format in the compressed file.

    from slimtorch.quant import quantize_, Int4WeightOnlyConfig
    report = quantize_(model, Int4WeightOnlyConfig(group_size=32))   # in place
    report.model     # the quantized model
    report.skipped   # {"features.1.conv": "groups=32: grouped/depthwise convolutions stay as they are ...", ...}

``quantize_`` is core's conversion walk (:mod:`slimtorch.core.conversions`) with a
:class:`WeightConfig`: every ``nn.Linear`` and groups=1 ``nn.Conv2d`` (by the walk's one
eligibility rule) becomes the config's quantized linear layer, a convolution as a
:class:`~slimtorch.core.modules.GemmConv2d` around one. Ineligible modules stay as they are and
the report says why: grouped/depthwise convolutions, string padding or non-zero padding modes,
attention's ``out_proj`` (read directly by ``nn.MultiheadAttention``), our own fused layers (a
shift, a shuffle, a fused activation) and layers already compressed. Non-finite weights raise
``ValueError``. int4 converts any K: its layout pads K to the group size with zero weights.

Mixed precision: ``quantize_(model, {"0": Int8WeightOnlyConfig(), "7": Int4WeightOnlyConfig(32)})``
gives each named layer its own config in one walk (:class:`LayerwiseConfig`) and one report.
Names are exact fqns (``model.named_modules()``); an unknown name, or one that names a module
that is neither a Linear nor a Conv2d, raises ``ValueError`` before anything changes. Every
Linear / Conv2d not in the map stays as it is, the report saying "not in the per-layer config
map"; a named layer its config cannot take is left alone with that config's reason.
:func:`slimtorch.quant.mixed.plan_bits` chooses such a map under a size or latency budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from slimtorch.core.checks import check_choice
from slimtorch.core.conversions import (
    ConversionConfig,
    ConversionReport,
    FilterFn,
    GemmConversion,
    Skip,
    conversion_source,
    convert_model,
)
from slimtorch.core.layer_formats import LayerFormat, Symbols, register_layer_format
from slimtorch.core.modules import GemmConv2d
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


@dataclass(frozen=True)
class LayerwiseConfig(ConversionConfig):
    """One config per layer, by exact fqn (module docstring): ``configs`` is a tuple of
    ``(fqn, WeightConfig)`` pairs (a tuple so the frozen config stays hashable); build it from a
    dict with :meth:`from_map`. Dispatches each visited module to its own config's
    ``convert_module``; linear/conv modules not named stay as they are, with the reason."""

    configs: tuple[tuple[str, WeightConfig], ...] = ()

    NOT_IN_MAP: ClassVar[str] = "not in the per-layer config map (left in float)"

    def __post_init__(self):
        seen: set[str] = set()
        for item in self.configs:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise TypeError(f"configs: expected (fqn, config) pairs, got {item!r}")
            fqn, config = item
            if not isinstance(config, WeightConfig):
                raise TypeError(
                    f"configs[{fqn!r}]: expected a quantization config such as Int8WeightOnlyConfig, got {config!r}"
                )
            if fqn in seen:
                raise ValueError(f"configs: {fqn!r} appears twice")
            seen.add(fqn)

    @classmethod
    def from_map(cls, configs: Mapping[str, WeightConfig]) -> LayerwiseConfig:
        if not isinstance(configs, Mapping):
            raise TypeError(f"configs: expected a mapping {{fqn: config}}, got {type(configs).__name__}")
        return cls(tuple(configs.items()))

    def as_map(self) -> dict[str, WeightConfig]:
        return dict(self.configs)

    def plan(self, model: nn.Module) -> dict[str, Any]:
        """Check every name against the model before anything changes; run each config's own plan."""
        modules = dict(model.named_modules())
        for fqn, _config in self.configs:
            if fqn not in modules:
                raise ValueError(
                    f"configs: {fqn!r} is not a module of the model (names are exact fqns); "
                    f"its linear/conv layers: {_gemm_names(model)}"
                )
            if conversion_source(modules[fqn]) is None:
                raise ValueError(
                    f"configs[{fqn!r}]: expected a Linear or Conv2d layer, got {type(modules[fqn]).__name__}"
                )
        return {fqn: config.plan(model) for fqn, config in self.configs}

    def convert_module(self, module: nn.Module, fqn: str, plan: Any) -> nn.Module | Skip | None:
        configs = dict(self.configs)
        if fqn in configs:
            return configs[fqn].convert_module(module, fqn, plan[fqn])
        if conversion_source(module) is not None:
            return Skip(self.NOT_IN_MAP)
        return None

    def describe(self) -> str:
        return f"{{{', '.join(f'{fqn!r}: {config.describe()}' for fqn, config in self.configs)}}}"


def _gemm_names(model: nn.Module, limit: int = 20) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    return names[:limit] + (["..."] if len(names) > limit else [])


def quantize_(
    model: nn.Module,
    config: WeightConfig | Mapping[str, WeightConfig] | LayerwiseConfig,
    filter_fn: FilterFn | None = None,
) -> ConversionReport:
    """Quantize every eligible Linear and groups=1 Conv2d of ``model`` in place (module docstring).

    ``config``: one config for every layer, or ``{fqn: config}`` (a :class:`LayerwiseConfig`)
    for per-layer formats in one walk. ``filter_fn(module, fqn)`` returning False leaves a
    module alone. Returns the report; ``report.model`` is the model (a new object only when the
    root itself was a Linear/Conv2d).
    """
    if isinstance(config, Mapping):
        config = LayerwiseConfig.from_map(config)
    if not isinstance(config, WeightConfig | LayerwiseConfig):
        raise TypeError(
            "config: expected a quantization config such as Int8WeightOnlyConfig or a {fqn: config} map, "
            f"got {config!r}"
        )
    report = convert_model(model, config, filter_fn, conversion="quantize_")
    if isinstance(config, LayerwiseConfig):  # a named layer inside a module the walk did not enter
        for fqn, _ in config.configs:
            if fqn not in report.converted and fqn not in report.skipped:
                report.skipped[fqn] = "inside a module left whole (the walk did not descend into it)"
    return report


# ----------------------------------------------------------------------------- the compressed file


def _claims(module: nn.Module) -> bool:
    """A quantized linear, or a GemmConv2d around one (the conv is rebuilt whole)."""
    return isinstance(module, QuantizedLinear) or (
        isinstance(module, GemmConv2d) and isinstance(module.gemm, QuantizedLinear)
    )


def _to_symbols(module: nn.Module, name: str, tensor: torch.Tensor) -> Symbols | None:
    """A codebook layer's packed ``qweight`` as its N·K indices (Deep Compression's entropy-coded stream)."""
    if not isinstance(module, CodebookLinear) or name != "qweight":
        return None
    codes = formats.unpack_codes(tensor, formats.storage_bits(module.bits), module.in_features)
    return Symbols(codes.numpy().reshape(-1), 2**module.bits, {"bits": module.bits, "in_features": module.in_features})


def _from_symbols(values, params: dict[str, Any]) -> torch.Tensor:
    bits, k = int(params["bits"]), int(params["in_features"])
    check_choice(bits, "bits", formats.CODEBOOK_BITS)
    if k <= 0 or values.size % k:
        raise ValueError(f"codes: {values.size} indices are not rows of in_features={k}")
    return formats.pack_codes(torch.from_numpy(values).long().view(-1, k), formats.storage_bits(bits))


# Quantized layers in slimtorch.core.container's file: save_compressed(model, path) writes them
# packed, load_compressed(path, float_model) rebuilds them (build_layer) and they run packed.
QUANT_LAYER_FORMAT = register_layer_format(
    LayerFormat(
        name="quant",
        family="quant",
        claims=_claims,
        describe=describe_layer,
        build=lambda description, device, dtype: build_layer(description, device),
        to_symbols=_to_symbols,
        from_symbols=_from_symbols,
    )
)

"""slimtorch-quant: real low-bit weights for Linear and Conv2d, with the kernels that run them.

Formats (``formats``): int8 per-channel, int4 group-wise (+ GPTQ import/export), W8A8 dynamic,
binary, ternary, codebook. Ops (``slimtorch::*`` custom ops: Triton on CUDA, references on CPU)
are re-exported here; model level: ``quantize_(model, config)`` with the configs below, and
saving through core's compressed file (``slimtorch.core.container.save_compressed`` /
``load_compressed``, the layers registered by ``api``); QAT: ``prepare_qat`` / ``convert_qat``. Importing
registers the package's conversions in core's registry.
"""

from functools import partial

from slimtorch.core.registry import RegisteredConversion, register_conversion
from slimtorch.quant.api import (
    BinaryWeightConfig,
    CodebookWeightConfig,
    Int4WeightOnlyConfig,
    Int8DynamicActivationInt8WeightConfig,
    Int8WeightOnlyConfig,
    TernaryWeightConfig,
    WeightConfig,
    quantize_,
)
from slimtorch.quant.codebook_mm import codebook_mm
from slimtorch.quant.int4_mm import int4_weight_mm
from slimtorch.quant.int8_mm import int8_weight_mm
from slimtorch.quant.layers import (
    BinaryLinear,
    CodebookLinear,
    Int4WeightOnlyLinear,
    Int8DynamicActivationInt8WeightLinear,
    Int8WeightOnlyLinear,
    QuantizedLinear,
    TernaryLinear,
)
from slimtorch.quant.lowbit_mm import lowbit_weight_mm
from slimtorch.quant.qat import (
    DoReFaConfig,
    FakeQuantConv2d,
    FakeQuantLinear,
    LSQConfig,
    TTQConfig,
    convert_qat,
    prepare_qat,
)
from slimtorch.quant.w8a8_mm import quantize_per_token, w8a8_linear

__all__ = [
    "BinaryLinear",
    "BinaryWeightConfig",
    "CodebookLinear",
    "CodebookWeightConfig",
    "DoReFaConfig",
    "FakeQuantConv2d",
    "FakeQuantLinear",
    "Int4WeightOnlyConfig",
    "Int4WeightOnlyLinear",
    "Int8DynamicActivationInt8WeightConfig",
    "Int8DynamicActivationInt8WeightLinear",
    "Int8WeightOnlyConfig",
    "Int8WeightOnlyLinear",
    "LSQConfig",
    "QuantizedLinear",
    "TTQConfig",
    "TernaryLinear",
    "TernaryWeightConfig",
    "WeightConfig",
    "codebook_mm",
    "convert_qat",
    "int4_weight_mm",
    "int8_weight_mm",
    "lowbit_weight_mm",
    "prepare_qat",
    "quantize_",
    "quantize_per_token",
    "w8a8_linear",
]

_GEMM_LAYERS = "Linear and groups=1 Conv2d (depthwise/grouped stay float)"
_CONVERSIONS = [
    ("int8", Int8WeightOnlyConfig(), f"int8 weights, per-channel scales, fp activations; {_GEMM_LAYERS}"),
    (
        "w8a8",
        Int8DynamicActivationInt8WeightConfig(),
        f"int8 weights (per channel) x int8 activations (per token, dynamic); {_GEMM_LAYERS}",
    ),
    ("int4-g32", Int4WeightOnlyConfig(group_size=32), f"int4 weights, groups of 32 along K; {_GEMM_LAYERS}"),
    ("int4-g128", Int4WeightOnlyConfig(group_size=128), f"int4 weights, groups of 128 along K; {_GEMM_LAYERS}"),
    ("binary", BinaryWeightConfig(), f"1-bit weights alpha_n * sign(W) (BWN); {_GEMM_LAYERS}"),
    ("ternary", TernaryWeightConfig(), f"2-bit ternary weights, TWN threshold 0.7 mean|W|; {_GEMM_LAYERS}"),
    ("codebook-4bit", CodebookWeightConfig(bits=4), f"16-centroid k-means codebook per layer; {_GEMM_LAYERS}"),
]
for _name, _config, _description in _CONVERSIONS:
    register_conversion(
        RegisteredConversion(
            name=_name, family="quant", description=_description, convert=partial(quantize_, config=_config)
        )
    )

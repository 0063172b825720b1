"""slimtorch-quant: real low-bit weights for Linear and Conv2d, with the kernels that run them.

Formats (``formats``): int8 per-channel, int4 group-wise (+ GPTQ import/export), W8A8 dynamic,
binary, ternary, codebook; power-of-two (``pow2``, INQ's weight set), product quantization
(``product``, Q-CNN), and binary weights *and* activations (``binary`` / ``xnor_mm``: XNOR-Net,
BNN, Bi-Real Net). Ops (``slimtorch::*`` custom ops: Triton on CUDA, references on CPU) are
re-exported here; model level: ``quantize_(model, config)`` with the configs below or a
per-layer ``{fqn: config}`` map (``mixed.plan_bits`` chooses one under a size or latency budget),
``binarize_`` for XNOR / BNN layers, and saving through core's compressed file
(``slimtorch.core.container.save_compressed`` / ``load_compressed``, the layers registered by
``api`` and ``binary``); training: ``prepare_qat`` / ``convert_qat``, ``INQ``, the binary layers'
straight-through estimators. Importing registers the package's conversions in core's registry.
"""

from functools import partial

from slimtorch.core.registry import RegisteredConversion, register_conversion
from slimtorch.quant.api import (
    BinaryWeightConfig,
    CodebookWeightConfig,
    Int4WeightOnlyConfig,
    Int8DynamicActivationInt8WeightConfig,
    Int8WeightOnlyConfig,
    LayerwiseConfig,
    TernaryWeightConfig,
    WeightConfig,
    quantize_,
)
from slimtorch.quant.binary import (
    XNOR_CONVERSION,
    BinarizeConfig,
    BinaryActivationConv2d,
    BinaryActivationLinear,
    XnorConv2d,
    XnorLinear,
    binarize_,
    clip_latent_weights_,
    freeze_,
    sign_ste,
    xnor_weight,
)
from slimtorch.quant.codebook_mm import codebook_mm
from slimtorch.quant.inq import INQ, INQ_PORTIONS
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
from slimtorch.quant.mixed import (
    DEFAULT_CANDIDATES,
    FORMATS,
    BitPlan,
    LatencyBudget,
    Sensitivity,
    SizeBudget,
    kl_to_float,
    plan_bits,
    solve_knapsack,
)
from slimtorch.quant.pow2 import POW2_BITS, Pow2Linear, Pow2WeightConfig, dequantize_pow2, quantize_pow2
from slimtorch.quant.pow2_mm import pow2_weight_mm
from slimtorch.quant.pq_mm import pq_mm
from slimtorch.quant.product import ProductQuantConfig, ProductQuantizedLinear, product_layers, quantize_product
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
from slimtorch.quant.xnor_mm import pack_signs, pack_weight_signs, unpack_signs, xnor_conv2d, xnor_mm

__all__ = [
    "DEFAULT_CANDIDATES",
    "FORMATS",
    "INQ",
    "INQ_PORTIONS",
    "POW2_BITS",
    "XNOR_CONVERSION",
    "BinarizeConfig",
    "BinaryActivationConv2d",
    "BinaryActivationLinear",
    "BinaryLinear",
    "BinaryWeightConfig",
    "BitPlan",
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
    "LatencyBudget",
    "LayerwiseConfig",
    "Pow2Linear",
    "Pow2WeightConfig",
    "ProductQuantConfig",
    "ProductQuantizedLinear",
    "QuantizedLinear",
    "Sensitivity",
    "SizeBudget",
    "TTQConfig",
    "TernaryLinear",
    "TernaryWeightConfig",
    "WeightConfig",
    "XnorConv2d",
    "XnorLinear",
    "binarize_",
    "clip_latent_weights_",
    "codebook_mm",
    "convert_qat",
    "dequantize_pow2",
    "freeze_",
    "int4_weight_mm",
    "int8_weight_mm",
    "kl_to_float",
    "lowbit_weight_mm",
    "pack_signs",
    "pack_weight_signs",
    "plan_bits",
    "pow2_weight_mm",
    "pq_mm",
    "prepare_qat",
    "product_layers",
    "quantize_",
    "quantize_per_token",
    "quantize_pow2",
    "quantize_product",
    "sign_ste",
    "solve_knapsack",
    "unpack_signs",
    "w8a8_linear",
    "xnor_conv2d",
    "xnor_mm",
    "xnor_weight",
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
    (
        "pow2-5bit",
        Pow2WeightConfig(bits=5),
        f"INQ power-of-two weights {{0, ±2^n}}, 5 bits, exponent-add decode; {_GEMM_LAYERS}",
    ),
    (
        "pq-d4-c16",
        ProductQuantConfig(sub_dim=4, centroids=16),
        f"product quantization (Q-CNN): 4-weight sub-vectors, 16 centroids per subspace, LUT GEMM; {_GEMM_LAYERS}",
    ),
]
for _name, _config, _description in _CONVERSIONS:
    register_conversion(
        RegisteredConversion(
            name=_name, family="quant", description=_description, convert=partial(quantize_, config=_config)
        )
    )
register_conversion(XNOR_CONVERSION)

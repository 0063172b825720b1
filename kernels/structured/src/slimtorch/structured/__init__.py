"""slimtorch-structured: parameter sharing and low-rank layers that are smaller and faster.

Layers (``layers``, ``lowrank``): :class:`CirculantLinear`, :class:`BlockCirculantLinear`,
:class:`BlockCirculantConv2d`, :class:`FastfoodLinear` (adaptive or fixed), :class:`HashedLinear`,
:class:`LowRankLinear`, :class:`LowRankConv2d`, Tucker-2 / CP / separable convolutions and
:class:`TTLinear`. Ops (``slimtorch::*`` custom ops: Triton on CUDA, references on CPU):
``block_circulant_fft_mm``, ``block_circulant_direct_mm``, ``fwht``, ``hashed_mm``. Model level:
``structure_(model, config)`` with the configs below; saved and loaded by core's compressed file
(``slimtorch.core.container``).
Importing registers the package's conversions with :mod:`slimtorch.core.registry`.
"""

from slimtorch.core.registry import RegisteredConversion, register_conversion
from slimtorch.structured.api import (
    BlockCirculantConfig,
    CirculantConfig,
    CPConfig,
    FastfoodConfig,
    HashedConfig,
    LowRankConfig,
    TTConfig,
    TuckerConfig,
    structure_,
)
from slimtorch.structured.block_circulant import (
    block_circulant_direct_mm,
    block_circulant_fft_mm,
    block_circulant_matrix,
    block_circulant_mm,
    choose_path,
)
from slimtorch.structured.hadamard import fwht, hadamard_matrix
from slimtorch.structured.hashing import hashed_mm
from slimtorch.structured.layers import (
    BlockCirculantConv2d,
    BlockCirculantLinear,
    CirculantLinear,
    FastfoodLinear,
    HashedLinear,
    project_block_circulant,
    project_circulant,
)
from slimtorch.structured.lowrank import (
    CPConv2d,
    LowRankConv2d,
    LowRankLinear,
    SeparableConv2d,
    TTLinear,
    TuckerConv2d,
    cp_decompose_conv,
    select_rank,
    separable_decompose_conv,
    tucker_decompose_conv,
)

__all__ = [
    "BlockCirculantConfig",
    "BlockCirculantConv2d",
    "BlockCirculantLinear",
    "CPConfig",
    "CPConv2d",
    "CirculantConfig",
    "CirculantLinear",
    "FastfoodConfig",
    "FastfoodLinear",
    "HashedConfig",
    "HashedLinear",
    "LowRankConfig",
    "LowRankConv2d",
    "LowRankLinear",
    "SeparableConv2d",
    "TTConfig",
    "TTLinear",
    "TuckerConfig",
    "TuckerConv2d",
    "block_circulant_direct_mm",
    "block_circulant_fft_mm",
    "block_circulant_matrix",
    "block_circulant_mm",
    "choose_path",
    "cp_decompose_conv",
    "fwht",
    "hadamard_matrix",
    "hashed_mm",
    "project_block_circulant",
    "project_circulant",
    "select_rank",
    "separable_decompose_conv",
    "structure_",
    "tucker_decompose_conv",
]

# name, config, description: one registered conversion each (the demo, the zoo and the tests iterate them)
CONVERSIONS = [
    (
        "block-circulant-b8",
        BlockCirculantConfig(block_size=8),
        "8x8 circulant blocks (FFT or direct kernel) on Linear and pointwise 1x1 convs whose sizes 8 divides",
    ),
    (
        "low-rank-0.5",
        LowRankConfig(param_ratio=0.5),
        "truncated SVD keeping half the weights of Linear and conv layers",
    ),
    ("tucker-0.5", TuckerConfig(rank_ratio=0.5), "Tucker-2 (HOOI) of k×k convs at half the channels per mode"),
    ("hashed-0.125", HashedConfig(compression=0.125), "HashedNets Linear layers with 1/8 of the weights"),
    ("fastfood", FastfoodConfig(adaptive=True), "adaptive Fastfood Linear layers (S·H·G·Π·H·B), fitted row scales"),
]
for _name, _config, _description in CONVERSIONS:
    register_conversion(
        RegisteredConversion(
            name=_name,
            family="structured",
            description=_description,
            convert=lambda model, config=_config: structure_(model, config),
        )
    )

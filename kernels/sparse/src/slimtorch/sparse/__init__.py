"""slimtorch-sparse: 2:4 semi-structured and block-sparse (BSR) weights, as fast drop-in layers.

Formats (pure torch, exact): :func:`prune_24`, :func:`compress_24` / :func:`decompress_24`,
:func:`permute_for_24`, :func:`to_mma_sp_metadata`, :func:`prune_blocks`, :func:`to_bsr` /
:func:`from_bsr`. Ops (``torch.library`` custom ops): :func:`sparse24_mm` (Triton: split-K gather
GEMV for small M, four per-slot ``tl.dot`` above), :func:`sparse24_mm_sp` (CUDA ``mma.sp``,
opt-in, not yet GPU-verified), :func:`bsr_mm` (Triton). Layers: :class:`SparseLinear24`,
:class:`BlockSparseLinear`, :class:`MaskedSparseLinear` (fine-tuning,
SR-STE); convolutions run as core's GemmConv2d around them. Models: :func:`sparsify_`,
:func:`to_sparse_`. Registers the conversions "sparse24" and "block-sparse-50" (family "sparse").
"""

from slimtorch.core.registry import RegisteredConversion, register_conversion
from slimtorch.sparse.api import BlockSparseConfig, Sparse24Config, sparsify_, to_sparse_
from slimtorch.sparse.bsr import bsr_mm
from slimtorch.sparse.formats import (
    compress_24,
    decompress_24,
    from_bsr,
    from_mma_sp_metadata,
    permute_for_24,
    prune_24,
    prune_blocks,
    retained_magnitude,
    to_bsr,
    to_mma_sp_metadata,
)
from slimtorch.sparse.layers import BlockSparseLinear, MaskedSparseLinear, SparseLinear24
from slimtorch.sparse.mma_sp import sparse24_mm_sp
from slimtorch.sparse.sparse24 import sparse24_mm

__version__ = "0.1.0"

__all__ = [
    "BlockSparseConfig",
    "BlockSparseLinear",
    "MaskedSparseLinear",
    "Sparse24Config",
    "SparseLinear24",
    "bsr_mm",
    "compress_24",
    "decompress_24",
    "from_bsr",
    "from_mma_sp_metadata",
    "permute_for_24",
    "prune_24",
    "prune_blocks",
    "retained_magnitude",
    "sparse24_mm",
    "sparse24_mm_sp",
    "sparsify_",
    "to_bsr",
    "to_mma_sp_metadata",
    "to_sparse_",
]

register_conversion(
    RegisteredConversion(
        name="sparse24",
        family="sparse",
        description="2:4 semi-structured weights (2 largest |w| of every 4 kept) in Linear and groups=1 convs",
        convert=lambda model: sparsify_(model, Sparse24Config()),
    )
)
register_conversion(
    RegisteredConversion(
        name="block-sparse-50",
        family="sparse",
        description="16x16 block-sparse (BSR) weights, half the blocks kept by L2 norm, in Linear and groups=1 convs",
        convert=lambda model: sparsify_(model, BlockSparseConfig(block_size=16, density=0.5)),
    )
)

"""Model-level sparsification: configs and :func:`sparsify_` / :func:`to_sparse_`.

    report = sparsify_(model, Sparse24Config())                     # 2:4, inference layers
    report = sparsify_(model, Sparse24Config(masked_training=True))  # fine-tune, then:
    report = to_sparse_(model)                                      # MaskedSparseLinear -> SparseLinear24
    report = sparsify_(model, BlockSparseConfig(block_size=32, density=0.5))

``sparsify_`` is core's conversion walk (:mod:`slimtorch.core.conversions`): every ``nn.Linear``
and groups=1 ``nn.Conv2d`` (by the walk's one eligibility rule; convolutions as core's
:class:`~slimtorch.core.modules.GemmConv2d` around the sparse GEMM) is converted when K (in
features: C·kh·kw for a convolution) is divisible by 4 (2:4) or N and K by the block size (BSR)
and ``filter_fn(module, fqn)`` (if given) returns True. Everything else is left as it is, and the
report says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from slimtorch.core.checks import check_choice
from slimtorch.core.conversions import ConversionConfig, ConversionReport, FilterFn, GemmConversion, convert_model
from slimtorch.core.dispatch import check_backend
from slimtorch.core.layer_formats import LayerFormat, register_layer_format
from slimtorch.core.modules import GemmConv2d
from slimtorch.sparse.formats import BLOCK_SIZES
from slimtorch.sparse.layers import (
    KERNELS_24,
    BlockSparseLinear,
    MaskedSparseLinear,
    SparseLinear24,
    build_layer,
    describe_layer,
)


@dataclass(frozen=True)
class Sparse24Config(GemmConversion):
    """2:4 sparsity. ``permute``: search an input-channel permutation first (keeps more
    magnitude). ``masked_training``: produce :class:`MaskedSparseLinear` (dense weight × mask)
    for fine-tuning instead of the compressed layer; ``sr_ste`` (implies masked training)
    recomputes the mask every step with the SR-STE gradient, decay ``sr_ste_lambda``.
    ``backend``: see :class:`SparseLinear24`."""

    permute: bool = False
    masked_training: bool = False
    sr_ste: bool = False
    sr_ste_lambda: float = 2e-4
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_backend(self.backend, KERNELS_24, "Sparse24Config")

    def gemm_skip_reason(self, out_features: int, in_features: int) -> str | None:
        return None if in_features % 4 == 0 else f"in_features {in_features} is not a multiple of 4 (2:4 groups)"

    def to_gemm(self, linear: nn.Linear) -> nn.Module:
        if self.masked_training or self.sr_ste:
            return MaskedSparseLinear.from_dense(linear, sr_ste=self.sr_ste, sr_ste_lambda=self.sr_ste_lambda)
        return SparseLinear24.from_dense(linear, permute=self.permute, backend=self.backend)


@dataclass(frozen=True)
class BlockSparseConfig(GemmConversion):
    """Block sparsity: keep ``ceil(density · blocks)`` square blocks of ``block_size`` by L2 norm."""

    block_size: int = 32
    density: float = 0.5

    def __post_init__(self) -> None:
        check_choice(self.block_size, "block_size", BLOCK_SIZES)
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"density: expected a value in (0, 1], got {self.density!r}")

    def gemm_skip_reason(self, out_features: int, in_features: int) -> str | None:
        if out_features % self.block_size or in_features % self.block_size:
            return (
                f"(out, in) features ({out_features}, {in_features}) are not multiples of block_size {self.block_size}"
            )
        return None

    def to_gemm(self, linear: nn.Linear) -> nn.Module:
        return BlockSparseLinear.from_dense(linear, self.block_size, self.density)


def sparsify_(
    model: nn.Module, config: Sparse24Config | BlockSparseConfig, filter_fn: FilterFn | None = None
) -> ConversionReport:
    """Replace every eligible Linear / groups=1 Conv2d of ``model`` in place by its sparse layer
    (module docstring); returns the report (``report.model`` is the model)."""
    if not isinstance(config, (Sparse24Config, BlockSparseConfig)):
        raise TypeError(f"config: expected Sparse24Config or BlockSparseConfig, got {type(config).__name__}")
    return convert_model(model, config, filter_fn, conversion="sparsify_")


@dataclass(frozen=True)
class _ToSparse(ConversionConfig):
    backend: str = "auto"

    def convert_module(self, module: nn.Module, fqn: str, plan: object) -> nn.Module | None:
        return module.to_sparse(backend=self.backend) if isinstance(module, MaskedSparseLinear) else None


def to_sparse_(model: nn.Module, *, backend: str = "auto") -> ConversionReport:
    """After fine-tuning: replace every :class:`MaskedSparseLinear` by the compressed
    :class:`SparseLinear24` with its current mask (convolutions keep their GemmConv2d wrapper)."""
    check_backend(backend, KERNELS_24, "to_sparse_")
    return convert_model(model, _ToSparse(backend), conversion="to_sparse_")


# ----------------------------------------------------------------------------- the compressed file


def _claims(module: nn.Module) -> bool:
    """A compressed sparse linear, or a GemmConv2d around one (quant claims only those around its
    own layers); MaskedSparseLinear is a dense nn.Linear for fine-tuning and is not stored here."""
    sparse = (SparseLinear24, BlockSparseLinear)
    return isinstance(module, sparse) or (isinstance(module, GemmConv2d) and isinstance(module.gemm, sparse))


# Sparse layers in slimtorch.core.container's file: save_compressed(model, path) writes them in
# their compressed form, load_compressed(path, dense_model) rebuilds them (build_layer) and they
# run from it.
SPARSE_LAYER_FORMAT = register_layer_format(
    LayerFormat(name="sparse", family="sparse", claims=_claims, describe=describe_layer, build=build_layer)
)

"""Model-level sparsification: configs and :func:`sparsify_` / :func:`to_sparse_`.

    model = sparsify_(model, Sparse24Config())                  # 2:4, inference layers
    model = sparsify_(model, Sparse24Config(masked_training=True))  # fine-tune, then:
    model = to_sparse_(model)                                   # MaskedSparseLinear -> SparseLinear24
    model = sparsify_(model, BlockSparseConfig(block_size=32, density=0.5))

Converted: ``nn.Linear`` (not attention's NonDynamicallyQuantizableLinear, whose weight MHA reads
directly) and 1x1 ``nn.Conv2d`` with groups=1 and no padding (as :class:`PointwiseConv2d`), when K
(in_features / in_channels) is divisible by 4 (2:4) or N and K by the block size (BSR), and
``filter_fn(module, fqn)`` (if given) returns True. Everything else is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from slimtorch.core.checks import check_choice
from slimtorch.core.modules import replace_modules
from slimtorch.sparse.formats import BLOCK_SIZES
from slimtorch.sparse.layers import (
    BACKENDS_24,
    BlockSparseLinear,
    MaskedSparseLinear,
    PointwiseConv2d,
    SparseLinear24,
)

FilterFn = Callable[[nn.Module, str], bool]


@dataclass
class Sparse24Config:
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
        check_choice(self.backend, "backend", BACKENDS_24)


@dataclass
class BlockSparseConfig:
    """Block sparsity: keep ``ceil(density · blocks)`` square blocks of ``block_size`` by L2 norm."""

    block_size: int = 32
    density: float = 0.5

    def __post_init__(self) -> None:
        check_choice(self.block_size, "block_size", BLOCK_SIZES)
        if not 0.0 < self.density <= 1.0:
            raise ValueError(f"density: expected a value in (0, 1], got {self.density!r}")


Config = Sparse24Config | BlockSparseConfig


def _linear_converter(config: Config) -> Callable[[nn.Linear], nn.Module]:
    if isinstance(config, BlockSparseConfig):
        return lambda linear: BlockSparseLinear.from_dense(linear, config.block_size, config.density)
    if config.masked_training or config.sr_ste:
        return lambda linear: MaskedSparseLinear.from_dense(
            linear, sr_ste=config.sr_ste, sr_ste_lambda=config.sr_ste_lambda
        )
    return lambda linear: SparseLinear24.from_dense(linear, permute=config.permute, backend=config.backend)


def _fits(config: Config, out_features: int, in_features: int) -> bool:
    if isinstance(config, BlockSparseConfig):
        return out_features % config.block_size == 0 and in_features % config.block_size == 0
    return in_features % 4 == 0


def _convert(module: nn.Module, config: Config) -> nn.Module | None:
    """The sparse replacement of ``module``, or None when it is not converted."""
    to_gemm = _linear_converter(config)
    if (
        isinstance(module, nn.Linear)
        and not isinstance(module, (MaskedSparseLinear, NonDynamicallyQuantizableLinear))
        and _fits(config, module.out_features, module.in_features)
    ):
        return to_gemm(module)
    if PointwiseConv2d.convertible(module) and _fits(config, module.out_channels, module.in_channels):
        return PointwiseConv2d.from_dense(module, to_gemm)
    return None


def sparsify_(model: nn.Module, config: Config, filter_fn: FilterFn | None = None) -> nn.Module:
    """Replace every eligible Linear / 1x1 Conv2d of ``model`` in place by its sparse layer.

    Returns the model (a new module when ``model`` itself is an eligible layer).
    """
    if not isinstance(config, (Sparse24Config, BlockSparseConfig)):
        raise TypeError(f"config: expected Sparse24Config or BlockSparseConfig, got {type(config).__name__}")

    def replace(module: nn.Module, fqn: str) -> nn.Module | None:
        if filter_fn is not None and not filter_fn(module, fqn):
            return None
        return _convert(module, config)

    return replace_modules(model, replace)


def to_sparse_(model: nn.Module, *, backend: str = "auto") -> nn.Module:
    """After fine-tuning: replace every :class:`MaskedSparseLinear` by the compressed
    :class:`SparseLinear24` with its current mask (1x1 convs keep their PointwiseConv2d wrapper)."""
    check_choice(backend, "backend", BACKENDS_24)

    def replace(module: nn.Module, fqn: str) -> nn.Module | None:
        return module.to_sparse(backend=backend) if isinstance(module, MaskedSparseLinear) else None

    return replace_modules(model, replace)

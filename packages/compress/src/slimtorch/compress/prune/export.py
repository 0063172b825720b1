"""Semi-structured masks and the export of masked models to fast or small formats.

    prune_semi_structured_(model, SemiStructuredConfig(pattern="2:4"))          # 2:4 masks, by |w| or scores=
    train(model)                                                                # fine-tune with the masks on
    export_sparse_(model, SparseExportConfig(format="2:4"))   # -> slimtorch.sparse.SparseLinear24 (GemmConv2d)
    save_pruned(model, "model.slim.safetensors")              # or: the compressed file (sparse encoding)

**Masks.** ``pattern="2:4"``: in every 4 consecutive weights of a row of the layer's GEMM weight
(N, K) — a convolution's (N, C·kh·kw), the layout of core's ``GemmConv2d`` — the 2 highest scores
are kept (ties: the lower index). ``pattern="block"``: the (N, K) weight cut into
``block_size``² tiles, the ``sparsity`` fraction of tiles with the lowest total score removed
(``round``; ties: the earlier row-major tile). Scores are ``|w|`` for 2:4 and ``w²`` for blocks
(the tile's squared L2 norm, as ``slimtorch.sparse.prune_blocks``), or any criterion's
``scores={fqn: tensor}`` (SNIP, OBD, ...). A layer already masked keeps its removed weights removed
(their score is −∞), so the new mask is inside the old one. Masks are those of :mod:`.unstructured`.

**Export.** :func:`export_sparse_` replaces each masked layer by ``slimtorch.sparse``'s
``SparseLinear24`` (its 2:4 mask given explicitly, so nothing is re-chosen) or
``BlockSparseLinear`` (the tiles holding a kept weight), convolutions wrapped in core's
``GemmConv2d``; the masked weight is stored exactly, so the exported model computes the masked
model's function (to the GEMM's rounding). A mask that is not 2:4 raises naming the layer and
the first bad group. :func:`save_pruned` bakes the masks into a copy and writes core's
container file, where weights with at least half zeros use the ``sparse`` encoding (positions as
entropy-coded gaps + the kept values).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtorch.compress.prune.unstructured import _attach, _eligible, _mask_of, finalize_
from slimtorch.core.checks import check_choice
from slimtorch.core.conversions import ConversionConfig, ConversionReport, FilterFn, Skip, convert_model
from slimtorch.core.modules import GemmConv2d, dense_linear, gemm_conv_skip_reason

__all__ = ["SemiStructuredConfig", "SparseExportConfig", "export_sparse_", "prune_semi_structured_", "save_pruned"]

PATTERNS = ("2:4", "block")


def _gemm_shape(module: nn.Module) -> tuple[int, int]:
    w = module.weight
    return w.shape[0], w[0].numel()


def _shape_reason(module: nn.Module, pattern: str, block_size: int) -> str | None:
    """Why a layer cannot take the pattern (None: it can)."""
    if isinstance(module, nn.Conv2d):
        reason = gemm_conv_skip_reason(module)
        if reason is not None:
            return reason
    n, k = _gemm_shape(module)
    if pattern == "2:4":
        return None if k % 4 == 0 else f"in_features {k} is not a multiple of 4 (2:4 groups)"
    if n % block_size or k % block_size:
        return f"(out, in) features ({n}, {k}) are not multiples of block_size {block_size}"
    return None


def _source(module: nn.Module) -> nn.Module | Skip | None:
    source = _eligible(module)
    if source is not None and not isinstance(source, Skip) and source is not module:
        return Skip(f"{type(module).__name__} computes a {type(source).__name__} through its own parameters")
    return source


@dataclass(frozen=True)
class SemiStructuredConfig(ConversionConfig):
    """2:4 or block masks (module docstring); ``sparsity`` and ``block_size`` for ``pattern="block"``."""

    pattern: str = "2:4"
    sparsity: float = 0.5
    block_size: int = 16
    scores: Mapping[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice(self.pattern, "pattern", PATTERNS)
        if not 0.0 <= float(self.sparsity) < 1.0:
            raise ValueError(f"sparsity: expected a fraction of blocks to remove in [0, 1), got {self.sparsity}")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"block_size: expected an int >= 1, got {self.block_size!r}")

    def describe(self) -> str:
        extra = "" if self.pattern == "2:4" else f", sparsity={self.sparsity}, block_size={self.block_size}"
        return f"SemiStructuredConfig(pattern={self.pattern!r}{extra})"

    def _score(self, fqn: str, module: nn.Module) -> torch.Tensor:
        weight = module.weight.detach().float()
        if self.scores is None:
            score = weight.abs() if self.pattern == "2:4" else weight.pow(2)
        else:
            if fqn not in self.scores:
                raise KeyError(f"scores: no entry for layer {fqn!r}")
            score = self.scores[fqn].detach().float().to(weight.device)
            if score.shape != weight.shape:
                raise ValueError(f"scores[{fqn!r}]: expected shape {tuple(weight.shape)}, got {tuple(score.shape)}")
        score = torch.nan_to_num(score, nan=float("inf"))
        mask = _mask_of(module)
        if mask is not None:
            score = torch.where(mask.mask, score, torch.full_like(score, -float("inf")))
        return score.reshape(weight.shape[0], -1)

    def mask(self, fqn: str, module: nn.Module) -> torch.Tensor:
        """The layer's new bool mask (the weight's shape)."""
        score = self._score(fqn, module)
        n, k = score.shape
        if self.pattern == "2:4":
            groups = score.reshape(n, k // 4, 4)
            kept = torch.argsort(-groups, dim=-1, stable=True)[..., :2]
            keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, kept, True).reshape(n, k)
        else:
            bs = self.block_size
            tiles = torch.nan_to_num(score, neginf=0.0).reshape(n // bs, bs, k // bs, bs).sum(dim=(1, 3))
            removed = round(float(self.sparsity) * tiles.numel())
            tile_keep = torch.ones(tiles.numel(), dtype=torch.bool, device=score.device)
            tile_keep[torch.sort(tiles.flatten(), stable=True).indices[:removed]] = False
            keep = tile_keep.reshape(tiles.shape).repeat_interleave(bs, 0).repeat_interleave(bs, 1)
        if _mask_of(module) is not None:
            keep &= _mask_of(module).mask.reshape(n, k)
        return keep.reshape(module.weight.shape)

    def convert_module(self, module: nn.Module, fqn: str, plan: Any) -> nn.Module | Skip | None:
        source = _source(module)
        if source is None or isinstance(source, Skip):
            return source
        reason = _shape_reason(module, self.pattern, self.block_size)
        if reason is not None:
            return Skip(reason)
        if self.scores is not None and fqn not in self.scores:
            return Skip("no score given for this layer")
        keep = self.mask(fqn, module)
        _attach(module, keep)
        return module


def prune_semi_structured_(
    model: nn.Module,
    config: SemiStructuredConfig,
    filter_fn: FilterFn | None = None,
    *,
    scores: Mapping[str, torch.Tensor] | None = None,
) -> ConversionReport:
    """Mask every eligible layer with a 2:4 or block pattern (module docstring)."""
    if not isinstance(config, SemiStructuredConfig):
        raise TypeError(f"config: expected a SemiStructuredConfig, got {type(config).__name__}")
    config = dataclasses.replace(config, scores=scores)
    report = convert_model(model, config, filter_fn, conversion="prune_semi_structured_")
    for name in list(report.converted):
        kept = _mask_of(model.get_submodule(name)).mask.float().mean().item()
        report.converted[name] = f"{config.pattern} mask, {1 - kept:.1%} of weights removed"
    return report


@dataclass(frozen=True)
class SparseExportConfig(ConversionConfig):
    """Masked layers -> ``slimtorch.sparse`` layers: ``format`` "2:4" (``backend`` as
    ``SparseLinear24``'s) or "block" (``block_size`` 16 | 32 | 64, BSR)."""

    format: str = "2:4"
    block_size: int = 32
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_choice(self.format, "format", PATTERNS)
        if self.format == "block":
            from slimtorch.sparse.formats import BLOCK_SIZES

            check_choice(self.block_size, "block_size", BLOCK_SIZES)

    def convert_module(self, module: nn.Module, fqn: str, plan: Any) -> nn.Module | Skip | None:
        from slimtorch.sparse import BlockSparseLinear, SparseLinear24

        mask = _mask_of(module)
        if mask is None:
            source = _source(module)
            return source if source is None or isinstance(source, Skip) else Skip("no pruning mask")
        reason = _shape_reason(module, self.format, self.block_size)
        if reason is not None:
            return Skip(reason)
        n, k = _gemm_shape(module)
        keep = mask.mask.reshape(n, k)
        linear = dense_linear(
            module.weight.detach().reshape(n, k), None if module.bias is None else module.bias.detach()
        )
        if self.format == "2:4":
            bad = keep.reshape(n, k // 4, 4).sum(-1) > 2
            if bad.any():
                row, group = bad.nonzero()[0].tolist()
                raise ValueError(
                    f"model.{fqn}: expected a 2:4 mask (at most 2 kept in every 4 consecutive weights), got "
                    f"{int(keep.reshape(n, k // 4, 4)[row, group].sum())} kept in row {row}, group {group}; "
                    "mask it with prune_semi_structured_(model, SemiStructuredConfig('2:4')) first"
                )
            gemm = SparseLinear24.from_dense(linear, mask=keep, backend=self.backend)
        else:
            bs = self.block_size
            tiles = keep.reshape(n // bs, bs, k // bs, bs).any(dim=3).any(dim=1)
            gemm = BlockSparseLinear.from_dense(linear, bs, block_mask=tiles)
        if isinstance(module, nn.Conv2d):
            padding = (0, 0) if module.padding == "valid" else module.padding
            return GemmConv2d(gemm, module.in_channels, module.kernel_size, module.stride, padding, module.dilation)
        return gemm


def export_sparse_(
    model: nn.Module, config: SparseExportConfig | None = None, filter_fn: FilterFn | None = None
) -> ConversionReport:
    """Replace every masked Linear / Conv2d by its ``slimtorch.sparse`` layer (module docstring)."""
    config = SparseExportConfig() if config is None else config
    if not isinstance(config, SparseExportConfig):
        raise TypeError(f"config: expected a SparseExportConfig, got {type(config).__name__}")
    return convert_model(model, config, filter_fn, conversion="export_sparse_")


def save_pruned(model: nn.Module, path: str | Path, *, coder: str = "ans", **options: Any):
    """Bake the masks into a copy of ``model`` and write it as the compressed file
    (``slimtorch.core.container.save_compressed``; ``options``: architecture, extra, overwrite).
    Returns the :class:`~slimtorch.core.container.SavedFile`; load with ``load_compressed``."""
    from slimtorch.core import container

    plain = copy.deepcopy(model)
    finalize_(plain)
    return container.save_compressed(plain, path, coder=coder, **options)

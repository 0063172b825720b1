"""Deep Compression's weight sharing (Han, Mao, Dally 2016, §3): k-means centroids per layer,
retrained, then stored as quant's :class:`~slimtorch.quant.CodebookLinear` (indices + codebook).

1. :func:`share_weights_` clusters each layer's *nonzero* weights with quant's 1-D k-means
   (``formats.kmeans_1d``: linear initialisation, which the paper found best) into ``2^bits``
   centroids; pruned weights keep an exact zero. The weight becomes a parametrization
   ``W = table[codes]`` with ``table = [0, c_1, ..., c_{2^bits}]`` and the centroids ``c`` trainable:
   the gradient reaching ``c_k`` is the sum of the gradients of the weights in cluster k (§3.3).
2. Retrain (any optimizer over ``model.parameters()``; only the centroids and biases move).
3. :func:`to_codebook_` bakes ``W = table[codes]`` and converts every layer whose weight holds at
   most ``2^b`` distinct values (b the smallest codebook width that fits) into a ``CodebookLinear``
   (a ``GemmConv2d`` around one for convolutions) that reproduces W exactly — the codebook GEMM
   then runs the model from its indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimtorch.core.conversions import (
    ConversionConfig,
    ConversionReport,
    FilterFn,
    GemmConversion,
    Skip,
    conversion_source,
    convert_model,
)


class SharedWeight(nn.Module):
    """Parametrization ``W = table[codes]``, ``table = [0, centroids...]`` (centroids trainable)."""

    def __init__(self, codes: torch.Tensor, centroids: torch.Tensor):
        super().__init__()
        self.register_buffer("codes", codes)
        self.centroids = nn.Parameter(centroids)

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        table = torch.cat([self.centroids.new_zeros(1), self.centroids])
        return table[self.codes]


@dataclass(frozen=True)
class WeightSharingConfig(ConversionConfig):
    """k-means weight sharing: ``2^linear_bits`` nonzero centroids for Linear layers, ``2^conv_bits``
    for convolutions (the paper: 5 and 8 bits; here the exact zero takes one more entry, so the
    stored codebook has ``bits + 1`` bit indices); ``iterations`` of Lloyd's algorithm."""

    linear_bits: int = 5
    conv_bits: int = 7
    iterations: int = 50

    def __post_init__(self):
        for name in ("linear_bits", "conv_bits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 7:
                raise ValueError(f"{name}: expected an int in [1, 7] (one codebook entry is kept for 0), got {value!r}")

    def convert_module(self, module: nn.Module, fqn: str, plan: Any) -> nn.Module | Skip | None:
        from slimtorch.quant.formats import kmeans_1d

        source = conversion_source(module)
        if source is None or isinstance(source, Skip):
            return source
        if source is not module:
            return Skip(f"{type(module).__name__} computes through its own parameters")
        w = module.weight.detach()
        nonzero = w[w != 0]
        bits = self.conv_bits if isinstance(module, nn.Conv2d) else self.linear_bits
        if nonzero.numel() < 2**bits:
            return Skip(f"{nonzero.numel()} nonzero weights, fewer than 2^{bits} centroids")
        centroids, _ = kmeans_1d(nonzero.float(), bits, self.iterations)
        # nearest centroid for every nonzero weight; code 0 is the exact zero of pruned weights
        mids = (centroids[1:] + centroids[:-1]) / 2
        codes = torch.bucketize(w.double(), mids, right=True) + 1
        codes = torch.where(w == 0, torch.zeros_like(codes), codes)
        parametrize.register_parametrization(module, "weight", SharedWeight(codes, centroids.to(w.dtype)))
        module.parametrizations.weight.original.requires_grad_(False)  # only the centroids train
        return module


def share_weights_(
    model: nn.Module, config: WeightSharingConfig, filter_fn: FilterFn | None = None
) -> ConversionReport:
    """Cluster every plain Linear/Conv2d's weights (module docstring, step 1); returns the report."""
    report = convert_model(model, config, filter_fn, conversion="share_weights_")
    for name in report.converted:
        p = model.get_submodule(name).parametrizations.weight[0]
        report.converted[name] = f"{p.centroids.numel()} shared values + exact zero"
    return report


def _distinct_bits(weight: torch.Tensor) -> int | None:
    from slimtorch.quant.formats import CODEBOOK_BITS

    n = torch.unique(weight).numel()
    return next((b for b in CODEBOOK_BITS if 2**b >= n), None)


@dataclass(frozen=True)
class ExactCodebookConfig(GemmConversion):
    """A layer whose weight holds at most 2^8 distinct values -> CodebookLinear of the smallest
    width holding them; the codebook is the sorted distinct values, so W is reproduced exactly."""

    def gemm_skip_reason(self, out_features: int, in_features: int) -> str | None:
        return None

    def convert_module(self, module: nn.Module, fqn: str, plan: Any):
        source = conversion_source(module)
        if isinstance(source, nn.Linear | nn.Conv2d) and _distinct_bits(source.weight.detach()) is None:
            return Skip("more than 256 distinct weight values: not a shared-weight layer")
        return super().convert_module(module, fqn, plan)

    def to_gemm(self, linear: nn.Linear) -> nn.Module:
        from slimtorch.quant import CodebookLinear
        from slimtorch.quant.formats import CodebookWeight, pack_codes, storage_bits

        w = linear.weight.detach().float()
        bits = _distinct_bits(w)
        values = torch.unique(w)  # sorted
        codebook = torch.cat([values, values[-1:].expand(2**bits - values.numel())])
        codes = torch.searchsorted(values, w.contiguous())
        packed = CodebookWeight(pack_codes(codes, storage_bits(bits)), codebook.contiguous(), bits)
        bias = None if linear.bias is None else linear.bias.detach()
        return CodebookLinear.from_packed(packed, w.shape[1], w.shape[0], bias, bits=bits)


def bake_shared_(model: nn.Module) -> None:
    """Replace every :class:`SharedWeight` parametrization by its value (exact)."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight") and isinstance(
            module.parametrizations.weight[0], SharedWeight
        ):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def to_codebook_(model: nn.Module, filter_fn: FilterFn | None = None) -> ConversionReport:
    """Bake shared weights and convert the layers to CodebookLinear (module docstring, step 3)."""
    bake_shared_(model)
    return convert_model(model, ExactCodebookConfig(), filter_fn, conversion="to_codebook_")

"""Unstructured (weight-level) pruning with masks that stay applied while the model trains.

    report = prune_unstructured_(model, UnstructuredConfig(method="magnitude", sparsity=0.9, scope="global"))
    train(model)                # masked weights stay zero through optimizer steps (and under DDP)
    masks_of(model)             # {"features.0": bool mask of features.0.weight, ...}  True = kept
    finalize_(model)            # bakes the masks into the weights, removes the masking machinery

**Mask.** Each pruned ``nn.Linear`` / ``nn.Conv2d`` weight becomes a ``torch.nn.utils.parametrize``
parametrization ``weight = original ⊙ mask`` (mask a bool buffer of the weight's shape). The
forward always uses the masked weight, so the gradient reaching ``original`` is ``grad ⊙ mask``
and whatever an optimizer does to the pruned entries of ``original`` (momentum, weight decay)
never reaches the output. DDP sees ``parametrizations.weight.original`` as an ordinary parameter.
A masked module's class is torch's ``Parametrized<Linear>``, so other conversions leave it alone
(``conversion_source`` names the class) until :func:`finalize_` turns it back into the plain layer.

**Scores** (``method``; the lowest ``sparsity`` fraction of scores is removed, ties by position):
- ``"magnitude"``: ``|w|`` (Han et al. 2015, *Learning both Weights and Connections*).
- ``"random"``: a seeded uniform draw (the baseline every criterion must beat).
- other criteria hand their scores in through ``scores=`` of :func:`prune_unstructured_`: SNIP and
  OBD (:mod:`slimtorch.compress.prune.saliency`, which also holds layer-wise OBS, whose
  compensation changes the weights); Dynamic Network Surgery (:mod:`slimtorch.compress.prune.surgery`)
  subclasses the mask; 2:4 / block masks and the exports are :mod:`slimtorch.compress.prune.export`.

``scope="layer"`` removes ``sparsity`` of every layer; ``scope="global"`` one threshold over all
selected layers (Han's global magnitude pruning: layers with small weights lose more). Pruning a
model that is already masked re-scores the masked weights, so already-removed weights stay removed
and the gradual / iterative schedules (:mod:`slimtorch.compress.prune.schedule`) call this repeatedly.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimtorch.core.checks import check_choice
from slimtorch.core.conversions import (
    ConversionConfig,
    ConversionReport,
    FilterFn,
    Skip,
    conversion_source,
    convert_model,
)

__all__ = [
    "MaskParametrization",
    "UnstructuredConfig",
    "finalize_",
    "masked_modules",
    "masks_of",
    "prune_unstructured_",
    "set_masks_",
]

METHODS = ("magnitude", "random")
SCOPES = ("layer", "global")


class MaskParametrization(nn.Module):
    """``weight = original ⊙ mask``; ``mask`` is a bool buffer (saved in the state_dict)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        # where() rather than a product: a NaN in a removed weight stays removed; NaN kept stays NaN
        return torch.where(self.mask, original, torch.zeros((), dtype=original.dtype, device=original.device))


def _mask_of(module: nn.Module) -> MaskParametrization | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    for p in module.parametrizations["weight"]:
        if isinstance(p, MaskParametrization):
            return p
    return None


def masked_modules(model: nn.Module) -> dict[str, nn.Module]:
    """{fqn: module} of every module whose weight carries a pruning mask."""
    return {name: m for name, m in model.named_modules() if _mask_of(m) is not None}


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """{fqn of the weight's module: bool mask (True = kept)} for every masked weight."""
    return {name: _mask_of(m).mask for name, m in masked_modules(model).items()}


def set_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Attach (or replace) masks by module name; used by criteria that compute masks themselves."""
    for name, mask in masks.items():
        module = model.get_submodule(name)
        existing = _mask_of(module)
        if existing is not None:
            if existing.mask.shape != mask.shape:
                raise ValueError(
                    f"masks[{name!r}]: expected shape {tuple(existing.mask.shape)}, got {tuple(mask.shape)}"
                )
            existing.mask.copy_(mask)
            continue
        if type(module) not in (nn.Linear, nn.Conv2d):
            raise TypeError(f"masks[{name!r}]: expected an nn.Linear or nn.Conv2d, got {type(module).__name__}")
        if tuple(mask.shape) != tuple(module.weight.shape):
            raise ValueError(f"masks[{name!r}]: expected shape {tuple(module.weight.shape)}, got {tuple(mask.shape)}")
        parametrize.register_parametrization(module, "weight", MaskParametrization(mask.to(module.weight.device)))


def _eligible(module: nn.Module) -> nn.Module | Skip | None:
    """A plain Linear/Conv2d, or one we masked before (re-pruning); else what conversion_source says."""
    if _mask_of(module) is not None:
        return module
    return conversion_source(module)


ScoreFn = Callable[[str, nn.Module], torch.Tensor]


@dataclass(frozen=True)
class UnstructuredConfig(ConversionConfig):
    """Mask the lowest-scoring ``sparsity`` fraction of weights (module docstring).

    ``method``: "magnitude" | "random"; ``scope``: "layer" | "global"; ``seed`` for "random".
    """

    method: str = "magnitude"
    sparsity: float = 0.5
    scope: str = "layer"
    seed: int = 0
    # set by prune_unstructured_: the walk's filter_fn (global thresholds count selected layers
    # only) and externally computed scores {fqn: tensor of the weight's shape}.
    select: FilterFn | None = field(default=None, repr=False, compare=False)
    scores: Mapping[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_choice(self.method, "method", METHODS)
        check_choice(self.scope, "scope", SCOPES)
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, int | float):
            raise TypeError(f"sparsity: expected a float in [0, 1), got {type(self.sparsity).__name__}")
        if not 0.0 <= float(self.sparsity) < 1.0:
            raise ValueError(f"sparsity: expected a fraction of weights to remove in [0, 1), got {self.sparsity}")

    def describe(self) -> str:
        return f"UnstructuredConfig(method={self.method!r}, sparsity={self.sparsity}, scope={self.scope!r})"

    def _score(self, name: str, module: nn.Module) -> torch.Tensor:
        weight = module.weight.detach()  # the masked weight when already masked
        if self.scores is not None:
            if name not in self.scores:
                raise KeyError(f"scores: no entry for layer {name!r}")
            score = self.scores[name].detach().to(weight.device, torch.float32)
            if score.shape != weight.shape:
                raise ValueError(f"scores[{name!r}]: expected shape {tuple(weight.shape)}, got {tuple(score.shape)}")
        elif self.method == "magnitude":
            score = weight.abs().float()
        else:  # random
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
            score = torch.rand(weight.shape, generator=gen).to(weight.device)
        mask = _mask_of(module)
        if mask is not None:  # removed weights stay removed
            score = torch.where(mask.mask, score, torch.full_like(score, -float("inf")))
        return torch.nan_to_num(score, nan=float("inf"))  # a NaN weight is kept, so NaN reaches the output

    def plan(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """{fqn: bool mask} for every selected layer."""
        chosen = {}
        for name, module in model.named_modules():
            source = _eligible(module)
            if source is module and (self.select is None or self.select(module, name)):
                chosen[name] = module
        if not chosen:
            return {}
        scores = {name: self._score(name, m) for name, m in chosen.items()}
        if self.scope == "layer":
            return {name: _keep_top(s, self.sparsity) for name, s in scores.items()}
        flat = torch.cat([s.flatten().cpu() for s in scores.values()])
        keep = _keep_top(flat, self.sparsity)
        masks, start = {}, 0
        for name, s in scores.items():
            masks[name] = keep[start : start + s.numel()].view_as(s).to(s.device)
            start += s.numel()
        return masks

    def convert_module(self, module: nn.Module, fqn: str, plan: Any) -> nn.Module | Skip | None:
        source = _eligible(module)
        if source is None:
            return None
        if isinstance(source, Skip):
            return source
        if source is not module:
            return Skip(f"{type(module).__name__} computes a {type(source).__name__} through its own parameters")
        if fqn not in plan:  # plan honoured filter_fn; the walk records the exclusion
            return Skip("excluded by filter_fn")
        _attach(module, plan[fqn])
        return module


def _attach(module: nn.Module, mask: torch.Tensor) -> None:
    existing = _mask_of(module)
    if existing is not None:
        existing.mask.copy_(mask)
    else:
        parametrize.register_parametrization(module, "weight", MaskParametrization(mask))


def _keep_top(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Bool mask keeping the ``numel - round(sparsity·numel)`` highest scores (ties: earlier position removed first)."""
    n = score.numel()
    k = round(float(sparsity) * n)
    keep = torch.ones(n, dtype=torch.bool, device=score.device)
    if k:
        order = torch.sort(score.flatten().float(), stable=True).indices
        keep[order[:k]] = False
    return keep.view_as(score)


def prune_unstructured_(
    model: nn.Module,
    config: UnstructuredConfig,
    filter_fn: FilterFn | None = None,
    *,
    scores: Mapping[str, torch.Tensor] | None = None,
) -> ConversionReport:
    """Mask weights of every plain ``nn.Linear`` / ``nn.Conv2d`` (module docstring); returns the report.

    ``scores``: {fqn: importance of each weight} from another criterion (replaces ``method``).
    """
    if not isinstance(config, UnstructuredConfig):
        raise TypeError(f"config: expected an UnstructuredConfig, got {type(config).__name__}")
    config = dataclasses.replace(config, select=filter_fn, scores=scores)
    report = convert_model(model, config, filter_fn, conversion="prune_unstructured_")
    for name in list(report.converted):
        mask = _mask_of(model.get_submodule(name)).mask
        report.converted[name] = f"masked, {1 - mask.float().mean().item():.1%} of weights removed"
    return report


def _bake(module: nn.Module, mask: MaskParametrization) -> None:
    """Zero the removed entries of ``original`` and make it the plain ``weight`` parameter again
    (the same Parameter object, so an optimizer's state still applies).

    torch's ``remove_parametrizations`` deletes the ``weight`` property from the parametrized
    class, which ``copy.deepcopy`` shares between copies (it would break every copy of the masked
    model); when the mask is the module's only parametrization the class is swapped back by hand.
    """
    if len(module.parametrizations) != 1 or len(module.parametrizations["weight"]) != 1:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        with torch.no_grad():
            module.weight.masked_fill_(~mask.mask.to(module.weight.device), 0)
        return
    original = module.parametrizations["weight"].original
    with torch.no_grad():  # the stored original may hold anything at removed entries
        original.masked_fill_(~mask.mask.to(original.device), 0)
    module.__class__ = module.__class__.__bases__[0]  # parametrize's class is type("Parametrized<X>", (X,), ...)
    del module._modules["parametrizations"]
    module.register_parameter("weight", original)


@dataclass(frozen=True)
class FinalizeConfig(ConversionConfig):
    """Bake every pruning mask into its weight and remove the parametrization."""

    def convert_module(self, module: nn.Module, fqn: str, plan: Any) -> nn.Module | None:
        mask = _mask_of(module)
        if mask is None:
            return None
        _bake(module, mask)
        return module


def finalize_(model: nn.Module) -> ConversionReport:
    """Bake the masks into the weights (exact zeros) and return plain ``nn.Linear`` / ``nn.Conv2d``."""
    report = convert_model(model, FinalizeConfig(), conversion="finalize_")
    for name in list(report.converted):
        module = model.get_submodule(name)
        zeros = (module.weight == 0).float().mean().item()
        report.converted[name] = f"mask baked in ({zeros:.1%} zeros), {type(module).__name__}"
    return report

"""Dynamic Network Surgery (Guo, Yao, Chen, NeurIPS 2016, *Dynamic Network Surgery for Efficient DNNs*).

    report = surgery_(model, SurgeryConfig(sparsity=0.98))   # masks with the DNS parametrization
    tasks.train(model, task, epochs, after_step=update_masks_)  # pruning and splicing while training
    finalize_(model)

**Forward / backward.** Each layer computes with ``W ⊙ T`` (T a 0/1 mask), but the gradient
reaches *every* entry of W unmasked: ``∂L/∂W := ∂L/∂(W ⊙ T)`` (straight-through), so a pruned
weight keeps learning and can come back. (Plain masks, :mod:`.unstructured`, block that gradient.)

**Mask update** (every ``update_every`` optimizer steps, with probability ``(1 + γ·iter)^(−power)``,
the paper's decaying update rate; γ = 0 updates every time), per entry with thresholds a < b:

    T ← 0 where |W| < a      (prune)
    T ← 1 where |W| > b      (splice back)
    T unchanged where a ≤ |W| ≤ b        (the hysteresis band stops masks from flickering)

Thresholds per layer: ``a = (1 − hysteresis)·t``, ``b = (1 + hysteresis)·t`` with t

- ``sparsity`` given: the ``sparsity``-quantile of the layer's |W| at the update (t tracks the weights,
  so the layer's sparsity stays close to the target);
- else the paper's ``t = max(μ + c·σ, 0)`` of the layer's |W| (``crate`` = c), computed when the
  masks are attached;
- or ``low`` / ``high``: a and b themselves, the same for every layer.

The masks are :class:`~slimtorch.compress.prune.MaskParametrization` s (a subclass), so
:func:`~slimtorch.compress.prune.masks_of`, :func:`~slimtorch.compress.prune.finalize_`, the
exports, state_dict and DDP treat them like any other pruning mask.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from slimtorch.compress.prune.unstructured import MaskParametrization, _mask_of
from slimtorch.core.conversions import ConversionConfig, ConversionReport, FilterFn, Skip, convert_model

__all__ = ["SurgeryConfig", "SurgeryMask", "surgery_", "update_masks_"]


class _StraightThroughMask(torch.autograd.Function):
    """forward: where(mask, w, 0); backward: the gradient of the masked weight, to every entry.
    (torch.func-ready: OBD's per-sample gradients can run through a DNS-masked model.)"""

    generate_vmap_rule = True

    @staticmethod
    def forward(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class SurgeryMask(MaskParametrization):
    """DNS mask: ``weight = original ⊙ mask`` with the straight-through gradient, and the layer's
    thresholds (``low`` = a, ``high`` = b; buffers, so they are saved and moved with the model)."""

    def __init__(self, mask: torch.Tensor, low: float = 0.0, high: float = 0.0) -> None:
        super().__init__(mask)
        self.register_buffer("low", torch.tensor(float(low)))
        self.register_buffer("high", torch.tensor(float(high)))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return _StraightThroughMask.apply(original, self.mask)

    @torch.no_grad()
    def update(self, weight: torch.Tensor) -> None:
        """T ← 0 where |W| < a, 1 where |W| > b, unchanged between (module docstring)."""
        magnitude = weight.abs()
        self.mask.copy_(torch.where(magnitude < self.low, False, torch.where(magnitude > self.high, True, self.mask)))


@dataclass(frozen=True)
class SurgeryConfig(ConversionConfig):
    """DNS thresholds and update rate (module docstring).

    ``sparsity`` (quantile thresholds) or ``crate`` (paper's μ + c·σ) or ``low``/``high`` (absolute);
    ``hysteresis``: a = (1 − h)·t, b = (1 + h)·t; ``update_every``, ``gamma``, ``power``: the
    update rate ``(1 + γ·iter)^(−power)``; ``seed`` for its draws.
    """

    sparsity: float | None = None
    crate: float = 0.0
    low: float | None = None
    high: float | None = None
    hysteresis: float = 0.1
    update_every: int = 1
    gamma: float = 0.0
    power: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sparsity is not None and not 0.0 <= float(self.sparsity) < 1.0:
            raise ValueError(f"sparsity: expected a fraction of weights to remove in [0, 1), got {self.sparsity}")
        if (self.low is None) != (self.high is None):
            raise ValueError(f"low, high: expected both or neither, got low={self.low}, high={self.high}")
        if self.low is not None and not 0.0 <= self.low <= self.high:
            raise ValueError(f"low, high: expected 0 <= low <= high, got low={self.low}, high={self.high}")
        if self.low is not None and self.sparsity is not None:
            raise ValueError("sparsity: expected either sparsity or low/high thresholds, got both")
        if not 0.0 <= self.hysteresis < 1.0:
            raise ValueError(f"hysteresis: expected a value in [0, 1), got {self.hysteresis}")
        if isinstance(self.update_every, bool) or not isinstance(self.update_every, int) or self.update_every < 1:
            raise ValueError(f"update_every: expected an int >= 1, got {self.update_every!r}")
        if self.gamma < 0 or self.power < 0:
            raise ValueError(f"gamma, power: expected values >= 0, got gamma={self.gamma}, power={self.power}")

    def thresholds(self, weight: torch.Tensor) -> tuple[float, float]:
        """(a, b) for one layer's current weight."""
        if self.low is not None:
            return float(self.low), float(self.high)
        magnitude = weight.detach().abs().float().flatten()
        if self.sparsity is not None:
            k = round(float(self.sparsity) * magnitude.numel())
            t = 0.0 if k == 0 else float(torch.sort(magnitude).values[k - 1])
            # keep exactly the quantile when the band is empty: |w| <= t pruned
            return t * (1 - self.hysteresis), t * (1 + self.hysteresis)
        t = max(float(magnitude.mean() + self.crate * magnitude.std()), 0.0)
        return t * (1 - self.hysteresis), t * (1 + self.hysteresis)

    def convert_module(self, module: nn.Module, fqn: str, plan: Any) -> nn.Module | Skip | None:
        from slimtorch.compress.prune.unstructured import _eligible

        source = _eligible(module)
        if source is None or isinstance(source, Skip):
            return source
        if source is not module:
            return Skip(f"{type(module).__name__} computes a {type(source).__name__} through its own parameters")
        existing = _mask_of(module)
        weight = module.weight.detach() if existing is None else module.parametrizations.weight.original.detach()
        mask = torch.ones_like(weight, dtype=torch.bool) if existing is None else existing.mask.clone()
        low, high = self.thresholds(weight)
        dns = SurgeryMask(mask, low, high)
        dns.update(weight)
        if existing is None:
            parametrize.register_parametrization(module, "weight", dns)
        else:  # swap the mask module in place (removing a parametrization breaks deep copies' classes)
            masks = module.parametrizations["weight"]
            masks[next(i for i, p in enumerate(masks) if p is existing)] = dns
        module._surgery = _SurgeryState(self)  # how update_masks_ recomputes the thresholds
        return module


class _SurgeryState:
    """The config and the update counter of a layer under surgery (plain attribute: not state)."""

    def __init__(self, config: SurgeryConfig) -> None:
        self.config = config
        self.iteration = 0
        self.rng = random.Random(config.seed)


def surgery_(model: nn.Module, config: SurgeryConfig, filter_fn: FilterFn | None = None) -> ConversionReport:
    """Attach DNS masks to every plain ``nn.Linear`` / ``nn.Conv2d`` (and the first mask update)."""
    if not isinstance(config, SurgeryConfig):
        raise TypeError(f"config: expected a SurgeryConfig, got {type(config).__name__}")
    report = convert_model(model, config, filter_fn, conversion="surgery_")
    for name in list(report.converted):
        dns = _mask_of(model.get_submodule(name))
        kept = dns.mask.float().mean().item()
        report.converted[name] = f"DNS mask, a={dns.low.item():.4g}, b={dns.high.item():.4g}, {1 - kept:.1%} pruned"
    return report


@torch.no_grad()
def update_masks_(model: nn.Module) -> int:
    """One DNS mask update for every layer under surgery (call after each optimizer step); returns
    how many layers updated their masks this time."""
    updated = 0
    for module in model.modules():
        state = getattr(module, "_surgery", None)
        dns = _mask_of(module)
        if state is None or not isinstance(dns, SurgeryMask):
            continue
        state.iteration += 1
        config = state.config
        if state.iteration % config.update_every:
            continue
        if config.gamma and state.rng.random() >= (1 + config.gamma * state.iteration) ** (-config.power):
            continue
        weight = module.parametrizations.weight.original
        if config.sparsity is not None:  # quantile thresholds follow the weights
            low, high = config.thresholds(weight)
            dns.low.fill_(low)
            dns.high.fill_(high)
        dns.update(weight)
        updated += 1
    return updated

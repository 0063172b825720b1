"""Incremental Network Quantization (Zhou et al., ICLR 2017): train a float model into the
power-of-two set of :mod:`slimtorch.quant.pow2`, a growing fraction of each layer at a time.

    inq = INQ(model, bits=5)                      # n1 of each layer from its pretrained max |W|
    for portion in inq.portions:                  # accumulated 50 / 75 / 87.5 / 100 %
        inq.freeze(portion)                       # the largest |w| still free -> P, frozen
        if portion < 1:                           # retrain the rest with any optimizer / loop:
            train(model, ..., after_step=inq.after_step)
    report = inq.convert()                        # quantize_ -> Pow2Linear (bit-exact: same values)
    # or: report = inq.run(lambda model, inq: train(model, ..., after_step=inq.after_step))

The paper's three operations per step, per layer l:

- weight partition: among the weights not yet frozen, the largest |w| (magnitude: the paper's
  "pruning-inspired" choice, better than random) until the frozen count is
  floor(portion · numel + 1/2) (ties in |w| by index, so the masks are exact and reproducible);
- group-wise quantization: those weights are rounded to P_l by Eq. 4 with the n1 of the
  *pretrained* layer (fixed for the whole schedule, so every stage uses the same set; a free
  weight that grew past 3·2^(n1−1) takes 2^n1);
- re-training: the frozen weights get zero gradient (a hook on the parameter: the paper's mask
  T_l) and are written back after every optimizer step (``after_step``: momentum, Adam's moments
  and weight decay move a weight even with a zero gradient), so they stay exactly in the set.

Layers: every ``nn.Linear`` and groups=1 ``nn.Conv2d`` that ``quantize_`` converts (core's
eligibility rule), restricted by ``filter_fn(module, fqn)``; biases stay float (Pow2Linear keeps
them). ``convert`` requires the 100 % step and converts exactly those layers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from slimtorch.core.checks import check_choice
from slimtorch.core.conversions import ConversionReport, FilterFn, gemm_source
from slimtorch.quant import pow2
from slimtorch.quant.api import quantize_

INQ_PORTIONS: tuple[float, ...] = (0.5, 0.75, 0.875, 1.0)  # accumulated quantized fraction per step (paper §3)


def frozen_count(portion: float, numel: int) -> int:
    """How many of a layer's ``numel`` weights are frozen at ``portion``: floor(portion · numel + 1/2)."""
    return min(numel, math.floor(portion * numel + 0.5))


def check_portions(portions: Sequence[float]) -> tuple[float, ...]:
    values = tuple(portions)
    if (
        not values
        or any(isinstance(p, bool) or not isinstance(p, (int, float)) for p in values)
        or any(not 0.0 < p <= 1.0 for p in values)
        or any(b <= a for a, b in itertools.pairwise(values))
        or values[-1] != 1.0
    ):
        raise ValueError(f"portions: expected increasing fractions in (0, 1] ending at 1.0, got {portions!r}")
    return tuple(float(p) for p in values)


@dataclass
class INQLayer:
    """One layer's INQ state: its weight, the pretrained n1, and which weights are frozen."""

    fqn: str
    weight: nn.Parameter
    n1: int
    frozen: torch.Tensor  # bool, the weight's shape: True = quantized and fixed
    values: torch.Tensor  # the weight's shape and dtype: the frozen values (members of P; 0 elsewhere)
    hook: torch.utils.hooks.RemovableHandle | None = field(default=None, repr=False)


class INQ:
    """The INQ schedule over ``model``'s eligible layers (module doc)."""

    def __init__(
        self,
        model: nn.Module,
        bits: int = 5,
        portions: Sequence[float] = INQ_PORTIONS,
        filter_fn: FilterFn | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        check_choice(bits, "bits", pow2.POW2_BITS)
        self.model, self.bits, self.portions = model, bits, check_portions(portions)
        self.portion = 0.0
        self.layers: dict[str, INQLayer] = {}
        for fqn, module in model.named_modules():
            if type(module) not in (nn.Linear, nn.Conv2d) or gemm_source(module) is not module:
                continue  # quantize_ would leave it alone (grouped conv, ...) or it is not a plain layer
            if filter_fn is not None and not filter_fn(module, fqn):
                continue
            weight = module.weight
            pow2.formats._check_weight(weight.detach().reshape(weight.shape[0], -1), f"{fqn}.weight")
            n1 = pow2.largest_exponent(weight.detach())
            pow2.check_exponent(n1, bits, f"{fqn}.weight (its n1 = floor(log2(4·max|W|/3)))")
            frozen = torch.zeros_like(weight, dtype=torch.bool)
            layer = INQLayer(fqn, weight, n1, frozen, torch.zeros_like(weight.detach()))
            layer.hook = weight.register_hook(lambda grad, frozen=frozen: grad.masked_fill(frozen, 0))
            self.layers[fqn] = layer
        if not self.layers:
            raise ValueError("model: no nn.Linear or groups=1 nn.Conv2d to quantize (after filter_fn)")

    # ----------------------------------------------------------------------------- the schedule

    @torch.no_grad()
    def freeze(self, portion: float) -> None:
        """Partition and quantize: grow every layer's frozen set to ``portion`` of its weights."""
        if not isinstance(portion, (int, float)) or isinstance(portion, bool) or not self.portion < portion <= 1.0:
            raise ValueError(
                f"portion: expected a fraction in ({self.portion}, 1], above the last one, got {portion!r}"
            )
        for layer in self.layers.values():
            w, frozen = layer.weight.detach(), layer.frozen
            new = frozen_count(portion, w.numel()) - int(frozen.sum())
            if new <= 0:
                continue
            magnitude = w.abs().reshape(-1).masked_fill(frozen.reshape(-1), -1.0)  # frozen last
            chosen = torch.argsort(magnitude, descending=True, stable=True)[:new]
            newly = torch.zeros_like(frozen)
            newly.view(-1)[chosen] = True
            rounded = pow2.pow2_round(w.reshape(w.shape[0], -1), layer.n1, self.bits).reshape(w.shape)
            layer.values.copy_(torch.where(newly, rounded, layer.values))  # earlier ones keep their value
            frozen |= newly
        self.portion = float(portion)
        self.after_step()

    @torch.no_grad()
    def after_step(self, model: nn.Module | None = None) -> None:
        """Write the frozen values back (call after every optimizer step; ``model`` is ignored, so
        this fits ``after_step(model)`` callbacks)."""
        for layer in self.layers.values():
            layer.weight.copy_(torch.where(layer.frozen, layer.values, layer.weight))

    def fractions(self) -> dict[str, float]:
        """Frozen fraction per layer."""
        return {fqn: float(layer.frozen.float().mean()) for fqn, layer in self.layers.items()}

    def remove_hooks(self) -> None:
        for layer in self.layers.values():
            if layer.hook is not None:
                layer.hook.remove()
                layer.hook = None

    def convert(self) -> ConversionReport:
        """After the 100 % step: the INQ layers as :class:`~slimtorch.quant.pow2.Pow2Linear` (in place)."""
        if self.portion < 1.0:
            raise ValueError(f"portion: convert() needs every weight frozen (portion 1.0), at {self.portion}")
        self.after_step()
        self.remove_hooks()
        # quantize_ recomputes n1 from max|W| = 2^n1 (the pretrained max was frozen first, to ±2^n1)
        # and Eq. 4 maps every member of P to itself: the layers hold exactly the frozen values.
        return quantize_(self.model, pow2.Pow2WeightConfig(self.bits), filter_fn=lambda m, fqn: fqn in self.layers)

    def run(self, retrain: Callable[[nn.Module, INQ], None]) -> ConversionReport:
        """The whole schedule: freeze each portion, ``retrain(model, self)`` while weights are free
        (pass ``after_step=inq.after_step`` to the loop), then :meth:`convert`."""
        for portion in self.portions:
            self.freeze(portion)
            if portion < 1.0:
                retrain(self.model, self)
        return self.convert()

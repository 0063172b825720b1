"""Structured sparsity learning: a group-lasso penalty over coupled channel groups (Wen et al.
2016, *Learning Structured Sparsity in Deep Neural Networks*), and the structured prune of the
groups it drove to zero.

    ssl = GroupLasso(model, x)                        # the groups come from the dependency graph
    loss = task_loss + 1e-4 * ssl.penalty()           # train; groups shrink towards zero
    pruned = ssl.prune(threshold=1e-3)                # Pruner removes every class whose norm < threshold

**The groups.** One group per removable class of channels r (:mod:`.graph`: channels coupled
across residual adds, concatenations, shuffles, depthwise and grouped convolutions): every weight
that exists only because r does,

    g_r = { W_L[o, ...]   of each conv/linear L producing a channel o of r (filter-wise, bias too),
            W_L[:, c, ...] of each conv/linear L reading a channel c of r (channel-wise; for a
                           grouped conv the rows of c's group; for a linear after flatten every
                           feature of c),
            γ_c, β_c      of each BatchNorm on c, and per-channel parameters (``include_norms``) }

so zeroing g_r makes channel r contribute nothing and removing it changes nothing. Wen et al.'s
filter-wise and channel-wise groups overlap the same way (a weight W[o, c] is in o's and c's).
A depthwise conv's input slice is its own filter (already in g_r through its outputs).

**Penalty** R = Σ_r ||g_r||₂ (× √|g_r| with ``weighted=True``, Yuan & Lin's group-size weight);
∂R/∂w = Σ_{r ∋ w} w / ||g_r||₂, and 0 for a group that is exactly zero (the subgradient the
proximal step would pick). Computed as per-position sums of squares scattered into one vector of
class sums (one ``index_add_`` per tensor), so it costs a few elementwise passes over the weights.

**Prune** keeps, per group, the classes whose norm ≥ ``threshold`` (at least one, the count
rounded up to a multiple of ``round_to`` channels) and removes the others through the
:class:`~slimtorch.compress.prune.pruner.Pruner` (its ``select`` hook), so the report and the
physical removal are the pruner's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtorch.compress.prune.graph import ChannelGraph, build_graph
from slimtorch.compress.prune.pruner import PruneConfig, Pruner, _ignored_names, check_model, excluded_layers
from slimtorch.core.checks import check_positive_int
from slimtorch.core.conversions import ConversionReport, FilterFn

__all__ = ["GroupLasso", "GroupNormThreshold", "group_norms"]


@dataclass
class _Part:
    """One tensor's contribution: per-position sums of squares along ``axis`` of ``attr`` of
    ``module`` → the class index of each position (-1: in no removable group)."""

    module: str
    attr: str
    how: str  # "rows" | "cols" | "grouped_cols" | "along"
    classes: np.ndarray
    axis: int = 0
    groups: int = 1


def _parts(graph: ChannelGraph, include_norms: bool) -> tuple[list[_Part], list[tuple[int, int]], np.ndarray]:
    """The parts of every group (module docstring), the (group index, class root) of each class
    index, and each class's channel count per place (multiplicity weights for rounding)."""
    index: dict[int, int] = {}
    classes: list[tuple[int, int]] = []
    for g in graph.groups:
        for r in g.classes:
            k = len(classes)
            classes.append((g.index, r))
            for i in g.members[r].tolist():
                index[i] = k
    lookup = np.full(len(graph.uf.parent), -1, dtype=np.int64)
    if index:
        lookup[np.fromiter(index.keys(), dtype=np.int64)] = np.fromiter(index.values(), dtype=np.int64)

    def cls(ids: np.ndarray) -> np.ndarray:
        return lookup[ids.ravel()]

    parts: list[_Part] = []
    for name, record in graph.records.items():
        kind, m = record.kind, record.module
        if kind in ("conv", "shiftconv", "linear"):
            out = cls(record.slots["out"])
            if (out >= 0).any():
                parts.append(_Part(name, "weight", "rows", out))
                if getattr(m, "bias", None) is not None:
                    parts.append(_Part(name, "bias", "rows", out))
            inp = cls(record.slots["in"])
            if not (inp >= 0).any() or (kind != "linear" and record.extra.get("depthwise")):
                continue
            if kind == "linear":
                parts.append(_Part(name, "weight", "cols", inp))
            else:
                parts.append(_Part(name, "weight", "grouped_cols", inp, groups=m.groups))
        elif include_norms and kind in ("norm", "prelu"):
            ch = cls(record.slots["channels"])
            if (ch >= 0).any():
                for attr in ("weight", "bias"):
                    if isinstance(getattr(m, attr, None), torch.Tensor):
                        parts.append(_Part(name, attr, "rows", ch))
        elif include_norms and kind == "param":
            ch = cls(record.slots["channels"])
            if (ch >= 0).any():
                owner = name.rpartition(".")[0]
                parts.append(_Part(owner, record.extra["attr"], "along", ch, axis=record.extra["dim"]))
    return parts, classes, lookup


def _squares(t: torch.Tensor, part: _Part) -> torch.Tensor:
    """Per-position sums of squares of ``t`` (a differentiable vector, one entry per position)."""
    sq = t.float().pow(2) if t.dtype in (torch.float16, torch.bfloat16) else t.pow(2)
    if part.how == "rows":
        return sq.reshape(sq.shape[0], -1).sum(1)
    if part.how == "cols":  # linear: W[:, j]
        return sq.sum(0)
    if part.how == "grouped_cols":  # conv (cout, cin/g, kh, kw): input p = group·(cin/g) + j
        g = part.groups
        per = sq.sum(dim=tuple(range(2, sq.dim()))) if sq.dim() > 2 else sq
        return per.reshape(g, sq.shape[0] // g, -1).sum(1).reshape(-1)
    dims = tuple(d for d in range(sq.dim()) if d != part.axis)
    return sq.sum(dim=dims) if dims else sq


def group_norms(
    model: nn.Module, graph: ChannelGraph, parts: list[_Part], n_classes: int, device: torch.device | None = None
) -> torch.Tensor:
    """||g_r||₂² summed into one vector (differentiable); the caller takes the square root."""
    total = None
    for part in parts:
        t = getattr(model.get_submodule(part.module), part.attr)
        values = _squares(t, part)
        if total is None:
            total = torch.zeros(n_classes, dtype=values.dtype, device=values.device)
        valid = torch.as_tensor(np.nonzero(part.classes >= 0)[0], device=values.device)
        idx = torch.as_tensor(part.classes[part.classes >= 0], device=values.device)
        total = total.index_add(0, idx, values[valid])
    if total is None:
        return torch.zeros(n_classes, device=device)
    return total


class GroupNormThreshold:
    """Criterion for the Pruner: score = ||g_r||₂; its ``select`` removes, per group, the classes
    below ``threshold`` (module docstring's rounding)."""

    def __init__(self, threshold: float, *, include_norms: bool = True) -> None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not threshold >= 0:
            raise ValueError(f"threshold: expected a non-negative number, got {threshold!r}")
        self.threshold = float(threshold)
        self.include_norms = include_norms
        self.norms: dict[int, float] = {}

    def __call__(self, graph: ChannelGraph, model: nn.Module) -> dict[int, float]:
        parts, classes, _ = _parts(graph, self.include_norms)
        with torch.no_grad():
            norms = group_norms(model, graph, parts, len(classes)).sqrt().double().cpu().numpy()
        self.norms = {r: float(norms[k]) for k, (_, r) in enumerate(classes)}
        return dict(self.norms)

    def select(self, graph: ChannelGraph, scores: Any, config: PruneConfig) -> set[int]:
        removed: set[int] = set()
        for g in graph.groups:
            s = np.array([self.norms.get(r, math.inf) for r in g.classes])
            keep = max(1, int((s >= self.threshold).sum()))
            if config.round_to > 1:
                channels = -(-keep * g.multiplicity // config.round_to) * config.round_to
                keep = min(g.size, -(-channels // g.multiplicity))
            order = np.argsort(s, kind="stable")[: g.size - keep]
            removed |= {g.classes[k] for k in order.tolist()}
        return removed


class GroupLasso:
    """The SSL penalty of ``model``'s coupled channel groups (module docstring). ``ignored_layers``
    / ``filter_fn`` as for the Pruner (their output channels get no group)."""

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        *,
        filter_fn: FilterFn | None = None,
        ignored_layers: Iterable[nn.Module | str] | None = None,
        include_norms: bool = True,
        weighted: bool = False,
    ) -> None:
        check_model(model)
        self.model = model
        self.example_inputs = example_inputs
        self.filter_fn = filter_fn
        self.ignored_layers = _ignored_names(model, ignored_layers)
        self.ignored = set(excluded_layers(model, ignored_layers, filter_fn))
        self.include_norms = include_norms
        self.weighted = weighted
        self.report: ConversionReport | None = None
        self._build()

    def _build(self) -> None:
        self.graph = build_graph(self.model, self.example_inputs, self.ignored)
        self.parts, self.classes, _ = _parts(self.graph, self.include_norms)
        if not self.classes:
            raise ValueError("model: GroupLasso found no removable channel group (every channel is frozen)")
        sizes = torch.zeros(len(self.classes), dtype=torch.float64)
        for part in self.parts:  # elements per group, for the √|g| weight
            t = getattr(self.model.get_submodule(part.module), part.attr)
            ones = _squares(torch.ones(t.shape, dtype=torch.float64), part)
            keep = part.classes >= 0
            sizes.index_add_(0, torch.as_tensor(part.classes[keep]), ones[torch.as_tensor(np.nonzero(keep)[0])])
        self.sizes = sizes

    def norms(self) -> torch.Tensor:
        """||g_r||₂ per class (differentiable; a zero group has gradient 0)."""
        sq = group_norms(self.model, self.graph, self.parts, len(self.classes))
        return sq.clamp_min(torch.finfo(sq.dtype).tiny).sqrt() * (sq > 0)

    def penalty(self) -> torch.Tensor:
        """R = Σ_r ||g_r||₂ (× √|g_r| when ``weighted``)."""
        norms = self.norms()
        if self.weighted:
            norms = norms * self.sizes.to(norms).sqrt()
        return norms.sum()

    __call__ = penalty

    def prune(self, threshold: float, *, round_to: int = 1) -> nn.Module:
        """Remove every class whose group norm < ``threshold`` (module docstring); the pruned model
        (``self.report`` says what went where; the penalty then follows the pruned model)."""
        check_positive_int(round_to, "round_to")
        criterion = GroupNormThreshold(threshold, include_norms=self.include_norms)
        config = PruneConfig(importance=criterion, ratio=0.0, round_to=round_to)
        pruner = Pruner(self.model, self.example_inputs, config, self.filter_fn, ignored_layers=self.ignored_layers)
        self.model = pruner.step()
        self.report = pruner.report
        self._build()  # the groups of the pruned model, for training on
        return self.model

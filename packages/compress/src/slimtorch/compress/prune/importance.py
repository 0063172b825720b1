"""Structured importance criteria: one score per channel id (:mod:`.graph`); a removable class of
ids scores the sum over its ids. Higher = more important (kept).

- ``"l1"`` / ``"l2"``: the norm of each filter producing the channel, Σ|W[c]| or ‖W[c]‖₂ (Li et
  al. 2017, *Pruning Filters for Efficient ConvNets*). Channels no layer produces (a per-channel
  parameter) score by the norms of the input slices that read them.
- ``"bn"``: |γ| of the BatchNorms on the channel (Liu et al. 2017, *Network Slimming*; train with
  :func:`bn_l1_penalty` added to the loss so γ becomes sparse). No BatchNorm: falls back to l1.
- ``"random"``: a seeded draw.
- :class:`APoZ`: 1 − the Average Percentage of Zeros after each ReLU on calibration batches (Hu et
  al. 2016, *Network Trimming*).
- :class:`Taylor`: |mean over N,H,W of a · ∂L/∂a| on each norm's (else conv's) output, averaged over
  batches (Molchanov et al. 2017, *Pruning CNNs for Resource Efficient Inference*).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtorch.compress.prune.graph import ChannelGraph, Info

__all__ = ["IMPORTANCES", "APoZ", "Taylor", "bn_l1_penalty", "channel_scores"]

IMPORTANCES = ("l1", "l2", "bn", "random")


def _weight(record) -> torch.Tensor:
    return record.module.weight.detach()


def _norm_scores(graph: ChannelGraph, p: float) -> dict[int, float]:
    out: dict[int, float] = defaultdict(float)
    inside: dict[int, float] = defaultdict(float)
    for record in graph.records.values():
        if record.kind not in ("conv", "linear", "shiftconv"):
            continue
        w = _weight(record).float()
        per_out = (
            w.flatten(1).norm(p=p, dim=1).cpu().numpy() if w.is_floating_point() and w.device.type != "meta" else None
        )
        if per_out is None:
            continue
        for pos, i in enumerate(record.slots["out"].tolist()):
            out[i] += float(per_out[pos])
        in_ids = record.slots["in"]
        if record.kind == "linear":
            per_in = w.norm(p=p, dim=0).cpu().numpy()
            for pos, i in enumerate(in_ids.tolist()):
                inside[i] += float(per_in[pos])
    for i, v in inside.items():
        out.setdefault(i, v)
    return out


def _bn_scores(graph: ChannelGraph) -> dict[int, float]:
    out: dict[int, float] = defaultdict(float)
    for record in graph.records.values():
        if record.kind == "norm" and record.module.weight is not None:
            gamma = record.module.weight.detach().abs().float().cpu().numpy()
            for pos, i in enumerate(record.slots["channels"].tolist()):
                out[i] += float(gamma[pos])
    return out


def _random_scores(graph: ChannelGraph, seed: int) -> dict[int, float]:
    rng = np.random.default_rng(seed)
    n = len(graph.uf.parent)
    values = rng.random(n)
    return {i: float(values[i]) for i in range(n)}


def channel_scores(graph: ChannelGraph, model: nn.Module, importance: Any, seed: int = 0) -> dict[int, float]:
    """{id: score} for ``importance`` (a name of :data:`IMPORTANCES` or a callable(graph, model))."""
    if callable(importance):
        return importance(graph, model)
    if importance == "l1":
        return _norm_scores(graph, 1.0)
    if importance == "l2":
        return _norm_scores(graph, 2.0)
    if importance == "bn":
        scores = _bn_scores(graph)
        fallback = _norm_scores(graph, 1.0)
        return {**fallback, **scores}
    if importance == "random":
        return _random_scores(graph, seed)
    raise ValueError(f"importance: expected one of {IMPORTANCES} or a criterion object, got {importance!r}")


def bn_l1_penalty(model: nn.Module) -> torch.Tensor:
    """Σ|γ| over every BatchNorm (network slimming's sparsity term; add ``λ·penalty`` to the loss,
    λ ≈ 1e-4 in the paper)."""
    terms = [
        m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
    ]
    if not terms:
        raise ValueError("model: bn_l1_penalty needs BatchNorm layers with affine weights, found none")
    return torch.stack(terms).sum()


def _run_capturing(graph: ChannelGraph, x: Any, names: set[str], grad: bool) -> tuple[Any, dict[str, torch.Tensor]]:
    captured: dict[str, torch.Tensor] = {}

    class Capture(torch.fx.Interpreter):
        def run_node(self, n):
            value = super().run_node(n)
            if n.name in names and isinstance(value, torch.Tensor):
                if grad and value.requires_grad:
                    value.retain_grad()
                captured[n.name] = value
            return value

    inputs = x if isinstance(x, tuple | list) else (x,)
    return Capture(graph.gm).run(*inputs), captured


def _accumulate(graph: ChannelGraph, per_node: dict[str, np.ndarray], into: dict[int, float]) -> None:
    for name, values in per_node.items():
        info = graph.infos.get(name)
        if not isinstance(info, Info) or info.dims != (1,):
            continue
        for pos, i in enumerate(info.ids.tolist()):
            if i >= 0:
                into[i] += float(values[pos])


class APoZ:
    """Average Percentage of Zeros after ReLUs on ``batches`` (inputs only); score 1 − APoZ."""

    def __init__(self, batches: Iterable[Any]) -> None:
        self.batches = list(batches)
        if not self.batches:
            raise ValueError("batches: APoZ needs at least one calibration batch, got none")

    def __call__(self, graph: ChannelGraph, model: nn.Module) -> dict[int, float]:
        relu_nodes = set()
        for n in graph.gm.graph.nodes:
            is_mod = n.op == "call_module" and isinstance(graph.gm.get_submodule(n.target), nn.ReLU | nn.ReLU6)
            is_fn = n.op in ("call_function", "call_method") and getattr(n.target, "__name__", n.target) in (
                "relu",
                "relu_",
                "relu6",
            )
            if is_mod or is_fn:
                relu_nodes.add(n.name)
        zeros: dict[str, np.ndarray] = {}
        with torch.no_grad():
            for x in self.batches:
                _, got = _run_capturing(graph, x, relu_nodes, grad=False)
                for name, t in got.items():
                    if t.dim() == 4:
                        frac = (t == 0).float().mean(dim=(0, 2, 3)).cpu().numpy()
                        zeros[name] = zeros.get(name, 0) + frac / len(self.batches)
        scores: dict[int, float] = defaultdict(float)
        counts: dict[int, int] = defaultdict(int)
        _accumulate(graph, {k: 1.0 - v for k, v in zeros.items()}, scores)
        _accumulate(graph, {k: np.ones_like(v) for k, v in zeros.items()}, counts)
        # channels no ReLU sees count as always active
        return defaultdict(lambda: 1.0, {i: scores[i] / counts[i] for i in counts})


class Taylor:
    """First-order Taylor on activations: Θ(c) = |mean_{n,h,w} a·∂L/∂a| (Molchanov 2017).

    ``batches``: (input, target) pairs; ``loss_fn(output, target)`` (default cross-entropy).
    """

    def __init__(self, batches: Iterable[tuple[Any, Any]], loss_fn: Callable | None = None) -> None:
        self.batches = list(batches)
        if not self.batches:
            raise ValueError("batches: Taylor needs at least one (input, target) batch, got none")
        self.loss_fn = loss_fn or nn.functional.cross_entropy

    def __call__(self, graph: ChannelGraph, model: nn.Module) -> dict[int, float]:
        def nodes(kind: str) -> set[str]:
            return {
                n.name
                for n in graph.gm.graph.nodes
                if n.op == "call_module" and n.target in graph.records and graph.records[n.target].kind == kind
            }

        names = nodes("norm") or nodes("conv")  # after BN when there is one (each channel measured once)
        totals: dict[str, np.ndarray] = {}
        for x, y in self.batches:
            out, got = _run_capturing(graph, x, names, grad=True)
            model.zero_grad(set_to_none=True)
            self.loss_fn(out, y).backward()
            for name, t in got.items():
                if t.grad is None or t.dim() != 4:
                    continue
                value = (t * t.grad).mean(dim=(0, 2, 3)).abs().detach().cpu().numpy()
                totals[name] = totals.get(name, 0) + value / len(self.batches)
        model.zero_grad(set_to_none=True)
        scores: dict[int, float] = defaultdict(float)
        _accumulate(graph, totals, scores)
        return dict(scores)

"""Structured (channel) pruning through core's conversion walk.

    pruner = Pruner(model, example_inputs, PruneConfig(importance="l1", ratio=0.5, round_to=8))
    pruner = Pruner(model, example_inputs, ratio=0.5, ignored_layers=[model.fc])   # shorthand
    pruned = pruner.step()         # channels physically removed; pruner.report says what went where

``PruneConfig.plan`` builds the :class:`~slimtorch.compress.prune.graph.ChannelGraph`, scores each
removable class of channels, and picks per group the lowest-scoring ones; ``convert_module``
returns each affected layer with those channels removed (a new ``nn.Conv2d`` / ``nn.Linear`` /
``nn.BatchNorm``; convops layers and per-channel parameters sliced in place).

**How many channels a group keeps**: ``keep = make_divisible(C·(1 − ratio), round_to)``, the
MobileNet rounding (nearest multiple of ``round_to``, never more than 10% below, at least
``round_to``, at most C), so pruned widths stay kernel friendly and equal the zoo's
``_pruned25`` / ``_pruned50`` tables. A class holding m channels in a place (tied across a shuffle)
counts as m. ``ratio`` may be a dict {layer name: ratio} (the group of the layer whose outputs are
named takes that ratio; ``"*"`` the default). ``global_=True`` ranks all classes of all groups
together (scores normalised by each group's mean) and removes the lowest ``ratio`` of channels
overall, then rounds each group.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import skip_init

from slimtorch.compress.prune.graph import ChannelGraph, ModuleRecord, PruneGroup, build_graph
from slimtorch.compress.prune.importance import IMPORTANCES, channel_scores
from slimtorch.core.conversions import ConversionConfig, ConversionReport, FilterFn, Replace, convert_model

__all__ = ["PruneConfig", "PrunePlan", "Pruner", "keep_count", "prune_channels_"]


def _make_divisible(value: float, divisor: int) -> int:
    """Nearest multiple of ``divisor`` (≥ divisor), never more than 10% below ``value`` (timm/torchvision)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def keep_count(channels: int, ratio: float, round_to: int) -> int:
    """Channels kept of ``channels`` when pruning ``ratio`` (module docstring)."""
    if ratio == 0:
        return channels
    if round_to <= 1:
        return max(1, min(channels, round(channels * (1 - ratio))))
    return min(channels, _make_divisible(channels * (1 - ratio), round_to))


def _check_ratio(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: expected a float in [0, 1), got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}: expected a fraction of channels to remove in [0, 1), got {value}")
    return float(value)


@dataclass(frozen=True)
class PruneConfig(ConversionConfig):
    """``importance``: "l1" | "l2" | "bn" | "random" or a criterion object (``APoZ``, ``Taylor``,
    any callable(graph, model) -> {id: score}); ``ratio``: fraction of channels removed (float, or
    {layer: ratio}); ``global_``: one ranking across groups; ``round_to``: kept-channel multiple.

    Optional hooks of a criterion object: ``select(graph, scores, config) -> removed class roots``
    replaces the ratio rule (thresholds, explicit counts per group); ``after_prune(model, report)``
    runs after the walk (a least-squares refit of the consumers)."""

    importance: Any = "l1"
    ratio: float | Mapping[str, float] = 0.5
    global_: bool = False
    round_to: int = 8
    seed: int = 0
    # set by prune_channels_ (not options): the example inputs and the layers kept whole
    example_inputs: Any = field(default=None, repr=False, compare=False)
    ignored: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    sink: dict = field(default_factory=dict, repr=False, compare=False)  # the last plan, for the report

    def __post_init__(self) -> None:
        if isinstance(self.ratio, Mapping):
            for key, value in self.ratio.items():
                _check_ratio(value, f"ratio[{key!r}]")
        else:
            _check_ratio(self.ratio, "ratio")
        if isinstance(self.importance, str) and self.importance not in IMPORTANCES:
            raise ValueError(
                f"importance: expected one of {IMPORTANCES} or a criterion object, got {self.importance!r}"
            )
        if not isinstance(self.importance, str) and not callable(self.importance):
            raise TypeError(
                f"importance: expected a name or a callable criterion, got {type(self.importance).__name__}"
            )
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise ValueError(f"round_to: expected a positive int, got {self.round_to!r}")

    def describe(self) -> str:
        imp = self.importance if isinstance(self.importance, str) else type(self.importance).__name__
        return (
            f"PruneConfig(importance={imp!r}, ratio={self.ratio!r}, global_={self.global_}, round_to={self.round_to})"
        )

    # ------------------------------------------------------------------ plan
    def plan(self, model: nn.Module) -> PrunePlan:
        if self.example_inputs is None:
            raise ValueError("example_inputs: the pruner traces the model on example inputs; got None")
        names = {n for n, _ in model.named_modules()}
        if isinstance(self.ratio, Mapping):
            unknown = sorted(k for k in self.ratio if k != "*" and k not in names)
            if unknown:
                raise ValueError(f"ratio: no layer named {unknown[0]!r} in the model (per-layer ratios name modules)")
        graph = build_graph(model, self.example_inputs, set(self.ignored))
        scores = channel_scores(graph, model, self.importance, self.seed)
        # a criterion may choose the removed classes itself (a threshold, explicit counts per group)
        select = getattr(self.importance, "select", None)
        removed = set(select(graph, scores, self)) if callable(select) else self._select(graph, scores)
        self.sink["plan"] = PrunePlan(graph, removed)
        return self.sink["plan"]

    def _group_ratio(self, group: PruneGroup) -> float:
        if not isinstance(self.ratio, Mapping):
            return float(self.ratio)
        for module, slot in group.places:
            if slot == "out" and module in self.ratio:
                return float(self.ratio[module])
        return float(self.ratio.get("*", 0.0))

    def _select(self, graph: ChannelGraph, scores: Mapping[int, float]) -> set[int]:
        default = scores.default_factory() if isinstance(scores, defaultdict) else 0.0
        dense = np.full(len(graph.uf.parent), default, dtype=np.float64)
        if scores:
            keys = np.fromiter(scores.keys(), dtype=np.int64, count=len(scores))
            dense[keys] = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
        class_scores = {
            g.index: np.array([dense[g.members[r]].sum() for r in g.classes], dtype=np.float64) for g in graph.groups
        }
        removed: set[int] = set()
        if self.global_ and not isinstance(self.ratio, Mapping):
            normed = []
            for g in graph.groups:
                s = class_scores[g.index]
                mean = s.mean() if s.size and s.mean() > 0 else 1.0
                normed.extend((v / mean, g.index, k) for k, v in enumerate(s) for _ in range(g.multiplicity))
            normed.sort()
            cut = round(self.ratio * len(normed))
            drop_count: dict[int, int] = {}
            for _, gi, _k in normed[:cut]:
                drop_count[gi] = drop_count.get(gi, 0) + 1
            for g in graph.groups:
                channels = g.size * g.multiplicity
                frac = min(drop_count.get(g.index, 0) / channels, 0.95)
                removed |= self._drop(g, class_scores[g.index], frac)
            return removed
        for g in graph.groups:
            removed |= self._drop(g, class_scores[g.index], self._group_ratio(g))
        return removed

    def _drop(self, group: PruneGroup, s: np.ndarray, ratio: float) -> set[int]:
        channels = group.size * group.multiplicity
        keep_channels = keep_count(channels, ratio, self.round_to)
        keep = max(1, -(-keep_channels // group.multiplicity))
        n_drop = group.size - keep
        if n_drop <= 0:
            return set()
        order = np.argsort(s, kind="stable")[:n_drop]
        return {group.classes[k] for k in order.tolist()}

    # ------------------------------------------------------------------ the walk
    def convert_module(self, module: nn.Module, fqn: str, plan: PrunePlan) -> nn.Module | Replace | None:
        params = plan.params_of.get(fqn, ())
        for record in params:  # per-channel parameters of a module the walk goes through (layer scale)
            keep = plan.keep(record, "channels")
            if keep is not None:
                _slice_param_(record, keep)
                plan.notes[record.name] = (
                    f"parameter {record.extra['attr']}: {len(record.slots['channels'])} -> {len(keep)}"
                )
        record = plan.graph.records.get(fqn)
        if record is None or record.kind == "param":
            return None
        keeps = {slot: plan.keep(record, slot) for slot in record.slots}
        if all(k is None for k in keeps.values()):
            return None
        new, note = _prune_module(record, keeps)
        return Replace(new, note=note)


class PrunePlan:
    """The graph and the removed classes; keep positions per (record, slot)."""

    def __init__(self, graph: ChannelGraph, removed_roots: set[int]) -> None:
        self.graph = graph
        self.removed_roots = removed_roots
        self.removed = graph.removed_ids(removed_roots)
        self.params_of: dict[str, list[ModuleRecord]] = {}
        self.notes: dict[str, str] = {}
        for record in graph.records.values():
            if record.kind == "param":
                owner = record.name.rpartition(".")[0]
                self.params_of.setdefault(owner, []).append(record)

    def keep(self, record: ModuleRecord, slot: str) -> np.ndarray | None:
        ids = record.slots[slot]
        if not self.removed.size:
            return None
        gone = np.isin(ids, self.removed)
        return None if not gone.any() else np.nonzero(~gone)[0]


def _index(keep: np.ndarray | None, n: int, device: torch.device) -> torch.Tensor:
    idx = np.arange(n) if keep is None else keep
    return torch.as_tensor(idx, dtype=torch.long, device=device)


def _param(t: torch.Tensor, like: nn.Parameter | torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone(), requires_grad=like.requires_grad)


def _prune_module(record: ModuleRecord, keeps: dict[str, np.ndarray | None]) -> tuple[nn.Module, str]:
    m = record.module
    if record.kind in ("conv", "shiftconv"):
        return _prune_conv(record, keeps["out"], keeps["in"])
    if record.kind == "linear":
        return _prune_linear(m, keeps["out"], keeps["in"])
    if record.kind == "norm":
        return _prune_norm(m, keeps["channels"])
    if record.kind == "shift":
        keep = keeps["channels"]
        dev = m.offsets.device if hasattr(m, "offsets") else "cpu"
        _slice_shift_(m, _index(keep, len(record.slots["channels"]), dev))
        return m, f"channels {len(record.slots['channels'])} -> {len(keep)}"
    if record.kind == "prelu":
        keep = keeps["channels"]
        idx = _index(keep, m.num_parameters, m.weight.device)
        m.weight = _param(m.weight[idx], m.weight)
        m.num_parameters = len(keep)
        return m, f"channels -> {len(keep)}"
    raise TypeError(f"{record.name}: cannot prune a {record.kind} record")


def _slice_shift_(m: nn.Module, idx: torch.Tensor) -> None:
    if isinstance(getattr(m, "offsets", None), nn.Parameter):
        m.offsets = _param(m.offsets[idx.to(m.offsets.device)], m.offsets)
    else:
        m.offsets = m.offsets[idx.to(m.offsets.device)].clone()
    if hasattr(m, "channels"):
        m.channels = len(idx)


def _prune_conv(record: ModuleRecord, keep_out, keep_in) -> tuple[nn.Module, str]:
    m = record.module
    cin, cout, g = m.in_channels, m.out_channels, m.groups
    dev = m.weight.device
    out_idx = _index(keep_out, cout, dev)
    in_idx = _index(keep_in, cin, dev)
    new_cin, new_cout = len(in_idx), len(out_idx)
    if record.extra["depthwise"]:
        new_groups = new_cin
        weight = m.weight[out_idx]
    else:
        new_groups = g
        per_group = cin // g
        in_np = np.arange(cin) if keep_in is None else keep_in
        local = torch.as_tensor(in_np[in_np < per_group], device=dev)  # the same positions in every group (tied)
        weight = m.weight[out_idx][:, local]
    bias = None if m.bias is None else m.bias[out_idx]
    note = f"out {cout} -> {new_cout}, in {cin} -> {new_cin}" + (
        f", groups {g} -> {new_groups}" if new_groups != g else ""
    )
    if type(m) is nn.Conv2d:
        new = skip_init(
            nn.Conv2d,
            new_cin,
            new_cout,
            m.kernel_size,
            m.stride,
            m.padding,
            m.dilation,
            new_groups,
            bias is not None,
            m.padding_mode,
            device=dev,
            dtype=m.weight.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(weight)
            if bias is not None:
                new.bias.copy_(bias)
        new.weight.requires_grad_(m.weight.requires_grad)
        new.train(m.training)
        return new, note
    # convops layers (same parameter layout as nn.Conv2d): slice in place
    m.weight = _param(weight, m.weight)
    if bias is not None:
        m.bias = _param(bias, m.bias)
    m.in_channels, m.out_channels, m.groups = new_cin, new_cout, new_groups
    if record.kind == "shiftconv":
        _slice_shift_(m.shift, in_idx)
    return m, note


def _prune_linear(m: nn.Linear, keep_out, keep_in) -> tuple[nn.Module, str]:
    dev = m.weight.device
    out_idx = _index(keep_out, m.out_features, dev)
    in_idx = _index(keep_in, m.in_features, dev)
    new = skip_init(nn.Linear, len(in_idx), len(out_idx), m.bias is not None, device=dev, dtype=m.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(m.weight[out_idx][:, in_idx])
        if m.bias is not None:
            new.bias.copy_(m.bias[out_idx])
    new.train(m.training)
    return new, f"out {m.out_features} -> {len(out_idx)}, in {m.in_features} -> {len(in_idx)}"


def _prune_norm(m: nn.Module, keep) -> tuple[nn.Module, str]:
    dev = (m.weight if m.weight is not None else m.running_mean).device
    idx = _index(keep, m.num_features, dev)
    new = type(m)(len(idx), m.eps, m.momentum, m.affine, m.track_running_stats, device=dev)
    with torch.no_grad():
        if m.affine:
            new.weight.copy_(m.weight[idx])
            new.bias.copy_(m.bias[idx])
        if m.track_running_stats and m.running_mean is not None:
            new.running_mean.copy_(m.running_mean[idx])
            new.running_var.copy_(m.running_var[idx])
            new.num_batches_tracked.copy_(m.num_batches_tracked)
    new.to(dtype=(m.weight if m.weight is not None else m.running_mean).dtype)
    new.train(m.training)
    return new, f"channels {m.num_features} -> {len(idx)}"


def _slice_param_(record: ModuleRecord, keep: np.ndarray) -> None:
    owner, attr, dim = record.module, record.extra["attr"], record.extra["dim"]
    p = getattr(owner, attr)
    idx = torch.as_tensor(keep, dtype=torch.long, device=p.device)
    sliced = p.detach().index_select(dim, idx).clone()
    setattr(owner, attr, nn.Parameter(sliced, requires_grad=p.requires_grad) if isinstance(p, nn.Parameter) else sliced)


def _ignored_names(model: nn.Module, ignored_layers: Iterable[nn.Module | str] | None) -> frozenset[str]:
    if not ignored_layers:
        return frozenset()
    by_id = {id(m): n for n, m in model.named_modules()}
    names = set()
    for layer in ignored_layers:
        if isinstance(layer, str):
            model.get_submodule(layer)
            names.add(layer)
        elif isinstance(layer, nn.Module) and id(layer) in by_id:
            names.update(n for n, m in model.named_modules() if m is layer or n.startswith(by_id[id(layer)] + "."))
            names.add(by_id[id(layer)])
        else:
            raise ValueError(
                f"ignored_layers: expected modules of the model or their names, got {type(layer).__name__}"
            )
    return frozenset(names)


def excluded_layers(
    model: nn.Module, ignored_layers: Iterable[nn.Module | str] | None, filter_fn: FilterFn | None
) -> frozenset[str]:
    """Names whose output channels the pruner keeps: ``ignored_layers`` (with their submodules) and
    every module ``filter_fn(module, fqn)`` refuses."""
    ignored = set(_ignored_names(model, ignored_layers))
    if filter_fn is not None:
        ignored |= {n for n, m in model.named_modules() if not filter_fn(m, n)}
    return frozenset(ignored)


def resolve_config(owner: str, config: PruneConfig | None, options: dict[str, Any], **defaults: Any) -> PruneConfig:
    """``config``, or one built from keyword ``options`` over ``defaults`` (the shorthands of
    :class:`Pruner` and the training-time pruners); never both, unknown options named."""
    if config is not None and options:
        raise TypeError(f"{owner}: pass either config or keyword options ({sorted(options)}), not both")
    if config is not None:
        if not isinstance(config, PruneConfig):
            raise TypeError(f"config: expected a PruneConfig, got {type(config).__name__}")
        return config
    known = {f.name for f in dataclasses.fields(PruneConfig)} - {"example_inputs", "ignored", "sink"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"{owner}: unknown option {unknown[0]!r}; expected one of {sorted(known)}")
    return PruneConfig(**{**defaults, **options})


def check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")


def prune_channels_(
    model: nn.Module,
    config: PruneConfig,
    filter_fn: FilterFn | None = None,
    *,
    example_inputs: Any,
    ignored_layers: Iterable[nn.Module | str] | None = None,
) -> ConversionReport:
    """Remove channels physically (module docstring). ``filter_fn(module, fqn)`` False keeps a
    layer's output channels (like ``ignored_layers``). Returns the walk's report."""
    if not isinstance(config, PruneConfig):
        raise TypeError(f"config: expected a PruneConfig, got {type(config).__name__}")
    ignored = excluded_layers(model, ignored_layers, filter_fn)
    config = dataclasses.replace(config, example_inputs=example_inputs, ignored=ignored, sink={})
    report = convert_model(model, config, None, conversion="prune_channels_")
    plan = config.sink["plan"]
    report.converted.update(plan.notes)
    for group, reason in plan.graph.frozen_groups:
        for module, slot in group.places:
            if slot == "out":
                report.skipped.setdefault(module, f"output channels kept: {reason}")
    report.plan = plan  # type: ignore[attr-defined]
    after = getattr(config.importance, "after_prune", None)  # e.g. reconstruction's least-squares refit
    if callable(after):
        after(report.model, report)
    return report


class Pruner:
    """Torch-Pruning style front end of :func:`prune_channels_`.

    ``Pruner(model, example_inputs, PruneConfig(...), filter_fn=None)`` or the shorthands
    ``Pruner(model, example_inputs, ratio=0.5, importance="l2", ignored_layers=[model.fc], round_to=8,
    global_=False)``. ``step()`` prunes and returns the pruned model; ``report`` says what was pruned where.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        config: PruneConfig | None = None,
        filter_fn: FilterFn | None = None,
        *,
        ignored_layers: Iterable[nn.Module | str] | None = None,
        **options: Any,
    ) -> None:
        check_model(model)
        self.config = resolve_config("Pruner", config, options)
        self.model = model
        self.example_inputs = example_inputs
        self.filter_fn = filter_fn
        self.ignored_layers = _ignored_names(model, ignored_layers)
        self.report: ConversionReport | None = None

    def step(self) -> nn.Module:
        self.report = prune_channels_(
            self.model,
            self.config,
            self.filter_fn,
            example_inputs=self.example_inputs,
            ignored_layers=self.ignored_layers,
        )
        self.model = self.report.model
        return self.model

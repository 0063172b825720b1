"""Per-layer sensitivity analysis, per-layer ratios for a budget, and NetAdapt.

    report = sensitivity(model, x, eval_fn, ratios=(0.25, 0.5, 0.75))     # eval_fn(model) -> score, higher better
    report.plot("sensitivity.png"); print(report.markdown())
    chosen = ratios_for_budget(model, x, report, budget=0.5, metric="macs")   # chosen.ratios, chosen.model
    result = netadapt(model, x, eval_fn, budget=0.6, metric="latency")        # result.model, result.history

**Sensitivity** (Li et al. 2017, §4.1): every removable group of coupled channels (:mod:`.graph`;
named by its first producing layer) is pruned *alone* at each ratio — the lowest-``importance``
classes removed physically, on a copy — and ``eval_fn`` scores the copy; params, MACs (torch's
flop counter on the example inputs, FLOPs / 2) and optionally latency are recorded beside it.

**Ratios for a budget.** For a tolerance t, each layer takes the largest measured ratio whose
score drop (baseline − score) is ≤ t. The cost after pruning every layer so is measured (not
summed from the single-layer rows: two adjacent layers' savings overlap), and the smallest t among
the measured drops that meets ``budget × cost(unpruned)`` is found by bisection (the cost falls as
t grows: every layer's ratio can only grow). ``metric``: "params", "macs", "latency" or a
callable(model) -> cost.

**NetAdapt** (Yang et al. 2018, *NetAdapt: Platform-Aware Neural Network Adaptation for Mobile
Applications*): starting from the model, each iteration makes one proposal per group — remove
``step`` × its original width more channels (at least ``round_to``; the lowest-``importance``
ones, as the paper's magnitude choice), optionally ``finetune(proposal)`` (the paper's short-term
fine-tune) — measures the proposal's cost and score, and keeps the proposal that loses the least
score per unit of cost saved, (score − score')/(cost − cost'); it stops when the cost is within
``budget``. Latency is measured on the model's device with :func:`slimtorch.core.bench.time_fn`
(do_bench medians on CUDA, a perf_counter median on CPU), so the search follows what this device
really runs. (The paper sizes each proposal to one fixed resource reduction and keeps the most
accurate; with a fixed step per layer the loss per unit saved is the comparable measure.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from slimtorch.compress.prune._selection import class_scores, drop_count, group_key, group_names, lowest
from slimtorch.compress.prune.graph import ChannelGraph, build_graph
from slimtorch.compress.prune.importance import channel_scores
from slimtorch.compress.prune.pruner import PruneConfig, Pruner, _check_ratio, _ignored_names
from slimtorch.core.checks import check_positive_int
from slimtorch.core.conversions import ConversionReport, FilterFn
from slimtorch.core.model_stats import count_macs, count_parameters

__all__ = [
    "METRICS",
    "BudgetResult",
    "NetAdaptResult",
    "SensitivityReport",
    "SensitivityRow",
    "measure_cost",
    "netadapt",
    "prune_groups",
    "ratios_at",
    "ratios_for_budget",
    "sensitivity",
]

METRICS = ("params", "macs", "latency")
Metric = str | Callable[[nn.Module], float]


# ----------------------------------------------------------------------------- measuring


def _inputs(example_inputs: Any) -> tuple:
    return tuple(example_inputs) if isinstance(example_inputs, tuple | list) else (example_inputs,)


def macs(model: nn.Module, example_inputs: Any) -> int:
    """MACs of one forward on ``example_inputs`` (core's :func:`~slimtorch.core.model_stats.count_macs`:
    convolutions, linears and compressed layers). Functional matmuls (attention) are not counted:
    pass ``metric=callable`` for those."""
    return count_macs(model, *_inputs(example_inputs))


def latency_ms(model: nn.Module, example_inputs: Any, *, warmup_ms: float = 10.0, rep_ms: float = 40.0) -> float:
    """Median milliseconds of one forward on the model's device (:func:`slimtorch.core.bench.time_fn`)."""
    from slimtorch.core.bench import time_fn

    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    inputs = _inputs(example_inputs)

    def run() -> None:
        with torch.no_grad():
            model(*inputs)

    return time_fn(run, device=device, warmup_ms=warmup_ms, rep_ms=rep_ms).median_ms


def measure_cost(model: nn.Module, example_inputs: Any, metric: Metric, **timing: float) -> float:
    """``metric`` of ``model``: "params" (count_parameters), "macs", "latency" (ms) or a callable."""
    if callable(metric):
        return float(metric(model))
    if metric == "params":
        return float(count_parameters(model))
    if metric == "macs":
        return float(macs(model, example_inputs))
    if metric == "latency":
        return latency_ms(model, example_inputs, **timing)
    raise ValueError(f"metric: expected one of {METRICS} or a callable(model) -> cost, got {metric!r}")


def _check_metric(metric: Any) -> None:
    if not callable(metric) and metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS} or a callable(model) -> cost, got {metric!r}")


def _check_budget(budget: Any) -> float:
    if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 < budget < 1:
        raise ValueError(f"budget: expected the fraction of the unpruned cost to reach, in (0, 1), got {budget!r}")
    return float(budget)


# ----------------------------------------------------------------------------- pruning chosen groups


class _Targeted:
    """Criterion removing ``drop[group key]`` classes (lowest ``importance``) from the named groups
    only; every other group is left whole."""

    def __init__(self, drop: dict[tuple, int], importance: Any = "l1", seed: int = 0) -> None:
        self.drop = drop
        self.importance = importance
        self.seed = seed

    def __call__(self, graph: ChannelGraph, model: nn.Module) -> Any:
        return channel_scores(graph, model, self.importance, self.seed)

    def select(self, graph: ChannelGraph, scores: Any, config: PruneConfig) -> set[int]:
        per_group = class_scores(graph, scores)
        removed: set[int] = set()
        for g in graph.groups:
            n = self.drop.get(group_key(g), 0)
            if n:
                removed |= lowest(g, per_group[g.index], n)
        return removed


def prune_groups(
    model: nn.Module,
    example_inputs: Any,
    drop: dict[tuple, int],
    *,
    importance: Any = "l1",
    filter_fn: FilterFn | None = None,
    ignored_layers: Iterable[nn.Module | str] | None = None,
) -> tuple[nn.Module, ConversionReport]:
    """Remove ``drop[key]`` classes from each group (keys: :func:`._selection.group_key`) of
    ``model`` in place through the Pruner; returns the pruned model and the report."""
    config = PruneConfig(importance=_Targeted(drop, importance), ratio=0.0, round_to=1)
    pruner = Pruner(model, example_inputs, config, filter_fn, ignored_layers=ignored_layers)
    pruned = pruner.step()
    return pruned, pruner.report


# ----------------------------------------------------------------------------- sensitivity


@dataclass
class SensitivityRow:
    layer: str  # the group's name: its first producing layer
    ratio: float
    channels: int  # the group's channels before
    kept: int
    score: float
    params: int
    macs: int
    latency_ms: float | None = None


@dataclass
class SensitivityReport:
    """Scores of every group pruned alone at each ratio; ``baseline`` is the unpruned model's row."""

    baseline: SensitivityRow
    rows: list[SensitivityRow]
    keys: dict[str, tuple] = field(default_factory=dict, repr=False)  # layer -> group key
    multiplicity: dict[str, int] = field(default_factory=dict, repr=False)

    def curves(self) -> dict[str, list[SensitivityRow]]:
        out: dict[str, list[SensitivityRow]] = {}
        for row in self.rows:
            out.setdefault(row.layer, []).append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": asdict(self.baseline), "rows": [asdict(r) for r in self.rows]}

    def markdown(self) -> str:
        lines = [
            f"baseline: score {self.baseline.score:.4f}, {self.baseline.params:,} params, {self.baseline.macs:,} MACs",
            "",
            "| layer | ratio | channels kept | score | Δscore | params | MACs | latency ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.rows:
            lat = "" if r.latency_ms is None else f"{r.latency_ms:.3f}"
            lines.append(
                f"| {r.layer} | {r.ratio:.2f} | {r.kept}/{r.channels} | {r.score:.4f} | "
                f"{r.score - self.baseline.score:+.4f} | {r.params:,} | {r.macs:,} | {lat} |"
            )
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path) -> Path:
        """Score against ratio, one line per layer (the unpruned score dashed)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from slimtorch.core.bench import save_figure

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for layer, rows in self.curves().items():
            ax.plot([0.0] + [r.ratio for r in rows], [self.baseline.score] + [r.score for r in rows], "o-", label=layer)
        ax.axhline(self.baseline.score, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("fraction of the layer's channels removed")
        ax.set_ylabel("score (eval_fn)")
        ax.set_title("sensitivity: each layer pruned alone")
        ax.legend(fontsize=7, ncol=2)
        path = Path(path)
        save_figure(fig, path)
        return path


def _groups(model: nn.Module, example_inputs: Any, filter_fn: FilterFn | None, ignored: frozenset[str]) -> ChannelGraph:
    names = set(ignored)
    if filter_fn is not None:
        names |= {n for n, m in model.named_modules() if not filter_fn(m, n)}
    return build_graph(model, example_inputs, names)


def sensitivity(
    model: nn.Module,
    example_inputs: Any,
    eval_fn: Callable[[nn.Module], float],
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    *,
    importance: Any = "l1",
    round_to: int = 1,
    latency: bool = False,
    filter_fn: FilterFn | None = None,
    ignored_layers: Iterable[nn.Module | str] | None = None,
    progress: bool = True,
    **timing: float,
) -> SensitivityReport:
    """Prune each group alone at each ratio and score it (module docstring). ``model`` is not changed."""
    if not callable(eval_fn):
        raise TypeError(f"eval_fn: expected a callable(model) -> score, got {type(eval_fn).__name__}")
    ratios = [_check_ratio(r, f"ratios[{k}]") for k, r in enumerate(ratios)]
    if not ratios:
        raise ValueError("ratios: expected at least one ratio, got none")
    check_positive_int(round_to, "round_to")
    ignored = _ignored_names(model, ignored_layers)
    graph = _groups(model, example_inputs, filter_fn, ignored)
    names = group_names(graph)

    def row(m: nn.Module, layer: str, ratio: float, channels: int, kept: int) -> SensitivityRow:
        lat = latency_ms(m, example_inputs, **timing) if latency else None
        return SensitivityRow(
            layer, ratio, channels, kept, float(eval_fn(m)), count_parameters(m), macs(m, example_inputs), lat
        )

    base = row(model, "<unpruned>", 0.0, 0, 0)
    report = SensitivityReport(base, [])
    position = {name: k for k, name in enumerate(graph.records)}
    groups = sorted(graph.groups, key=lambda g: min(position.get(m, len(position)) for m, _ in g.places))
    todo = [(g, r) for g in groups for r in sorted(ratios)]
    for g, ratio in tqdm(todo, desc="sensitivity", disable=not progress, leave=False):
        channels = g.size * g.multiplicity
        n = drop_count(g, ratio, round_to)
        pruned, _ = prune_groups(
            copy.deepcopy(model),
            example_inputs,
            {group_key(g): n},
            importance=importance,
            filter_fn=filter_fn,
            ignored_layers=ignored,
        )
        layer = names[g.index]
        report.keys[layer] = group_key(g)
        report.multiplicity[layer] = g.multiplicity
        report.rows.append(row(pruned, layer, ratio, channels, (g.size - n) * g.multiplicity))
    return report


# ----------------------------------------------------------------------------- ratios for a budget


@dataclass
class BudgetResult:
    ratios: dict[str, float]  # layer -> ratio (0: left whole)
    model: nn.Module = field(repr=False)
    report: ConversionReport = field(repr=False)
    tolerance: float  # the score drop each layer was allowed
    cost0: float
    cost: float
    target: float
    met: bool
    score: float | None = None


def ratios_at(report: SensitivityReport, tolerance: float) -> dict[str, float]:
    """Each layer's largest measured ratio whose score drop is ≤ ``tolerance`` (0 if none)."""
    out: dict[str, float] = {}
    for layer, rows in report.curves().items():
        ok = [r.ratio for r in rows if report.baseline.score - r.score <= tolerance]
        out[layer] = max(ok, default=0.0)
    return out


def _drops_from_ratios(report: SensitivityReport, ratios: dict[str, float]) -> dict[tuple, int]:
    drop = {}
    for layer, ratio in ratios.items():
        if ratio <= 0:
            continue
        row = next(r for r in report.curves()[layer] if r.ratio == ratio)
        drop[report.keys[layer]] = (row.channels - row.kept) // report.multiplicity[layer]
    return drop


def ratios_for_budget(
    model: nn.Module,
    example_inputs: Any,
    report: SensitivityReport,
    budget: float,
    *,
    metric: Metric = "macs",
    eval_fn: Callable[[nn.Module], float] | None = None,
    importance: Any = "l1",
    filter_fn: FilterFn | None = None,
    ignored_layers: Iterable[nn.Module | str] | None = None,
    **timing: float,
) -> BudgetResult:
    """Per-layer ratios from ``report`` meeting ``budget`` × the unpruned cost with the smallest
    tolerated score drop (module docstring); ``model`` is not changed, ``result.model`` is the pruned copy."""
    budget = _check_budget(budget)
    _check_metric(metric)
    if not isinstance(report, SensitivityReport):
        raise TypeError(f"report: expected a SensitivityReport (from sensitivity()), got {type(report).__name__}")
    ignored = _ignored_names(model, ignored_layers)
    cost0 = measure_cost(model, example_inputs, metric, **timing)
    target = budget * cost0
    tolerances = sorted({0.0} | {report.baseline.score - r.score for r in report.rows})

    def attempt(t: float) -> tuple[dict[str, float], nn.Module, ConversionReport, float]:
        ratios = ratios_at(report, t)
        pruned, rep = prune_groups(
            copy.deepcopy(model),
            example_inputs,
            _drops_from_ratios(report, ratios),
            importance=importance,
            filter_fn=filter_fn,
            ignored_layers=ignored,
        )
        return ratios, pruned, rep, measure_cost(pruned, example_inputs, metric, **timing)

    lo, hi = 0, len(tolerances) - 1
    best = attempt(tolerances[hi])
    best_t = tolerances[hi]
    met = best[3] <= target
    if met:
        while lo < hi:  # smallest index whose cost meets the target (cost non-increasing in t)
            mid = (lo + hi) // 2
            got = attempt(tolerances[mid])
            if got[3] <= target:
                hi, best, best_t = mid, got, tolerances[mid]
            else:
                lo = mid + 1
    ratios, pruned, rep, cost = best
    score = float(eval_fn(pruned)) if eval_fn is not None else None
    return BudgetResult(ratios, pruned, rep, best_t, cost0, cost, target, met, score)


# ----------------------------------------------------------------------------- NetAdapt


@dataclass
class NetAdaptStep:
    iteration: int
    layer: str
    channels_before: int
    channels_after: int
    cost: float
    score: float
    loss_per_cost: float
    proposals: dict[str, tuple[float, float]]  # layer -> (cost, score) of every proposal this iteration


@dataclass
class NetAdaptResult:
    model: nn.Module = field(repr=False)
    ratios: dict[str, float]  # layer -> fraction of its original channels removed
    history: list[NetAdaptStep]
    cost0: float
    cost: float
    target: float
    score0: float
    score: float
    met: bool
    stopped: str = ""  # "budget met" | "max_iters" | "no proposal saves cost"
    report: ConversionReport | None = field(default=None, repr=False)

    def plot(self, path: str | Path) -> Path:
        """Score against cost along the search (the budget dashed)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from slimtorch.core.bench import save_figure

        fig, ax = plt.subplots(figsize=(6.0, 4.0))
        costs = [self.cost0] + [h.cost for h in self.history]
        scores = [self.score0] + [h.score for h in self.history]
        ax.plot(costs, scores, "o-")
        for h in self.history:
            ax.annotate(h.layer, (h.cost, h.score), fontsize=6)
        ax.axvline(self.target, color="grey", ls="--", lw=0.8)
        ax.invert_xaxis()
        ax.set_xlabel("cost")
        ax.set_ylabel("score (eval_fn)")
        ax.set_title("NetAdapt: one layer shrunk per iteration")
        path = Path(path)
        save_figure(fig, path)
        return path


def netadapt(
    model: nn.Module,
    example_inputs: Any,
    eval_fn: Callable[[nn.Module], float],
    budget: float,
    *,
    metric: Metric = "latency",
    step: float = 0.125,
    importance: Any = "l1",
    round_to: int = 1,
    finetune: Callable[[nn.Module], Any] | None = None,
    max_iters: int = 100,
    filter_fn: FilterFn | None = None,
    ignored_layers: Iterable[nn.Module | str] | None = None,
    progress: bool = True,
    **timing: float,
) -> NetAdaptResult:
    """Greedy layer-by-layer shrinking until ``cost ≤ budget × cost(model)`` (module docstring).
    ``model`` is not changed; ``result.model`` is the pruned copy."""
    if not callable(eval_fn):
        raise TypeError(f"eval_fn: expected a callable(model) -> score, got {type(eval_fn).__name__}")
    budget = _check_budget(budget)
    _check_metric(metric)
    if isinstance(step, bool) or not isinstance(step, int | float) or not 0 < step < 1:
        raise ValueError(f"step: expected the fraction of a layer's channels removed per step, in (0, 1), got {step!r}")
    check_positive_int(round_to, "round_to")
    check_positive_int(max_iters, "max_iters")
    ignored = _ignored_names(model, ignored_layers)
    current = copy.deepcopy(model)
    graph0 = _groups(current, example_inputs, filter_fn, ignored)
    names0 = group_names(graph0)
    original = {group_key(g): g.size * g.multiplicity for g in graph0.groups}
    layer_of = {group_key(g): names0[g.index] for g in graph0.groups}
    cost0 = cost = measure_cost(current, example_inputs, metric, **timing)
    score0 = score = float(eval_fn(current))
    target = budget * cost0
    history: list[NetAdaptStep] = []
    report: ConversionReport | None = None
    bar = tqdm(total=max_iters, desc="netadapt", disable=not progress, leave=False)
    while cost > target and len(history) < max_iters:
        graph = _groups(current, example_inputs, filter_fn, ignored)
        best = None
        proposals: dict[str, tuple[float, float]] = {}
        for g in graph.groups:
            key = group_key(g)
            if key not in original:
                continue
            want = max(round_to, round(step * original[key] / round_to) * round_to)
            n = min(-(-want // g.multiplicity), g.size - max(1, -(-round_to // g.multiplicity)))
            if n <= 0:
                continue
            cand, rep = prune_groups(
                copy.deepcopy(current),
                example_inputs,
                {key: n},
                importance=importance,
                filter_fn=filter_fn,
                ignored_layers=ignored,
            )
            if finetune is not None:
                finetune(cand)
            c = measure_cost(cand, example_inputs, metric, **timing)
            s = float(eval_fn(cand))
            proposals[layer_of[key]] = (c, s)
            saving = cost - c
            if saving <= 0:
                continue
            value = (score - s) / saving
            if best is None or value < best[0]:
                best = (value, key, g, n, cand, rep, c, s)
        if best is None:
            break  # no proposal saves anything: the budget cannot be reached this way
        value, key, g, n, cand, rep, c, s = best
        channels = g.size * g.multiplicity
        history.append(
            NetAdaptStep(len(history), layer_of[key], channels, (g.size - n) * g.multiplicity, c, s, value, proposals)
        )
        report = rep if report is None else report + rep
        current, cost, score = cand, c, s
        bar.update(1)
        bar.set_postfix(cost=f"{cost / cost0:.3f}", score=f"{score:.4f}")
    bar.close()
    final = _groups(current, example_inputs, filter_fn, ignored)
    widths = {group_key(g): g.size * g.multiplicity for g in final.groups}
    ratios = {layer_of[k]: 1.0 - widths.get(k, v) / v for k, v in original.items()}
    met = cost <= target
    stopped = "budget met" if met else ("max_iters" if len(history) >= max_iters else "no proposal saves cost")
    return NetAdaptResult(current, ratios, history, cost0, cost, target, score0, score, met, stopped, report)

"""Per-layer mixed precision: :func:`plan_bits` chooses each layer's format under a size or a
measured-latency budget, and the plan applies in one ``quantize_`` call::

    plan = plan_bits(model, lambda m: val_loss(m), budget=SizeBudget(ratio=6.0))
    print(plan.table())
    quantize_(model, plan.configs)          # {fqn: config}: every layer its own format

**Sensitivity** (the "one layer at a time" measurement of HAWQ, Dong et al. 2019, and the W/A
bit tables the surveys list): with every other layer in float, layer l is quantized with
candidate c and ``eval_fn(model)`` is called; its penalty is

    Δ(l, c) = eval_fn(model with l in c) − eval_fn(float model)     (eval_fn a loss: lower is better)

(``higher_is_better=True`` for an accuracy: Δ = base − score). Penalties are taken as additive,
so a plan's predicted score is base + Σ_l Δ(l, c_l). Layers stay in float when that is cheaper
in penalty and the budget allows (``keep_float``); they are then simply not in the config map.

**Cost** of (l, c): for a :class:`SizeBudget`, the exact bytes of the quantized layer's buffers
(packed weight, scales / zero points / codebook, bias: ``memory_bytes`` of the layer that
``quantize_`` would put there, which is also what a ``coder="raw"`` compressed file stores for
it). The budget covers the whole model: the planned layers plus every other tensor as it is.
``SizeBudget(ratio=6)`` means at most fp32 bytes / 6, fp32 bytes being the model's tensors at 4
bytes per float element. For a :class:`LatencyBudget`, the median seconds of the layer's forward
on the input it sees in ``model(example_input)`` (``measure_fn``, :func:`core.bench.time_fn` by
default), plus the rest of the model's measured float time. On CPU tensors that times the
reference path (dequantise, then an fp32 matmul), which says nothing about the GPU kernels'
speed: measure on the device the model will run on.

**Allocation**: a multiple-choice knapsack, min Σ Δ subject to Σ cost ≤ budget − fixed, one
option per layer. :func:`solve_knapsack` does dynamic programming over costs in units of
``resolution`` (1 byte: exact) with each option's cost rounded up, so a plan it calls feasible
is; when layers × units exceeds ``max_cells`` it falls back to a greedy upgrade (start every
layer at its cheapest option, repeatedly take the upgrade with the largest penalty decrease per
extra unit that still fits), which is not guaranteed optimal. A budget below the cheapest plan
raises ``ValueError`` naming the smallest achievable size (or time).

Candidates are ``(name, WeightConfig)`` pairs (:data:`DEFAULT_CANDIDATES`: int8, int4 at each
group size, ternary, binary, codebook 2..8 bits); pass more (another module's formats) or
names from :data:`FORMATS`; an unknown name raises.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtorch.core.bench import time_fn
from slimtorch.core.conversions import ConversionReport, conversion_source
from slimtorch.core.model_stats import memory_bytes
from slimtorch.core.modules import replace_submodule
from slimtorch.quant import formats
from slimtorch.quant.api import (
    BinaryWeightConfig,
    CodebookWeightConfig,
    Int4WeightOnlyConfig,
    Int8DynamicActivationInt8WeightConfig,
    Int8WeightOnlyConfig,
    TernaryWeightConfig,
    WeightConfig,
    quantize_,
)

FLOAT = "float"

DEFAULT_CANDIDATES: list[tuple[str, WeightConfig]] = [
    ("int8", Int8WeightOnlyConfig()),
    *[(f"int4-g{g}", Int4WeightOnlyConfig(group_size=g)) for g in formats.INT4_GROUP_SIZES],
    ("ternary", TernaryWeightConfig()),
    ("binary", BinaryWeightConfig()),
    *[(f"codebook-{b}bit", CodebookWeightConfig(bits=b)) for b in formats.CODEBOOK_BITS],
]

# Candidates by name (plan_bits(candidates=["int8", "int4-g32"])); other modules may add theirs.
FORMATS: dict[str, WeightConfig] = {**dict(DEFAULT_CANDIDATES), "w8a8": Int8DynamicActivationInt8WeightConfig()}


# ----------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class SizeBudget:
    """At most ``bytes`` for the whole model, or fp32 bytes / ``ratio`` (give exactly one)."""

    ratio: float | None = None
    bytes: int | None = None

    def __post_init__(self):
        if (self.ratio is None) == (self.bytes is None):
            raise ValueError(f"SizeBudget: expected exactly one of ratio= or bytes=, got {self!r}")
        if self.ratio is not None and not (isinstance(self.ratio, int | float) and self.ratio > 0):
            raise ValueError(f"ratio: expected a positive number (fp32 bytes / planned bytes), got {self.ratio!r}")
        if self.bytes is not None and not (isinstance(self.bytes, int) and self.bytes > 0):
            raise ValueError(f"bytes: expected a positive int, got {self.bytes!r}")

    def limit(self, fp32_bytes: int) -> int:
        return self.bytes if self.bytes is not None else math.floor(fp32_bytes / self.ratio)


def measure_seconds(layer: nn.Module, x: torch.Tensor) -> float:
    """Median seconds of ``layer(x)`` (no gradients): do_bench on CUDA, perf_counter on CPU."""
    with torch.no_grad():
        return time_fn(lambda: layer(x), device=x.device, warmup_ms=5.0, rep_ms=20.0).median_ms / 1e3


@dataclass(frozen=True, eq=False)
class LatencyBudget:
    """At most ``seconds`` for ``model(example_input)``: the planned layers' measured times
    (``measure_fn(layer, x)`` on each layer's own input) plus the rest of the model's float time.
    On CPU tensors the default timer measures the reference path (module docstring)."""

    seconds: float
    example_input: torch.Tensor = field(repr=False)
    measure_fn: Callable[[nn.Module, torch.Tensor], float] = field(default=measure_seconds, repr=False)

    def __post_init__(self):
        if not (isinstance(self.seconds, int | float) and self.seconds > 0):
            raise ValueError(f"seconds: expected a positive number, got {self.seconds!r}")
        if not isinstance(self.example_input, torch.Tensor):
            raise TypeError(f"example_input: expected a tensor, got {type(self.example_input).__name__}")
        if not callable(self.measure_fn):
            raise TypeError(f"measure_fn: expected a callable (layer, x) -> seconds, got {self.measure_fn!r}")


Budget = SizeBudget | LatencyBudget


# ----------------------------------------------------------------------------- the knapsack


def solve_knapsack(
    costs: Sequence[Sequence[float]],
    penalties: Sequence[Sequence[float]],
    capacity: float,
    *,
    resolution: float = 1.0,
    method: str = "auto",
    max_cells: int = 20_000_000,
) -> tuple[list[int], str]:
    """Multiple-choice knapsack: one option per group, min Σ penalty with Σ cost ≤ capacity
    (module docstring). Returns (chosen option per group, "dp" or "greedy"); raises ValueError
    when even the cheapest options exceed ``capacity``."""
    if method not in ("auto", "dp", "greedy"):
        raise ValueError(f"method: expected 'auto', 'dp' or 'greedy', got {method!r}")
    if len(costs) != len(penalties) or any(len(c) != len(p) or not c for c, p in zip(costs, penalties, strict=True)):
        raise ValueError("costs, penalties: expected one non-empty list of options per group, of equal lengths")
    if not resolution > 0:
        raise ValueError(f"resolution: expected a positive number, got {resolution!r}")
    units = [[math.ceil(c / resolution - 1e-9) for c in group] for group in costs]  # rounded up: stays feasible
    width = math.floor(capacity / resolution + 1e-9)
    cheapest = sum(min(g) for g in units)
    if cheapest > width:
        raise ValueError(f"capacity: {capacity} is below the cheapest choice, {cheapest * resolution}")
    if method == "greedy" or (method == "auto" and len(units) * (width + 1) > max_cells):
        return _greedy(units, penalties, width), "greedy"
    return _dp(units, penalties, width), "dp"


def _dp(units: list[list[int]], penalties: Sequence[Sequence[float]], width: int) -> list[int]:
    """best[w] = least Σ penalty of the groups so far at total cost exactly w; choice[g][w] its option."""
    best = np.full(width + 1, np.inf)
    best[0] = 0.0
    choices = []
    for group_units, group_pen in zip(units, penalties, strict=True):
        new = np.full(width + 1, np.inf)
        choice = np.full(width + 1, -1, dtype=np.int32)
        for o, (u, pen) in enumerate(zip(group_units, group_pen, strict=True)):
            if u > width:
                continue
            shifted = np.full(width + 1, np.inf)
            shifted[u:] = best[: width + 1 - u] + pen
            better = shifted < new  # strict: the first option wins ties
            new[better], choice[better] = shifted[better], o
        best = new
        choices.append(choice)
    w = int(np.argmin(best))  # the least penalty; among equal ones the cheapest
    picked = []
    for g in reversed(range(len(units))):
        o = int(choices[g][w])
        picked.append(o)
        w -= units[g][o]
    return picked[::-1]


def _greedy(units: list[list[int]], penalties: Sequence[Sequence[float]], width: int) -> list[int]:
    """Cheapest options first, then the upgrade with the largest penalty decrease per unit that fits."""
    picked = [min(range(len(g)), key=lambda o, g=g, p=p: (g[o], p[o])) for g, p in zip(units, penalties, strict=True)]
    spare = width - sum(units[g][o] for g, o in enumerate(picked))
    while True:
        best_rate, best = 0.0, None
        for g, (group_units, group_pen) in enumerate(zip(units, penalties, strict=True)):
            cur = picked[g]
            for o, (u, pen) in enumerate(zip(group_units, group_pen, strict=True)):
                gain, extra = group_pen[cur] - pen, u - group_units[cur]
                if gain <= 0 or extra > spare:
                    continue
                rate = math.inf if extra <= 0 else gain / extra
                if best is None or rate > best_rate:
                    best_rate, best = rate, (g, o, extra)
        if best is None:
            return picked
        g, o, extra = best
        picked[g], spare = o, spare - extra


# ----------------------------------------------------------------------------- the plan


@dataclass
class Option:
    """One (layer, format): its cost, its score with only this layer quantized, its penalty."""

    bytes: int
    score: float
    penalty: float
    seconds: float | None = None


@dataclass
class Sensitivity:
    """Every (layer, format) measured once by :func:`plan_bits`; :meth:`allocate` solves any budget."""

    options: dict[str, dict[str, Option]]  # fqn -> format name -> Option ("float" included)
    configs: dict[str, WeightConfig]  # format name -> config
    fp32_bytes: int
    fixed_bytes: int  # tensors outside the planned layers
    fixed_seconds: float | None  # the rest of the model's float time (latency budgets)
    base_score: float
    higher_is_better: bool
    shapes: dict[str, str] = field(default_factory=dict)

    def smallest_bytes(self) -> int:
        return self.fixed_bytes + sum(min(o.bytes for o in opts.values()) for opts in self.options.values())

    def allocate(
        self, budget: Budget, *, method: str = "auto", resolution: float | None = None, max_cells: int = 20_000_000
    ) -> BitPlan:
        """The least-penalty choice per layer within ``budget`` (module docstring)."""
        if not isinstance(budget, SizeBudget | LatencyBudget):
            raise TypeError(f"budget: expected SizeBudget(ratio=...|bytes=...) or LatencyBudget(...), got {budget!r}")
        timed = isinstance(budget, LatencyBudget)
        if timed and self.fixed_seconds is None:
            raise ValueError("budget: these sensitivities were measured without times; plan with a LatencyBudget")
        if timed:
            limit, fixed = float(budget.seconds), self.fixed_seconds
            costs = [[o.seconds for o in opts.values()] for opts in self.options.values()]
            resolution = resolution or limit / 10_000
        else:
            limit, fixed = budget.limit(self.fp32_bytes), self.fixed_bytes
            costs = [[o.bytes for o in opts.values()] for opts in self.options.values()]
            resolution = resolution or 1.0
        cheapest = fixed + sum(min(c) for c in costs)
        if cheapest > limit:
            smallest = self.smallest_bytes()
            what = (
                f"the fastest achievable is {cheapest * 1e3:.3f} ms"
                if timed
                else f"the smallest achievable size is {smallest:,} bytes "
                f"({self.fp32_bytes / smallest:.2f}x smaller than fp32's {self.fp32_bytes:,})"
            )
            raise ValueError(f"budget: {budget!r} (limit {limit:,}) cannot be met: {what} with these candidates")
        penalties = [[o.penalty for o in opts.values()] for opts in self.options.values()]
        picked, used = solve_knapsack(
            costs, penalties, limit - fixed, resolution=resolution, method=method, max_cells=max_cells
        )
        choices = {fqn: list(opts)[o] for (fqn, opts), o in zip(self.options.items(), picked, strict=True)}
        return BitPlan(choices, self, budget, limit, used)


@dataclass
class BitPlan:
    """:func:`plan_bits`' answer. ``configs`` ({fqn: config}, float layers absent) goes straight to
    ``quantize_``; ``choices`` names every planned layer's format ("float" when it stays)."""

    choices: dict[str, str]
    sensitivity: Sensitivity
    budget: Budget
    limit: float  # bytes or seconds the whole model may take
    method: str  # "dp" or "greedy"

    @property
    def configs(self) -> dict[str, WeightConfig]:
        return {fqn: self.sensitivity.configs[name] for fqn, name in self.choices.items() if name != FLOAT}

    @property
    def options(self) -> dict[str, dict[str, Option]]:
        return self.sensitivity.options

    @property
    def fp32_bytes(self) -> int:
        return self.sensitivity.fp32_bytes

    @property
    def predicted_bytes(self) -> int:
        return self.sensitivity.fixed_bytes + sum(self.options[f][c].bytes for f, c in self.choices.items())

    @property
    def predicted_ratio(self) -> float:
        return self.fp32_bytes / self.predicted_bytes

    @property
    def predicted_seconds(self) -> float | None:
        if self.sensitivity.fixed_seconds is None:
            return None
        return self.sensitivity.fixed_seconds + sum(self.options[f][c].seconds for f, c in self.choices.items())

    @property
    def predicted_score(self) -> float:
        """base + Σ penalties (additive model), in eval_fn's units."""
        s = self.sensitivity
        total = sum(self.options[f][c].penalty for f, c in self.choices.items())
        return s.base_score - total if s.higher_is_better else s.base_score + total

    def apply(self, model: nn.Module) -> ConversionReport:
        """``quantize_(model, self.configs)``: the plan in one walk, in place."""
        return quantize_(model, self.configs)

    def table(self) -> str:
        """Markdown: each layer's choice, then every (layer, format) measured."""
        timed = self.predicted_seconds is not None
        lines = [
            f"Plan ({self.method}) under {self.budget!r}: {self.predicted_bytes:,} bytes "
            f"({self.predicted_ratio:.2f}x smaller than fp32's {self.fp32_bytes:,})"
            + (f", {self.predicted_seconds * 1e3:.3f} ms" if timed else "")
            + f"; score {self.sensitivity.base_score:.4g} in float, {self.predicted_score:.4g} predicted.",
            "",
            "| layer | shape (N x K) | format | bytes | penalty |",
            "|---|---|---|---:|---:|",
        ]
        for fqn, name in self.choices.items():
            o = self.options[fqn][name]
            shape = self.sensitivity.shapes.get(fqn, "")
            lines.append(f"| {fqn} | {shape} | {name} | {o.bytes:,} | {o.penalty:+.3g} |")
        names = list(dict.fromkeys(n for opts in self.options.values() for n in opts))
        lines += ["", f"Penalty (bytes{', ms' if timed else ''}) of each layer alone in each format:", ""]
        lines += ["| layer | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for fqn, opts in self.options.items():
            cells = []
            for n in names:
                o = opts.get(n)
                time = f", {o.seconds * 1e3:.3f}" if o is not None and o.seconds is not None else ""
                cells.append("n/a" if o is None else f"{o.penalty:+.3g} ({o.bytes:,}{time})")
            lines.append(f"| {fqn} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "choices": dict(self.choices),
            "budget": repr(self.budget),
            "limit": self.limit,
            "method": self.method,
            "fp32_bytes": self.fp32_bytes,
            "predicted_bytes": self.predicted_bytes,
            "predicted_ratio": self.predicted_ratio,
            "predicted_seconds": self.predicted_seconds,
            "base_score": self.sensitivity.base_score,
            "predicted_score": self.predicted_score,
            "options": {f: {n: vars(o) for n, o in opts.items()} for f, opts in self.options.items()},
        }


def resolve_candidates(candidates: Sequence[str | tuple[str, WeightConfig]] | None) -> list[tuple[str, WeightConfig]]:
    """Names from :data:`FORMATS` or (name, config) pairs, as (name, config) pairs."""
    if candidates is None:
        return list(DEFAULT_CANDIDATES)
    out: list[tuple[str, WeightConfig]] = []
    for item in candidates:
        if isinstance(item, str):
            if item not in FORMATS:
                raise ValueError(f"candidates: unknown format {item!r}; known: {sorted(FORMATS)}")
            item = (item, FORMATS[item])
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"candidates: expected format names or (name, config) pairs, got {item!r}")
        if not isinstance(item[1], WeightConfig):
            raise TypeError(f"candidates[{item[0]!r}]: expected a quantization config (WeightConfig), got {item[1]!r}")
        if item[0] == FLOAT or item[0] in dict(out):
            raise ValueError(f"candidates: the name {item[0]!r} is reserved or appears twice")
        out.append(item)
    if not out:
        raise ValueError("candidates: expected at least one format")
    return out


def fp32_bytes(model: nn.Module) -> int:
    """The model's tensors with every float element at 4 bytes (the fp32 file's payload)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * (4 if t.is_floating_point() else t.element_size())
    return total


def _layer_inputs(model: nn.Module, names: list[str], example_input: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each named layer sees in ``model(example_input)``."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, args: tuple) -> None:  # a pre-hook returning None changes nothing
            seen.setdefault(name, args[0].detach())

        return hook

    hooks = [model.get_submodule(n).register_forward_pre_hook(keep(n)) for n in names]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in hooks:
            h.remove()
    missing = [n for n in names if n not in seen]
    if missing:
        raise ValueError(f"example_input: layers {missing} are not called by model(example_input)")
    return seen


def _score(eval_fn: Callable[[nn.Module], float], model: nn.Module, what: str) -> float:
    value = eval_fn(model)
    if isinstance(value, torch.Tensor):
        value = value.item()
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"eval_fn: expected a finite number for {what}, got {value!r}")
    return float(value)


def plan_bits(
    model: nn.Module,
    eval_fn: Callable[[nn.Module], float],
    budget: Budget,
    candidates: Sequence[str | tuple[str, WeightConfig]] | None = None,
    *,
    higher_is_better: bool = False,
    keep_float: bool = True,
    layers: Sequence[str] | None = None,
    method: str = "auto",
    resolution: float | None = None,
    progress: bool = True,
) -> BitPlan:
    """Choose a format per layer of ``model`` that meets ``budget`` with the least predicted
    penalty (module docstring). ``eval_fn(model) -> float`` is a loss (lower better) unless
    ``higher_is_better``; use a validation split, not the test split. ``layers``: the fqns to plan
    (default every Linear / Conv2d some candidate converts). ``model`` is left as it was.

    :func:`kl_to_float` on validation inputs is a good ``eval_fn`` (the goal script uses it). Each
    (layer, format) is converted first, so an unmeetable size budget raises before any eval_fn
    call; those quantized copies are held until their layer is measured (for the 13 defaults
    about 2x the fp32 model's bytes). ``len(layers) x len(candidates)`` eval_fn calls in all."""
    from tqdm.auto import tqdm

    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not callable(eval_fn):
        raise TypeError(f"eval_fn: expected a callable model -> float, got {eval_fn!r}")
    if not isinstance(budget, SizeBudget | LatencyBudget):
        raise TypeError(f"budget: expected SizeBudget(ratio=...|bytes=...) or LatencyBudget(...), got {budget!r}")
    pairs = resolve_candidates(candidates)
    modules = dict(model.named_modules())
    if layers is None:
        layers = [n for n, m in modules.items() if isinstance(conversion_source(m), nn.Module)]
    for n in layers:
        if n not in modules:
            raise ValueError(f"layers: {n!r} is not a module of the model (names are exact fqns)")

    # 1. every (layer, format) converted once: exact bytes, and a size budget checked before any eval
    plans = {name: config.plan(model) for name, config in pairs}
    converted: dict[str, dict[str, nn.Module]] = {}
    for fqn in tqdm(layers, desc="plan_bits: convert", disable=not progress, leave=False):
        news = {name: config.convert_module(modules[fqn], fqn, plans[name]) for name, config in pairs}
        news = {name: new for name, new in news.items() if isinstance(new, nn.Module)}  # not None / Skip
        if news:
            converted[fqn] = news
    if not converted:
        raise ValueError(f"layers: no layer of the model can be converted by the candidates {[n for n, _ in pairs]}")
    full = fp32_bytes(model)
    fixed_bytes = memory_bytes(model) - sum(memory_bytes(modules[f]) for f in converted)
    floats = {f: memory_bytes(modules[f]) for f in converted} if keep_float else {}
    smallest = fixed_bytes + sum(
        min([*(memory_bytes(m) for m in news.values()), *([floats[f]] if keep_float else [])])
        for f, news in converted.items()
    )
    if isinstance(budget, SizeBudget) and smallest > budget.limit(full):
        raise ValueError(
            f"budget: {budget!r} (limit {budget.limit(full):,} bytes) cannot be met: the smallest achievable size is "
            f"{smallest:,} bytes ({full / smallest:.2f}x smaller than fp32's {full:,}) with these candidates"
        )

    # 2. sensitivity: one layer at a time in each format, the rest in float
    base = _score(eval_fn, model, "the float model")
    timed = isinstance(budget, LatencyBudget)
    inputs = _layer_inputs(model, list(converted), budget.example_input) if timed else {}
    options: dict[str, dict[str, Option]] = {}
    shapes: dict[str, str] = {}
    float_seconds: dict[str, float] = {}
    total = sum(len(news) for news in converted.values())
    bar = tqdm(total=total, desc="plan_bits: layer x format", disable=not progress, leave=False)
    for fqn, news in converted.items():
        original = modules[fqn]
        weight = getattr(original, "weight", None)
        if isinstance(weight, torch.Tensor):
            shapes[fqn] = f"{weight.shape[0]} x {weight[0].numel()}"
        seconds = float_seconds[fqn] = budget.measure_fn(original, inputs[fqn]) if timed else None
        options[fqn] = {FLOAT: Option(floats[fqn], base, 0.0, seconds)} if keep_float else {}
        for name, new in news.items():
            replace_submodule(model, fqn, new)
            try:
                score = _score(eval_fn, model, f"{fqn!r} in {name}")
                seconds = budget.measure_fn(new, inputs[fqn]) if timed else None
            finally:
                replace_submodule(model, fqn, original)
            penalty = base - score if higher_is_better else score - base
            options[fqn][name] = Option(memory_bytes(new), score, penalty, seconds)
            bar.update(1)
        converted[fqn] = {}  # free this layer's quantized copies
    bar.close()

    fixed_seconds = None
    if timed:
        whole = budget.measure_fn(model, budget.example_input)
        fixed_seconds = max(0.0, whole - sum(float_seconds.values()))
    sensitivity = Sensitivity(options, dict(pairs), full, fixed_bytes, fixed_seconds, base, higher_is_better, shapes)
    return sensitivity.allocate(budget, method=method, resolution=resolution)


def kl_to_float(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 512) -> Callable[[nn.Module], float]:
    """An ``eval_fn``: KL(float ‖ quantized) of the softmax outputs on ``inputs`` (validation
    images), the float outputs taken from ``model`` now. Needs no labels, is 0 for the float model
    and adds up over layers to first order, so one-layer-at-a-time penalties predict a plan's;
    cross-entropy against labels works too, but on a small validation split its per-layer
    differences sit at the split's noise level (some come out negative)."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs: expected a tensor of model inputs, got {type(inputs).__name__}")

    def logits(m: nn.Module) -> torch.Tensor:
        was_training = m.training
        m.eval()
        with torch.no_grad():
            out = torch.cat([m(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])
        m.train(was_training)
        return torch.log_softmax(out.float(), dim=-1)

    reference = logits(model)

    def kl(m: nn.Module) -> float:
        return torch.nn.functional.kl_div(logits(m), reference, log_target=True, reduction="batchmean").item()

    return kl


def evaluate_plan(model: nn.Module, plan: BitPlan, eval_fn: Callable[[nn.Module], float]) -> float:
    """eval_fn of a quantized copy of ``model`` (the plan applied; ``model`` untouched)."""
    quantized = plan.apply(copy.deepcopy(model)).model
    return _score(eval_fn, quantized, "the planned model")

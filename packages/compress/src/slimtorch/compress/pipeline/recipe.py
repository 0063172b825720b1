"""Declarative compression recipes (TOML, read with the standard library's ``tomllib``).

    name = "deep-compression"
    coder = "huffman"                  # entropy coder of the written file: ans | huffman | zstd | raw

    [[step]]
    prune = {method = "magnitude", sparsity = 0.92, scope = "global", iterations = 3, retrain_epochs = 4}
    [[step]]
    share = {linear_bits = 5, conv_bits = 7, retrain_epochs = 3}      # k-means weight sharing + centroid retraining
    [[step]]
    quantize = {format = "int4", group_size = 128}
    [[step]]
    prune = {method = "l1_filter", ratio = 0.5}                        # structured: channels removed
    [[step]]
    convert = {name = "block-circulant-b8"}                            # any conversion in core's registry
    [[step]]
    distill = {teacher = "baseline", T = 4, alpha = 0.9, epochs = 5}   # "baseline": the model as the run began
    [[step]]
    finetune = {epochs = 2, lr = 5e-4}

Steps run in order, in any order of kinds. Every step goes through core's conversion walk
(pruning, sharing, quantizing, converting) or trains the model (finetune, distill, retraining), and
adds a :class:`~slimtorch.core.conversions.ConversionReport` to the run's report. Pending pruning
masks are baked in (``finalize_``) before a step that converts layers. A bad key or value is
rejected before anything runs, naming its path: ``step[1].quantize.group_size: expected one of
(32, 64, 128), got 100``.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from slimtorch.core.conversions import ConversionReport
from slimtorch.core.model_stats import memory_bytes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CODERS = ("ans", "huffman", "zstd", "raw")
QUANT_FORMATS = ("int8", "int4", "w8a8", "binary", "ternary", "codebook")


class RecipeError(ValueError):
    """A recipe key or value that is wrong, with its path (``step[0].prune.sparsity: ...``)."""


# ----------------------------------------------------------------------------- schema


def _number(lo: float, hi: float, *, integer: bool = False, lo_open: bool = False, hi_open: bool = False):
    kind = "an int" if integer else "a number"
    lo_b, hi_b = "(" if lo_open else "[", ")" if hi_open else "]"

    def check(path: str, v: Any) -> Any:
        ok_type = isinstance(v, int) if integer else isinstance(v, int | float)
        if isinstance(v, bool) or not ok_type:
            raise RecipeError(f"{path}: expected {kind} in {lo_b}{lo}, {hi}{hi_b}, got {v!r}")
        if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
            raise RecipeError(f"{path}: expected {kind} in {lo_b}{lo}, {hi}{hi_b}, got {v!r}")
        return v

    return check


def _choice(*options: Any):
    def check(path: str, v: Any) -> Any:
        if isinstance(v, bool) or v not in options:
            raise RecipeError(f"{path}: expected one of {', '.join(map(str, options))}, got {v!r}")
        return v

    return check


def _string(path: str, v: Any) -> Any:
    if not isinstance(v, str) or not v:
        raise RecipeError(f"{path}: expected a non-empty string, got {v!r}")
    return v


EPOCHS = _number(0, 1000, integer=True)
LR = _number(0, 1, lo_open=True)

SCHEMA: dict[str, dict[str, tuple[Callable, Any]]] = {
    "prune": {
        "method": (_choice("magnitude", "random", "l1_filter", "l2_filter"), "magnitude"),
        "sparsity": (_number(0, 1, hi_open=True), 0.5),
        "ratio": (_number(0, 1, hi_open=True), 0.5),
        "scope": (_choice("layer", "global"), "global"),
        "iterations": (_number(1, 20, integer=True), 1),
        "retrain_epochs": (EPOCHS, 0),
        "lr": (LR, 1e-3),
        "round_to": (_number(1, 64, integer=True), 1),
    },
    "share": {
        "linear_bits": (_number(1, 7, integer=True), 5),
        "conv_bits": (_number(1, 7, integer=True), 7),
        "retrain_epochs": (EPOCHS, 0),
        "lr": (LR, 1e-4),
    },
    "quantize": {
        "format": (_choice(*QUANT_FORMATS), None),
        "group_size": (_choice(32, 64, 128), 128),
        "bits": (_choice(2, 3, 4, 5, 6, 7, 8), 4),
    },
    "convert": {"name": (_string, None)},
    "distill": {
        "teacher": (_string, "baseline"),
        "T": (_number(0, 100, lo_open=True), 4.0),
        "alpha": (_number(0, 1), 0.9),
        "epochs": (EPOCHS, 5),
        "lr": (LR, 1e-3),
    },
    "finetune": {"epochs": (EPOCHS, 1), "lr": (LR, 1e-3)},
}
TOP_LEVEL = {"name": _string, "coder": _choice(*CODERS), "seed": _number(0, 2**31, integer=True), "step": None}


@dataclass(frozen=True)
class Step:
    kind: str
    options: dict[str, Any]

    def describe(self) -> str:
        return f"{self.kind}(" + ", ".join(f"{k}={v!r}" for k, v in self.options.items()) + ")"


@dataclass(frozen=True)
class Recipe:
    steps: tuple[Step, ...]
    name: str = "recipe"
    coder: str = "ans"
    seed: int = 0


def parse_recipe(data: dict[str, Any]) -> Recipe:
    """Validate a recipe's parsed TOML (module docstring); every error names the key's path."""
    if not isinstance(data, dict):
        raise RecipeError(f"recipe: expected a table, got {type(data).__name__}")
    for key in data:
        if key not in TOP_LEVEL:
            raise RecipeError(f"{key}: unknown key; expected one of {', '.join(TOP_LEVEL)}")
    top = {k: TOP_LEVEL[k](k, v) for k, v in data.items() if k != "step"}
    raw_steps = data.get("step")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise RecipeError("step: expected at least one [[step]] table")
    steps = []
    for i, raw in enumerate(raw_steps):
        where = f"step[{i}]"
        if not isinstance(raw, dict) or len(raw) != 1:
            got = sorted(raw) if isinstance(raw, dict) else raw
            raise RecipeError(f"{where}: expected exactly one of {', '.join(SCHEMA)}, got {got!r}")
        ((kind, options),) = raw.items()
        if kind not in SCHEMA:
            raise RecipeError(f"{where}.{kind}: unknown step; expected one of {', '.join(SCHEMA)}")
        if not isinstance(options, dict):
            raise RecipeError(f"{where}.{kind}: expected a table of options, got {options!r}")
        schema = SCHEMA[kind]
        values = {}
        for key, value in options.items():
            if key not in schema:
                raise RecipeError(f"{where}.{kind}.{key}: unknown key; expected one of {', '.join(schema)}")
            values[key] = schema[key][0](f"{where}.{kind}.{key}", value)
        for key, (_, default) in schema.items():
            if key not in values:
                if default is None:
                    raise RecipeError(f"{where}.{kind}.{key}: required")
                values[key] = default
        steps.append(Step(kind, values))
    return Recipe(tuple(steps), **top)


def load_recipe(source: str | Path) -> Recipe:
    """A recipe from a TOML file path or TOML text."""
    text = Path(source).read_text() if isinstance(source, Path) or Path(str(source)).is_file() else str(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"recipe: not valid TOML: {err}") from err
    return parse_recipe(data)


# ----------------------------------------------------------------------------- running


@dataclass
class RunResult:
    model: nn.Module
    report: ConversionReport
    steps: list[dict[str, Any]] = field(default_factory=list)


def _finalize_masks(model: nn.Module) -> ConversionReport | None:
    from slimtorch.compress.prune import finalize_, masks_of

    return finalize_(model) if masks_of(model) else None


def _training_report(name: str, model: nn.Module, before: int) -> ConversionReport:
    return ConversionReport(name, model, {}, {}, before, memory_bytes(model))


def run_recipe(
    recipe: Recipe,
    model: nn.Module,
    task,
    *,
    teachers: dict[str, nn.Module] | None = None,
    progress: bool = True,
    evaluate: Callable[[nn.Module], float] | None = None,
) -> RunResult:
    """Run ``recipe`` on ``model`` (modified in place) with ``task``'s training data."""
    import torch

    from slimtorch.compress import tasks as tasks_mod

    torch.manual_seed(recipe.seed)
    baseline = copy.deepcopy(model).eval()
    teachers = {"baseline": baseline, **(teachers or {})}
    report: ConversionReport | None = None
    log: list[dict[str, Any]] = []

    def add(r: ConversionReport | None) -> None:
        nonlocal report, model
        if r is None:
            return
        model = r.model if r.model is not None else model
        report = r if report is None else report + r

    for i, step in enumerate(recipe.steps):
        o = step.options
        if step.kind != "prune" and step.kind not in ("finetune", "distill"):
            add(_finalize_masks(model))
        if step.kind == "prune":
            add(_prune(model, task, o, recipe.seed, progress, i))
        elif step.kind == "share":
            from slimtorch.compress.pipeline.sharing import WeightSharingConfig, share_weights_, to_codebook_

            add(share_weights_(model, WeightSharingConfig(o["linear_bits"], o["conv_bits"])))
            if o["retrain_epochs"]:
                tasks_mod.train(
                    model,
                    task,
                    o["retrain_epochs"],
                    lr=o["lr"],
                    seed=recipe.seed + i,
                    progress=progress,
                    desc=f"step {i}: retrain centroids",
                )
            add(to_codebook_(model))
        elif step.kind == "quantize":
            add(_quantize(model, o))
        elif step.kind == "convert":
            from slimtorch.core.registry import get_conversion

            add(get_conversion(o["name"]).convert(model.eval()))
        elif step.kind in ("finetune", "distill") and not any(p.requires_grad for p in model.parameters()):
            skip = ConversionReport(step.describe(), model, {}, {"": "no trainable parameters left (all quantized)"})
            add(dataclasses.replace(skip, bytes_before=memory_bytes(model), bytes_after=memory_bytes(model)))
        elif step.kind == "finetune":
            before = memory_bytes(model)
            tasks_mod.train(
                model,
                task,
                o["epochs"],
                lr=o["lr"],
                seed=recipe.seed + i,
                progress=progress,
                desc=f"step {i}: finetune",
            )
            add(_training_report(f"finetune({o['epochs']} epochs)", model, before))
        elif step.kind == "distill":
            from slimtorch.compress.distill import DistillConfig, Distiller

            if o["teacher"] not in teachers:
                raise RecipeError(
                    f"step[{i}].distill.teacher: expected one of {sorted(teachers)}, got {o['teacher']!r}"
                )
            before = memory_bytes(model)
            cfg = DistillConfig(
                temperature=o["T"], alpha=o["alpha"], epochs=o["epochs"], lr=o["lr"], seed=recipe.seed + i
            )
            Distiller(model, teachers[o["teacher"]], cfg).fit(task, progress=progress)
            add(_training_report(f"distill(teacher={o['teacher']}, T={o['T']})", model, before))
        entry = {"step": step.describe()}
        if evaluate is not None:
            entry["top1"] = evaluate(model)
        log.append(entry)
    add(_finalize_masks(model))
    return RunResult(model.eval(), report, log)


def _prune(model: nn.Module, task, o: dict, seed: int, progress: bool, i: int) -> ConversionReport:
    from slimtorch.compress import tasks as tasks_mod

    if o["method"] in ("l1_filter", "l2_filter"):
        try:
            from slimtorch.compress.prune.pruner import PruneConfig, prune_channels_
        except ImportError as err:
            raise RecipeError(f"step[{i}].prune.method: {o['method']!r} needs the structured pruner: {err}") from err
        _finalize_masks(model)
        last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1:]
        cfg = PruneConfig(importance=o["method"][:2], ratio=o["ratio"], round_to=o["round_to"])
        report = prune_channels_(model, cfg, example_inputs=task.x_train[:2], ignored_layers=last)
        if o["retrain_epochs"]:
            tasks_mod.train(
                report.model,
                task,
                o["retrain_epochs"],
                lr=o["lr"],
                seed=seed + i,
                progress=progress,
                desc=f"step {i}: retrain",
            )
        return report
    from slimtorch.compress.prune import UnstructuredConfig, prune_unstructured_

    report = None
    n = o["iterations"]
    for k in range(1, n + 1):  # iterative pruning (Han 2015): the sparsity rises to its target in n rounds
        sparsity = o["sparsity"] * k / n
        r = prune_unstructured_(model, UnstructuredConfig(method=o["method"], sparsity=sparsity, scope=o["scope"]))
        report = r if report is None else report + r
        if o["retrain_epochs"]:
            tasks_mod.train(
                model,
                task,
                o["retrain_epochs"],
                lr=o["lr"],
                seed=seed + 100 * i + k,
                progress=progress,
                desc=f"step {i}: retrain {k}/{n}",
            )
    return report


def _quantize(model: nn.Module, o: dict) -> ConversionReport:
    try:
        import slimtorch.quant as q
    except ImportError as err:
        raise RecipeError(f"quantize: needs slimtorch-quant ({err})") from err
    config = {
        "int8": lambda: q.Int8WeightOnlyConfig(),
        "w8a8": lambda: q.Int8DynamicActivationInt8WeightConfig(),
        "int4": lambda: q.Int4WeightOnlyConfig(group_size=o["group_size"]),
        "binary": lambda: q.BinaryWeightConfig(),
        "ternary": lambda: q.TernaryWeightConfig(),
        "codebook": lambda: q.CodebookWeightConfig(bits=o["bits"]),
    }[o["format"]]()
    return q.quantize_(model, config)

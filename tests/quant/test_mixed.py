"""Per-layer mixed precision: quantize_ with a {fqn: config} map, the knapsack, plan_bits.

Everything here runs the layers' CPU references (the kernels have their own tests): planning
calls the model once per (layer, format), which the Triton interpreter would make slow."""

import copy
import itertools
import random

import pytest
import torch
from torch import nn

from slimtorch.core import container, reference_only
from slimtorch.core.model_stats import memory_bytes
from slimtorch.core.testing import randn
from slimtorch.quant import api, layers, mixed

MAP = {
    "0": api.Int8WeightOnlyConfig(),
    "3": api.Int4WeightOnlyConfig(group_size=32),
    "5": api.CodebookWeightConfig(bits=3),
}


@pytest.fixture(autouse=True)
def _references():
    with reference_only():
        yield


def _model(seed: int = 0) -> nn.Sequential:
    """conv 3->5 (3x3) -> ReLU -> flatten -> [unmapped conv-free gap] -> 45 -> 37 -> 7 (odd sizes)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 5, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(45, 37),
        nn.ReLU(),
        nn.Linear(37, 7),
        nn.ReLU(),
        nn.Linear(7, 3),
    ).eval()


def _x(seed: int = 1) -> torch.Tensor:
    return randn((9, 3, 5, 5), seed=seed)


def test_quantize_map_gives_each_layer_its_config():
    model, x = _model(), _x()
    report = api.quantize_(model, dict(MAP))
    assert set(report.converted) == set(MAP) and report.model is model
    assert report.skipped == {"7": api.LayerwiseConfig.NOT_IN_MAP}  # left in float, and the report says so
    assert type(model[7]) is nn.Linear and type(model[0].gemm) is layers.Int8WeightOnlyLinear
    assert isinstance(model[3], layers.Int4WeightOnlyLinear) and isinstance(model[5], layers.CodebookLinear)
    assert report.bytes_after == memory_bytes(model) < report.bytes_before
    # each layer exactly as its config alone makes it (filter_fn picking that one layer)
    alone = _model()
    for fqn, config in MAP.items():
        api.quantize_(alone, config, lambda m, name, fqn=fqn: name == fqn)
    for key, value in alone.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(model(x), alone(x))


def test_quantize_map_runs_from_the_compressed_file(tmp_path):
    model, x = _model(), _x()
    api.quantize_(model, dict(MAP))
    container.save_compressed(model, tmp_path / "mixed.slim.safetensors", coder="raw")
    loaded = container.load_compressed(tmp_path / "mixed.slim.safetensors", _model(seed=3))
    assert isinstance(loaded[5], layers.CodebookLinear) and loaded[5].bits == 3
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_quantize_map_errors():
    with pytest.raises(ValueError, match=r"configs: 'fc1' is not a module of the model .*\['0', '3', '5', '7'\]"):
        api.quantize_(_model(), {"fc1": api.Int8WeightOnlyConfig()})
    with pytest.raises(ValueError, match=r"configs\['1'\]: expected a Linear or Conv2d layer, got ReLU"):
        api.quantize_(_model(), {"1": api.Int8WeightOnlyConfig()})
    with pytest.raises(TypeError, match=r"configs\['3'\]: expected a quantization config .*got 'int8'"):
        api.quantize_(_model(), {"3": "int8"})
    depthwise = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.Linear(4, 3))
    report = api.quantize_(depthwise, {"0": api.Int8WeightOnlyConfig(), "2": api.Int8WeightOnlyConfig()})
    assert list(report.converted) == ["2"] and "groups=4" in report.skipped["0"]  # the config's own reason
    model = _model()
    with pytest.raises(ValueError, match="is not a module"):  # checked before anything changes
        api.quantize_(model, {"3": api.Int8WeightOnlyConfig(), "9": api.Int8WeightOnlyConfig()})
    assert type(model[3]) is nn.Linear


def _brute_force(costs, penalties, capacity):
    best = None
    for combo in itertools.product(*[range(len(c)) for c in costs]):
        if sum(costs[g][o] for g, o in enumerate(combo)) <= capacity:
            value = sum(penalties[g][o] for g, o in enumerate(combo))
            best = value if best is None else min(best, value)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_knapsack_dp_is_optimal_and_greedy_feasible(seed):
    rng = random.Random(seed)
    groups = rng.randint(2, 5)
    costs = [[rng.randint(1, 40) for _ in range(rng.randint(1, 5))] for _ in range(groups)]
    penalties = [[rng.uniform(-0.1, 1.0) for _ in group] for group in costs]
    cheapest, dearest = sum(map(min, costs)), sum(map(max, costs))
    capacity = rng.randint(cheapest, dearest)
    optimum = _brute_force(costs, penalties, capacity)
    for method in ("dp", "greedy"):
        picked, used = mixed.solve_knapsack(costs, penalties, capacity, method=method)
        assert used == method and sum(costs[g][o] for g, o in enumerate(picked)) <= capacity
        value = sum(penalties[g][o] for g, o in enumerate(picked))
        if method == "dp":
            assert value == pytest.approx(optimum, abs=1e-12)
        else:
            assert value >= optimum - 1e-12
    # coarse units round costs up: still feasible, falls back to greedy past max_cells
    picked, _ = mixed.solve_knapsack(costs, penalties, capacity, resolution=7.0)
    assert sum(costs[g][o] for g, o in enumerate(picked)) <= capacity
    assert mixed.solve_knapsack(costs, penalties, capacity, max_cells=1)[1] == "greedy"
    with pytest.raises(ValueError, match=r"capacity: .* is below the cheapest choice"):
        mixed.solve_knapsack(costs, penalties, cheapest - 1)


# names from FORMATS and a pair of our own (a codebook with fewer k-means steps keeps the test fast)
CANDIDATES = ["int8", "int4-g32", "int4-g64", "ternary", "binary", ("cb5", api.CodebookWeightConfig(5, iterations=8))]


def _kl_plan(budget, **kwargs):
    model, x = _model(), _x()
    eval_fn = mixed.kl_to_float(model, x)
    return model, x, mixed.plan_bits(model, eval_fn, budget, CANDIDATES, progress=False, **kwargs)


def test_plan_bits_sizes_are_the_packed_bytes_and_the_plan_is_optimal(tmp_path):
    model, x, plan = _kl_plan(mixed.SizeBudget(ratio=5.0))
    before = copy.deepcopy(model.state_dict())
    assert set(plan.choices) == {"0", "3", "5", "7"} and plan.method == "dp"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is left as it was
    assert plan.predicted_bytes <= plan.fp32_bytes / 5.0 and plan.fp32_bytes == memory_bytes(model)
    # every option's bytes: the buffers of that layer quantized alone, and its score measured alone
    eval_fn = mixed.kl_to_float(model, x)
    for fqn in ("3", "7"):
        for name, config in (("int8", api.Int8WeightOnlyConfig()), ("cb5", CANDIDATES[-1][1])):
            alone = api.quantize_(copy.deepcopy(model), {fqn: config}).model
            assert plan.options[fqn][name].bytes == memory_bytes(alone.get_submodule(fqn))
            with reference_only():
                assert plan.options[fqn][name].score == pytest.approx(eval_fn(alone), rel=1e-6, abs=1e-12)
    # the plan applied: its bytes are what was predicted, in memory and in the (raw) compressed file
    quantized = plan.apply(copy.deepcopy(model)).model
    assert memory_bytes(quantized) == plan.predicted_bytes
    saved = container.save_compressed(quantized, tmp_path / "plan.slim.safetensors", coder="raw")
    assert sum(saved.tensor_bytes.values()) == plan.predicted_bytes
    # optimal over every combination of the measured options
    opts = list(plan.options.values())
    best = min(
        (sum(o[n].penalty for o, n in zip(opts, combo, strict=True)), combo)
        for combo in itertools.product(*[list(o) for o in opts])
        if sum(o[n].bytes for o, n in zip(opts, combo, strict=True)) <= plan.limit
    )
    assert sum(o.penalty for o in map(lambda f: plan.options[f][plan.choices[f]], plan.choices)) == pytest.approx(
        best[0], abs=1e-12
    )
    assert "| layer |" in plan.table() and plan.to_dict()["predicted_bytes"] == plan.predicted_bytes
    # another budget from the same measurements; a looser one never predicts worse
    looser = plan.sensitivity.allocate(mixed.SizeBudget(ratio=2.0))
    assert looser.predicted_score <= plan.predicted_score and looser.predicted_bytes <= plan.fp32_bytes / 2


def test_plan_bits_budget_and_format_errors():
    model, x = _model(), _x()
    eval_fn = mixed.kl_to_float(model, x)
    names = ["int8", "binary"]
    smallest = sum(  # binary everywhere, biases and scales included
        memory_bytes(api.quantize_(copy.deepcopy(model), api.BinaryWeightConfig()).model.get_submodule(f))
        for f in ("0", "3", "5", "7")
    )
    with pytest.raises(ValueError, match=rf"cannot be met: the smallest achievable size is {smallest:,} bytes"):
        mixed.plan_bits(model, eval_fn, mixed.SizeBudget(ratio=1000.0), names, progress=False)
    with pytest.raises(ValueError, match=rf"cannot be met: the smallest achievable size is {smallest:,} bytes"):
        mixed.plan_bits(model, eval_fn, mixed.SizeBudget(bytes=smallest - 1), names, progress=False)
    plan = mixed.plan_bits(model, eval_fn, mixed.SizeBudget(bytes=smallest), names, progress=False)
    assert set(plan.choices.values()) == {"binary"} and plan.predicted_bytes == smallest
    with pytest.raises(ValueError, match=r"candidates: unknown format 'int3'; known: \["):
        mixed.plan_bits(model, eval_fn, mixed.SizeBudget(ratio=4.0), ["int8", "int3"], progress=False)
    with pytest.raises(TypeError, match=r"candidates\['mine'\]: expected a quantization config"):
        mixed.plan_bits(model, eval_fn, mixed.SizeBudget(ratio=4.0), [("mine", 4)], progress=False)
    with pytest.raises(ValueError, match="SizeBudget: expected exactly one of ratio= or bytes="):
        mixed.SizeBudget(ratio=4.0, bytes=100)
    with pytest.raises(ValueError, match="ratio: expected a positive number"):
        mixed.SizeBudget(ratio=-1.0)
    with pytest.raises(ValueError, match="eval_fn: expected a finite number"):
        mixed.plan_bits(model, lambda m: float("nan"), mixed.SizeBudget(ratio=4.0), names, progress=False)


def test_plan_bits_latency_budget_and_accuracy_scores():
    """A deterministic measure_fn (seconds = 1 ns per byte) stands in for the timer."""
    model, x = _model(), _x()

    def measure(layer, inp):
        return memory_bytes(layer) * 1e-9

    budget = mixed.LatencyBudget(memory_bytes(model) * 1e-9 / 3, x, measure)
    agree = mixed.kl_to_float(model, x)
    plan = mixed.plan_bits(
        model, lambda m: -agree(m), budget, ["int8", "ternary", CANDIDATES[-1]], progress=False, higher_is_better=True
    )
    assert plan.predicted_seconds <= budget.seconds + 1e-12
    assert plan.predicted_seconds == pytest.approx(plan.predicted_bytes * 1e-9)
    assert plan.predicted_score <= plan.sensitivity.base_score
    assert repr(budget).startswith("LatencyBudget(seconds=") and "tensor" not in repr(budget)
    assert 0 < mixed.measure_seconds(nn.Linear(13, 5), randn((3, 13), seed=2)) < 1  # the default timer
    with pytest.raises(ValueError, match="cannot be met: the fastest achievable is"):
        mixed.plan_bits(model, agree, mixed.LatencyBudget(1e-12, x, measure), ["int8"], progress=False)
    with pytest.raises(ValueError, match="without times"):
        mixed.plan_bits(model, agree, mixed.SizeBudget(ratio=2.0), ["int8"], progress=False).sensitivity.allocate(
            budget
        )

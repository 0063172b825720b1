"""Sensitivity analysis, per-layer ratios for a budget and NetAdapt on a tiny CNN, checked against
the pruner's own per-layer ratios and an independent MAC count."""

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from slimtorch.compress.prune import PruneConfig, Pruner, keep_count, netadapt, ratios_for_budget, sensitivity
from slimtorch.compress.prune.sensitivity import ratios_at
from slimtorch.core.metrics import rel_error
from slimtorch.core.model_stats import count_parameters

LAYERS = ("0", "3", "6")  # the producing convs of the three channel groups


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 13, 3, padding=1),
        nn.BatchNorm2d(13),
        nn.ReLU(),
        nn.Conv2d(13, 10, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(10, 4),
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
                m.bias.uniform_(-0.2, 0.4)
    return model.eval()


@pytest.fixture(scope="module")
def setup():
    model = tiny_cnn()
    x = torch.randn(1, 3, 9, 11)
    probe = torch.randn(6, 3, 9, 11, generator=torch.Generator().manual_seed(1))  # fixed eval inputs
    with torch.no_grad():
        ref = model(probe)

    def agreement(m):  # 1 − relative output error on the probe inputs
        with torch.no_grad():
            return 1.0 - rel_error(m(probe), ref)

    return model, x, agreement


def count_macs(model, x):
    """By hand for this chain: stride-1 'same' convs on the 9×11 input, then the classifier."""
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    h, w = x.shape[2:]
    conv = sum(h * w * c.out_channels * c.in_channels * c.kernel_size[0] * c.kernel_size[1] for c in convs)
    return x.shape[0] * (conv + model[-1].in_features * model[-1].out_features)


def prune_layer(model, x, layer, ratio):
    """The pruner's own per-layer-ratio path (independent of sensitivity's targeted criterion)."""
    config = PruneConfig(importance="l1", ratio={layer: ratio, "*": 0.0}, round_to=1)
    return Pruner(copy.deepcopy(model), x, config).step()


@pytest.fixture(scope="module")
def report(setup):
    model, x, agreement = setup
    return sensitivity(model, x, agreement, ratios=(0.25, 0.5), progress=False)


def test_sensitivity_rows_match_pruning_each_layer(setup, report, tmp_path):
    model, x, agreement = setup
    assert report.baseline.score == pytest.approx(1.0)
    assert [r.layer for r in report.rows] == [layer for layer in LAYERS for _ in range(2)]
    widths = {"0": 8, "3": 13, "6": 10}
    for row in report.rows:
        assert row.kept == keep_count(widths[row.layer], row.ratio, 1)
    for row in (report.rows[1], report.rows[4]):
        pruned = prune_layer(model, x, row.layer, row.ratio)
        assert row.score == pytest.approx(agreement(pruned), rel=1e-6)
        assert row.params == count_parameters(pruned) and row.macs == count_macs(pruned, x)
    for rows in report.curves().values():  # more pruning, fewer parameters
        assert all(a.params > b.params for a, b in itertools.pairwise(rows))
    png = report.plot(tmp_path / "sensitivity.png")
    assert png.stat().st_size > 1000 and "| 3 | 0.50 |" in report.markdown()


def test_ratios_for_budget_meet_it_with_the_smallest_tolerance(setup, report):
    model, x, agreement = setup
    macs0 = count_macs(model, x)
    result = ratios_for_budget(model, x, report, budget=0.55, metric="macs", eval_fn=agreement)
    assert result.met and result.ratios == ratios_at(report, result.tolerance)
    pruned = result.model
    assert count_macs(pruned, x) == result.cost <= 0.55 * macs0
    assert result.score == pytest.approx(agreement(pruned))
    assert count_macs(model, x) == macs0  # the model itself is untouched
    # the next smaller tolerance among the measured drops misses the budget
    drops = sorted({0.0} | {report.baseline.score - r.score for r in report.rows})
    smaller = [d for d in drops if d < result.tolerance]
    assert smaller, "the budget is met with no pruning at all: the test would not test anything"
    ratios = ratios_at(report, smaller[-1])
    config = PruneConfig(importance="l1", ratio={**ratios, "*": 0.0}, round_to=1)
    assert count_macs(Pruner(copy.deepcopy(model), x, config).step(), x) > 0.55 * macs0


def test_netadapt_is_greedy_and_meets_the_budget(setup):
    model, x, agreement = setup
    macs0 = count_macs(model, x)
    result = netadapt(model, x, agreement, budget=0.7, metric="macs", step=0.25, progress=False)
    assert result.met and count_macs(result.model, x) == result.cost <= 0.7 * macs0
    assert len(result.history) >= 2
    # iteration 0 by hand: each layer shrunk by round(0.25·width) channels, loss per MAC saved
    widths = {"0": 8, "3": 13, "6": 10}
    values = {}
    for layer, width in widths.items():
        n = max(1, round(0.25 * width))
        cand = prune_layer(model, x, layer, n / width)
        cost, score = count_macs(cand, x), agreement(cand)
        assert result.history[0].proposals[layer] == pytest.approx((cost, score), rel=1e-6)
        values[layer] = (1.0 - score) / (macs0 - cost)
    assert result.history[0].layer == min(values, key=values.get)
    assert result.history[0].loss_per_cost == pytest.approx(min(values.values()), rel=1e-6)
    for step in result.history:
        assert step.layer in widths and step.channels_after < step.channels_before
    for layer, ratio in result.ratios.items():  # widths left = what the history removed
        removed = sum(s.channels_before - s.channels_after for s in result.history if s.layer == layer)
        assert math.isclose(ratio, removed / widths[layer])


def test_netadapt_on_measured_latency(setup, tmp_path):
    """Latency on this (shared, noisy) CPU: a proposal that measures no faster is not taken; the
    search either reaches the budget or says why it stopped."""
    model, _, agreement = setup
    x = torch.randn(4, 3, 24, 24)
    result = netadapt(
        model, x, agreement, budget=0.9, metric="latency", step=0.25, max_iters=2, progress=False, rep_ms=10.0
    )
    assert result.cost0 > 0
    assert result.met == (result.cost <= result.target)
    assert result.stopped == ("budget met" if result.met else result.stopped)
    assert result.stopped in ("budget met", "max_iters", "no proposal saves cost")
    for step in result.history:
        assert step.cost < result.cost0 and all(cost > 0 for cost, _ in step.proposals.values())
    assert result.model(x).shape == (4, 4)
    assert result.plot(tmp_path / "netadapt.png").stat().st_size > 1000


def test_bad_arguments(setup):
    model, x, agreement = setup
    with pytest.raises(ValueError, match="budget"):
        netadapt(model, x, agreement, budget=1.0)
    with pytest.raises(ValueError, match="metric"):
        netadapt(model, x, agreement, budget=0.5, metric="flops")
    with pytest.raises(TypeError, match="eval_fn"):
        sensitivity(model, x, "accuracy")
    with pytest.raises(ValueError, match="ratios"):
        sensitivity(model, x, agreement, ratios=(0.5, 1.0))
    with pytest.raises(ValueError, match="step"):
        netadapt(model, x, agreement, budget=0.5, step=0.0)

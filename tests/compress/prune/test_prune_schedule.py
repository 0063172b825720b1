"""Gradual (Zhu & Gupta cubic) and iterative (Han) pruning schedules and lottery-ticket rewinding,
against hand-computed sparsities and weights."""

import itertools

import pytest
import torch
from torch import nn

from slimtorch.compress.prune import (
    GradualPruner,
    IterativeConfig,
    PruneSchedule,
    masks_of,
    prune_iteratively_,
)


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(9, 13), nn.ReLU(), nn.Linear(13, 5))


def test_cubic_schedule_hand_computed():
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n Δt))^3 with s_i = 0.1, s_f = 0.9, t0 = 10, n = 4, Δt = 5
    s = PruneSchedule(final_sparsity=0.9, initial_sparsity=0.1, steps=4, begin_step=10, frequency=5)
    expected = {0: 0.1, 10: 0.1, 15: 0.9 - 0.8 * 0.75**3, 20: 0.9 - 0.8 * 0.5**3, 25: 0.9 - 0.8 * 0.25**3, 30: 0.9}
    for t, value in expected.items():
        assert s.sparsity_at(t) == pytest.approx(value, abs=1e-15)
    assert s.sparsity_at(17) == pytest.approx(0.9 - 0.8 * (1 - 7 / 20) ** 3, abs=1e-15)
    assert s.sparsity_at(100) == 0.9
    assert [t for t in range(40) if s.is_prune_step(t)] == [10, 15, 20, 25, 30]
    linear = PruneSchedule(final_sparsity=0.8, steps=4, kind="linear")
    assert [linear.sparsity_at(t) for t in range(5)] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8], abs=1e-15)


def test_gradual_pruner_prunes_at_the_schedule_steps():
    model = _net()
    schedule = PruneSchedule(final_sparsity=0.75, steps=3, begin_step=2, frequency=2)
    pruner = GradualPruner(schedule, scope="layer")
    x, y = torch.randn(7, 9), torch.randint(0, 5, (7,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    removed = []
    for _ in range(9):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        pruner(model)
        masks = masks_of(model)
        removed.append(int((~masks["0"]).sum()) if masks else 0)
    # layer "0" has 117 weights; prunes at steps 2 (s=0: nothing), 4, 6, 8 to s_t
    expected_s = {4: 0.75 - 0.75 * (2 / 3) ** 3, 6: 0.75 - 0.75 * (1 / 3) ** 3, 8: 0.75}
    counts, current = [], 0
    for t in range(1, 10):
        if t in expected_s:
            current = round(expected_s[t] * 117)
        counts.append(current)
    assert removed == counts
    assert len(pruner.reports) == 3


def _train_fn(x, y, log):
    def train(model, round_, after_step):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            after_step(model)
        log.append(round_)

    return train


def test_iterative_reaches_each_round_sparsity_and_keeps_removed_removed():
    model = _net()
    x, y = torch.randn(11, 9), torch.randint(0, 5, (11,))
    log, seen = [], []
    config = IterativeConfig(schedule=PruneSchedule(final_sparsity=0.8, steps=3), scope="global")

    def on_round(r, sparsity, m):
        kept = torch.cat([k.flatten() for k in masks_of(m).values()])
        seen.append((r, sparsity, int((~kept).sum()), {n: k.clone() for n, k in masks_of(m).items()}))

    report = prune_iteratively_(model, config, _train_fn(x, y, log), on_round=on_round)
    assert log == [1, 2, 3]
    total = 9 * 13 + 13 * 5
    for r, sparsity, removed, _ in seen:
        assert sparsity == pytest.approx(0.8 - 0.8 * (1 - r / 3) ** 3)
        assert removed == round(sparsity * total)
    for (_, _, _, before), (_, _, _, after) in itertools.pairwise(seen):
        for name in before:
            assert not bool((after[name] & ~before[name]).any())
    assert set(report.converted) == {"0", "2"} and report.conversion.startswith("prune_iteratively_")


def test_lottery_ticket_rewinds_surviving_weights():
    torch.manual_seed(3)
    model = _net(1)
    x, y = torch.randn(11, 9), torch.randint(0, 5, (11,))
    snapshots = {}

    def train(m, round_, after_step):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(4):
            if round_ == 1:  # the weights the first retraining starts from
                snapshots.setdefault("start", {n: p.detach().clone() for n, p in m.named_parameters()})
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
            after_step(m)
            if round_ == 0:
                snapshots.setdefault("dense", []).append({n: p.detach().clone() for n, p in m.named_parameters()})

    config = IterativeConfig(
        schedule=PruneSchedule(final_sparsity=0.5, steps=2), scope="layer", rewind_step=2, train_dense=True
    )
    prune_iteratively_(model, config, train)
    step2 = snapshots["dense"][1]  # after optimizer step 2 of the dense training
    start = snapshots["start"]
    assert torch.equal(start["0.parametrizations.weight.original"], step2["0.weight"])
    assert torch.equal(start["2.bias"], step2["2.bias"])
    # rewinding to init (k = 0) without a dense run
    model = _net(2)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    starts = []

    def train0(m, round_, after_step):
        starts.append({n: p.detach().clone() for n, p in m.named_parameters()})

    prune_iteratively_(model, IterativeConfig(schedule=PruneSchedule(0.5, steps=1), rewind_step=0), train0)
    assert torch.equal(starts[0]["0.parametrizations.weight.original"], init["0.weight"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"final_sparsity": 1.0}, ValueError, "final_sparsity: expected .* \\[0, 1\\), got 1.0"),
        ({"final_sparsity": 0.5, "initial_sparsity": 0.6}, ValueError, "initial_sparsity: expected <="),
        ({"steps": 0}, ValueError, "steps: expected an int >= 1, got 0"),
        ({"frequency": 0}, ValueError, "frequency"),
        ({"kind": "quartic"}, ValueError, "kind"),
    ],
)
def test_bad_schedule_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        PruneSchedule(**kwargs)


def test_bad_iterative_arguments_raise():
    with pytest.raises(ValueError, match="rewind_step: 5 > 0 needs the dense training"):
        IterativeConfig(rewind_step=5)
    with pytest.raises(TypeError, match="config: expected an IterativeConfig"):
        prune_iteratively_(_net(), PruneSchedule(), lambda m, r, a: None)
    with pytest.raises(ValueError, match="rewind_step: 50, but the dense training took only 0 steps"):
        prune_iteratively_(_net(), IterativeConfig(rewind_step=50, train_dense=True), lambda m, r, a: None)

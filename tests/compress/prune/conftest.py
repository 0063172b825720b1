"""Shared check of the channel pruner: the pruned model equals the unpruned one when the removed
channels' outputs (after BN) were zero."""

import copy
import dataclasses

import pytest
import torch

from slimtorch.compress.prune import PruneConfig, prune_channels_
from slimtorch.core.model_stats import count_parameters


def zero_removed_(model, plan) -> int:
    """Zero every producer of a removed channel (filter rows + bias, BN γ and β, per-channel
    parameters), so removed channels carry zeros; returns how many channels were zeroed."""
    removed = plan.removed
    zeroed = 0
    with torch.no_grad():
        for name, record in plan.graph.records.items():
            slot = {"conv": "out", "shiftconv": "out", "linear": "out", "norm": "channels", "param": "channels"}.get(
                record.kind
            )
            if slot is None:
                continue
            rows = torch.isin(torch.from_numpy(record.slots[slot]), torch.from_numpy(removed))
            if not rows.any():
                continue
            if record.kind == "param":
                p = getattr(model.get_submodule(name.rpartition(".")[0]), record.extra["attr"])
                p.index_fill_(record.extra["dim"], torch.nonzero(rows).flatten(), 0)
                continue
            module = model.get_submodule(name)
            module.weight[rows] = 0
            if getattr(module, "bias", None) is not None:
                module.bias[rows] = 0
            zeroed += int(rows.sum())
    return zeroed


def check_exact(model, x, bound=2e-6, **options):
    """Prune ``model`` (random criterion, so zeroing does not move the choice) and compare."""
    model.eval()
    config = PruneConfig(**{"importance": "random", "ratio": 0.5, "round_to": 1, **options})
    plan = dataclasses.replace(config, example_inputs=x).plan(copy.deepcopy(model))
    assert plan.removed.size, "nothing to prune: the test would not test anything"
    assert zero_removed_(model, plan) > 0
    with torch.no_grad():
        ref = model(x)
    params = count_parameters(model)
    report = prune_channels_(model, config, example_inputs=x)
    pruned = report.model
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == ref.shape
    assert count_parameters(pruned) < params
    err = ((out - ref).norm() / ref.norm()).item()
    assert err <= bound, f"rel error {err:.3g} > {bound:.3g}"
    return report


@pytest.fixture
def exact():
    return check_exact


@pytest.fixture(autouse=True)
def references_and_one_thread():
    """Whole models on CPU: convops layers through their references (kernels are tested in
    tests/convops), one intra-op thread per test process (tests/zoo/conftest.py explains why)."""
    from slimtorch.core import reference_only

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with reference_only():
        yield
    torch.set_num_threads(previous)

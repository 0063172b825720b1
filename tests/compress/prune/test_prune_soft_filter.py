"""Soft filter pruning: per-epoch zeroing of the lowest-norm filters, recovery, physical removal."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.compress.prune import PruneConfig, SoftFilterPruner
from slimtorch.core.metrics import rel_error
from slimtorch.core.testing import rel_bound


def toy(seed=0, bn=False):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 9, 3, padding=1),
        nn.BatchNorm2d(9) if bn else nn.Identity(),
        nn.ReLU(),
        nn.Conv2d(9, 7, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(7, 5),
    )


def lowest_rows(weight, n):
    return set(torch.argsort(weight.detach().flatten(1).norm(dim=1))[:n].tolist())


def zero_rows(module):
    w = module.weight.detach().flatten(1)
    return {k for k in range(w.shape[0]) if not w[k].any() and module.bias[k] == 0}


def test_epoch_end_zeroes_the_lowest_l2_filters():
    model = toy()
    x = torch.randn(2, 3, 7, 9)
    before = {k: model[k].weight.detach().clone() for k in (0, 3)}
    want = {0: lowest_rows(model[0].weight, 4), 3: lowest_rows(model[3].weight, 3)}  # 9 → 5, 7 → 4 kept
    sfp = SoftFilterPruner(model, x, ratio=0.45, round_to=1)
    counts = sfp.epoch_end()
    assert counts == {"0": 4, "3": 3}
    for k in (0, 3):
        assert zero_rows(model[k]) == want[k]
        others = [r for r in range(before[k].shape[0]) if r not in want[k]]
        assert torch.equal(model[k].weight.detach()[others], before[k][others])  # the rest untouched
    assert model[7].weight.detach().abs().sum() > 0  # the classifier's outputs are the model's: frozen


def test_zeroed_filters_keep_training_and_can_recover():
    """With BN in training mode (as in the paper) a zero filter still gets a gradient: BN's
    output β keeps the ReLU open and ∂x̂/∂y = (g − mean g)/σ ≠ 0."""
    model = toy(1, bn=True).train()
    with torch.no_grad():
        model[1].bias.uniform_(0.1, 0.5)  # a trained β (β = 0 would sit exactly on the ReLU's kink)
    x, y = torch.randn(4, 3, 7, 9), torch.randint(0, 5, (4,))
    sfp = SoftFilterPruner(model, x, PruneConfig(importance="l2", ratio=0.45, round_to=1))
    sfp.epoch_end()
    zeroed = sorted(zero_rows(model[0]))
    F.cross_entropy(model(x), y).backward()
    grad = model[0].weight.grad.flatten(1)[zeroed]
    assert bool((grad.abs().sum(1) > 0).all()), "a zeroed filter gets no gradient: it could never recover"
    with torch.no_grad():  # one SGD step
        for p in model.parameters():
            p -= 0.1 * p.grad
    assert not zero_rows(model[0]) & set(zeroed)  # training moved them off zero
    # training regrows one zeroed filter past the others: the next epoch keeps it, zeroes another
    revived = zeroed[0]
    with torch.no_grad():
        model[0].weight[revived] = 10 * model[0].weight.detach().flatten(1).norm(dim=1).max() / 27**0.5
    expect = lowest_rows(model[0].weight, 4)
    sfp.epoch_end()
    assert revived not in zero_rows(model[0]) and zero_rows(model[0]) == expect


def test_finalize_removes_exactly_the_zeroed_filters():
    model = toy(2).eval()
    x = torch.randn(3, 3, 7, 9)
    sfp = SoftFilterPruner(model, x, ratio=0.45, round_to=1)
    sfp.epoch_end()
    soft = copy.deepcopy(model)
    soft[0].weight.data[list(zero_rows(soft[0]))] = 0  # the state finalize zeroes again (unchanged)
    with torch.no_grad():
        ref = soft(x)
    kept0 = [r for r in range(9) if r not in zero_rows(soft[0])]
    pruned = sfp.finalize()
    assert pruned[0].out_channels == 5 and pruned[3].out_channels == 4 and pruned[3].in_channels == 5
    torch.testing.assert_close(pruned[0].weight.detach(), soft[0].weight.detach()[kept0], rtol=0, atol=0)
    with torch.no_grad():
        err = rel_error(pruned(x), ref)
    assert err <= rel_bound(torch.float32, 9 * 9), err
    assert "out 9 -> 5" in sfp.report.converted["0"]


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        SoftFilterPruner("net", None)
    with pytest.raises(ValueError, match="ratio"):
        SoftFilterPruner(toy(), torch.randn(1, 3, 5, 5), ratio=1.0)
    with pytest.raises(TypeError, match="config"):
        SoftFilterPruner(toy(), torch.randn(1, 3, 5, 5), {"ratio": 0.5})

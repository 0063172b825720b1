"""Structured criteria against importances computed by hand on a small conv net."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.compress.prune import APoZ, Pruner, Taylor, bn_l1_penalty, build_graph, channel_scores


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 7, 3, padding=1)
        self.bn = nn.BatchNorm2d(7)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(7, 4)

    def forward(self, x):
        return self.fc(self.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        model.bn.weight.uniform_(-1, 1)
        model.bn.bias.uniform_(-0.5, 0.5)
    x = torch.randn(5, 3, 9, 11)
    return model, x, build_graph(model, x)


def _per_channel(graph, scores):
    ids = graph.records["conv"].slots["out"]
    return np.array([scores[int(i)] for i in ids])


@pytest.mark.parametrize(("name", "p"), [("l1", 1), ("l2", 2)])
def test_filter_norms(setup, name, p):
    model, _, graph = setup
    want = model.conv.weight.detach().flatten(1).norm(p=p, dim=1).numpy()
    np.testing.assert_allclose(_per_channel(graph, channel_scores(graph, model, name)), want, rtol=1e-6)


def test_bn_gamma_and_penalty(setup):
    model, _, graph = setup
    want = model.bn.weight.detach().abs().numpy()
    np.testing.assert_allclose(_per_channel(graph, channel_scores(graph, model, "bn")), want, rtol=1e-6)
    torch.testing.assert_close(bn_l1_penalty(model), model.bn.weight.abs().sum())
    with pytest.raises(ValueError, match="BatchNorm"):
        bn_l1_penalty(nn.Linear(2, 2))


def test_apoz(setup):
    model, x, graph = setup
    with torch.no_grad():
        a = F.relu(model.bn(model.conv(x)))
    want = 1 - (a == 0).float().mean(dim=(0, 2, 3)).numpy()
    got = _per_channel(graph, APoZ([x])(graph, model))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_taylor(setup):
    model, x, graph = setup
    y = torch.randint(0, 4, (5,))
    a = model.bn(model.conv(x))
    a.retain_grad()
    F.cross_entropy(model.fc(F.relu(a).mean((2, 3))), y).backward()
    want = (a * a.grad).mean(dim=(0, 2, 3)).abs().detach().numpy()
    model.zero_grad()
    got = _per_channel(graph, Taylor([(x, y)])(graph, model))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_lowest_scores_are_removed(setup):
    model, x, _ = setup
    w0 = model.conv.weight.detach().clone()
    keep = set(torch.argsort(w0.flatten(1).abs().sum(1), descending=True)[:4].tolist())
    pruned = Pruner(model, x, ratio=0.4, importance="l1", round_to=1).step()
    got = {int(torch.argmin((w0 - w).abs().flatten(1).sum(1))) for w in pruned.conv.weight.detach()}
    assert got == keep and pruned.fc.in_features == 4


def test_bad_criteria_inputs():
    with pytest.raises(ValueError, match="batches"):
        APoZ([])
    with pytest.raises(ValueError, match="batches"):
        Taylor([])

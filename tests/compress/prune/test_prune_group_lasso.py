"""SSL group lasso over coupled channel groups: penalty value and gradient by hand, the structured
prune of the groups below a threshold."""

import copy

import pytest
import torch
from torch import nn

from slimtorch.compress.prune import GroupLasso
from slimtorch.core.metrics import rel_error
from slimtorch.core.testing import rel_bound


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.conv2 = nn.Conv2d(5, 6, 3, padding=1, groups=1)
        self.fc = nn.Linear(6 * 2 * 2, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv1(x)))
        h = torch.relu(self.conv2(h))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 2), 1))


def make(seed=0):
    torch.manual_seed(seed)
    model = Net().eval()
    with torch.no_grad():
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.5, 0.5)
        model.bn.running_mean.uniform_(-0.3, 0.3)
    return model


def hand_groups(m):
    """The coupled groups written out: channel c of conv1 (filter, bias, BN γ β, conv2's input
    slice) and channel d of conv2 (filter, bias, the 4 fc columns its pooled features feed)."""
    groups = []
    for c in range(5):
        groups.append([m.conv1.weight[c], m.conv1.bias[c : c + 1], m.bn.weight[c : c + 1], m.bn.bias[c : c + 1]])
        groups[-1].append(m.conv2.weight[:, c])
    for d in range(6):
        groups.append([m.conv2.weight[d], m.conv2.bias[d : d + 1], m.fc.weight[:, 4 * d : 4 * d + 4]])
    return groups


def hand_penalty(m):
    return sum(torch.sqrt(sum((t**2).sum() for t in g)) for g in hand_groups(m))


def test_penalty_value_and_gradient_by_hand():
    model = make()
    x = torch.randn(2, 3, 7, 9)
    ssl = GroupLasso(model, x)
    assert len(ssl.classes) == 11
    got = ssl.penalty()
    want = hand_penalty(model)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    got.backward()
    grads = {n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    # ∂R/∂w = Σ_{groups ∋ w} w / ||g||, written out
    with torch.no_grad():
        norms = [torch.sqrt(sum((t**2).sum() for t in g)) for g in hand_groups(model)]
        n1, n2 = torch.stack(norms[:5]), torch.stack(norms[5:])
        w1, w2, fc = model.conv1.weight, model.conv2.weight, model.fc.weight
        torch.testing.assert_close(grads["conv1.weight"], w1 / n1[:, None, None, None], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grads["bn.weight"], model.bn.weight / n1, rtol=1e-5, atol=1e-7)
        want2 = w2 * (1 / n2[:, None, None, None] + 1 / n1[None, :, None, None])
        torch.testing.assert_close(grads["conv2.weight"], want2, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grads["fc.weight"], fc / n2.repeat_interleave(4)[None], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(grads["fc.bias"], torch.zeros(3))  # the classifier's outputs: no group


def test_weighted_penalty_and_zero_groups():
    model = make(1)
    x = torch.randn(2, 3, 7, 9)
    with torch.no_grad():  # channel 2 of conv1: the whole group exactly zero
        for t in hand_groups(model)[2]:
            t.zero_()
    ssl = GroupLasso(model, x, weighted=True)
    sizes = [sum(t.numel() for t in g) for g in hand_groups(model)]
    assert sorted(ssl.sizes.tolist()) == sorted(float(s) for s in sizes)
    want = sum(
        torch.sqrt(sum((t**2).sum() for t in g)) * s**0.5 for g, s in zip(hand_groups(model), sizes, strict=True)
    )
    got = ssl.penalty()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    got.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
    assert not model.conv1.weight.grad[2].any()  # a zero group's subgradient is 0


def test_prune_removes_groups_below_threshold_exactly():
    model = make(2)
    x = torch.randn(3, 3, 7, 9)
    with torch.no_grad():
        for c in (1, 3):  # what SSL training drives to zero
            for t in hand_groups(model)[c]:
                t.mul_(0)
        for t in hand_groups(model)[5 + 4]:  # conv2's channel 4: small, above the threshold
            t.mul_(1e-2)
        ref = model(x)
    ssl = GroupLasso(copy.deepcopy(model), x)
    norms = ssl.norms().detach()
    pruned = ssl.prune(threshold=1e-4)
    assert pruned.conv1.out_channels == 3 and pruned.bn.num_features == 3 and pruned.conv2.in_channels == 3
    assert pruned.conv2.out_channels == 6 and int((norms < 1e-4).sum()) == 2
    with torch.no_grad():
        assert rel_error(pruned(x), ref) <= rel_bound(torch.float32, 5 * 9 + 24)
    assert "out 5 -> 3" in ssl.report.converted["conv1"]
    assert len(ssl.classes) == 9  # the penalty follows the pruned model


def test_prune_rounds_kept_channels_up():
    model = make(3)
    x = torch.randn(2, 3, 7, 9)
    with torch.no_grad():
        for c in (0, 1, 4):
            for t in hand_groups(model)[c]:
                t.zero_()
    pruned = GroupLasso(model, x).prune(threshold=1e-6, round_to=4)
    assert pruned.conv1.out_channels == 4  # 2 above the threshold, rounded up to 4


def test_bad_arguments():
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(TypeError, match="model"):
        GroupLasso("net", x)
    with pytest.raises(ValueError, match="threshold"):
        GroupLasso(make(), x).prune(threshold=-1.0)
    with pytest.raises(ValueError, match="no removable"):
        GroupLasso(nn.Sequential(nn.Linear(4, 3)), torch.randn(2, 4))

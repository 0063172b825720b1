"""Dynamic Network Surgery: hysteresis mask updates against hand-set weights, gradients reaching the
pruned weights, thresholds, the update rate, finalize and state_dict."""

import copy

import pytest
import torch
from torch import nn

from slimtorch.compress.prune import (
    SurgeryConfig,
    SurgeryMask,
    UnstructuredConfig,
    finalize_,
    masks_of,
    prune_unstructured_,
    surgery_,
    update_masks_,
)


def _linear(values):
    layer = nn.Linear(len(values), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values]))
    return nn.Sequential(layer)


def test_hysteresis_prune_splice_and_unchanged():
    # a = 0.1, b = 0.2: |w| < a pruned, |w| > b spliced back, in between unchanged
    model = _linear([0.05, 0.15, 0.3, -0.15, -0.02])
    surgery_(model, SurgeryConfig(low=0.1, high=0.2))
    mask = masks_of(model)["0"]
    assert mask.tolist() == [[False, True, True, True, False]]  # starts all kept: only |w| < a goes
    original = model[0].parametrizations.weight.original
    with torch.no_grad():
        original.copy_(torch.tensor([[0.15, 0.05, 0.15, 0.25, 0.3]]))
    update_masks_(model)
    # 0: pruned, now in the band -> stays pruned; 1: kept, now < a -> pruned; 2: kept, band -> kept;
    # 3: kept, > b -> kept; 4: pruned, > b -> spliced back
    assert masks_of(model)["0"].tolist() == [[False, False, True, True, True]]
    assert torch.equal(model[0].weight, torch.tensor([[0.0, 0.0, 0.15, 0.25, 0.3]]))


def test_pruned_weights_receive_the_masked_weights_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3))
    surgery_(model, SurgeryConfig(sparsity=0.5, hysteresis=0.0))
    mask = masks_of(model)["0"]
    assert 0 < int((~mask).sum()) < mask.numel()
    x, y = torch.randn(9, 7), torch.randint(0, 3, (9,))
    # reference: the same network with the masked weight as an ordinary leaf
    w_masked = model[0].weight.detach().clone().requires_grad_(True)
    h = torch.relu(nn.functional.linear(x, w_masked, model[0].bias.detach()))
    nn.functional.cross_entropy(model[2](h), y).backward()
    nn.functional.cross_entropy(model(x), y).backward()
    g = model[0].parametrizations.weight.original.grad
    assert torch.equal(g, w_masked.grad)  # the full gradient: pruned entries included
    assert bool((g[~mask] != 0).any())


def test_quantile_thresholds_and_std_thresholds():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(31, 17))
    w = model[0].weight.detach().abs().flatten()
    report = surgery_(model, SurgeryConfig(sparsity=0.6, hysteresis=0.0))
    t = torch.sort(w).values[round(0.6 * w.numel()) - 1]
    dns = model[0].parametrizations.weight[0]
    assert isinstance(dns, SurgeryMask)
    assert dns.low.item() == pytest.approx(t.item()) and dns.high.item() == pytest.approx(t.item())
    # hysteresis 0: exactly |w| <= t... |w| < t removed, ties at t kept
    assert int((~masks_of(model)["0"]).sum()) == round(0.6 * w.numel()) - 1
    assert "a=" in report.converted["0"]
    model = nn.Sequential(nn.Linear(31, 17))
    w = model[0].weight.detach().abs().flatten()
    surgery_(model, SurgeryConfig(crate=0.5, hysteresis=0.2))
    t = (w.mean() + 0.5 * w.std()).item()
    dns = model[0].parametrizations.weight[0]
    assert dns.low.item() == pytest.approx(0.8 * t, rel=1e-6) and dns.high.item() == pytest.approx(1.2 * t, rel=1e-6)
    assert torch.equal(masks_of(model)["0"].flatten(), w >= dns.low)


def test_training_with_surgery_then_finalize_and_state_dict():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 5 * 5, 3))
    surgery_(model, SurgeryConfig(sparsity=0.7))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(6, 3, 7, 7), torch.randint(0, 3, (6,))
    changed = False
    for _ in range(5):
        before = {n: m.clone() for n, m in masks_of(model).items()}
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        assert update_masks_(model) == 2
        changed |= any(not torch.equal(before[n], m) for n, m in masks_of(model).items())
    assert changed  # the masks move while training
    other = copy.deepcopy(model)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)
    ref = model(x)
    masks = {n: m.clone() for n, m in masks_of(model).items()}
    finalize_(model)
    assert masks_of(model) == {} and type(model[0]) is nn.Conv2d
    assert torch.equal(model[0].weight == 0, ~masks["0"])
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    x[0, 0, 0, 0] = float("nan")
    assert torch.isnan(model(x)[0]).all() and not torch.isnan(model(x)[1:]).any()


def test_update_rate_and_every():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4))
    surgery_(model, SurgeryConfig(sparsity=0.5, update_every=3))
    assert [update_masks_(model) for _ in range(6)] == [0, 0, 1, 0, 0, 1]
    model = nn.Sequential(nn.Linear(5, 4))
    surgery_(model, SurgeryConfig(sparsity=0.5, gamma=1.0, power=1.0, seed=4))
    updates = sum(update_masks_(model) for _ in range(400))  # P(update at iter t) = 1/(1+t)
    assert 1 <= updates <= 20  # Σ 1/(1+t) for t <= 400 is about 5.4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sparsity": 1.0}, "sparsity: expected a fraction"),
        ({"low": 0.1}, "low, high: expected both or neither"),
        ({"low": 0.3, "high": 0.2}, "0 <= low <= high"),
        ({"low": 0.1, "high": 0.2, "sparsity": 0.5}, "either sparsity or low/high"),
        ({"hysteresis": 1.0}, "hysteresis"),
        ({"update_every": 0}, "update_every"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SurgeryConfig(**kwargs)


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="config: expected a SurgeryConfig"):
        surgery_(nn.Linear(3, 3), 0.5)


def test_surgery_on_a_masked_model_starts_from_its_mask():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(9, 6), nn.ReLU(), nn.Linear(6, 3))
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.5))
    before = masks_of(model)["0"].clone()
    copied = copy.deepcopy(model)
    surgery_(model, SurgeryConfig(low=0.0, high=10.0))  # nothing below a, nothing above b: masks unchanged
    assert isinstance(model[0].parametrizations.weight[0], SurgeryMask)
    assert torch.equal(masks_of(model)["0"], before)
    x = torch.randn(4, 9)
    torch.testing.assert_close(copied(x), model(x), rtol=0, atol=0)  # the deep copy still works

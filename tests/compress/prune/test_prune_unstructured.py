"""Unstructured masks: exact counts, the right weights removed, masks through training (plain and
DDP), finalize, filter_fn, composition and clear errors."""

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn

from slimtorch.compress.prune import UnstructuredConfig, finalize_, masks_of, prune_unstructured_
from slimtorch.core.conversions import Skip, conversion_source


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 7, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(7, 5, 3, groups=1),
        nn.Flatten(),
        nn.Linear(5 * 9 * 9, 13),
        nn.ReLU(),
        nn.Linear(13, 3),
    )


LAYERS = ("0", "2", "4", "6")


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9])
def test_layer_scope_removes_the_smallest_of_each_layer(sparsity):
    model = _net()
    dense = {n: model.get_submodule(n).weight.detach().clone() for n in LAYERS}
    report = prune_unstructured_(model, UnstructuredConfig(sparsity=sparsity, scope="layer"))
    masks = masks_of(model)
    assert set(masks) == set(LAYERS) == set(report.converted)
    for name, w in dense.items():
        mask = masks[name]
        assert mask.dtype == torch.bool and mask.shape == w.shape
        assert int((~mask).sum()) == round(sparsity * w.numel())
        if sparsity > 0:  # every kept |w| >= every removed |w|
            assert w.abs()[mask].min() >= w.abs()[~mask].max()
        assert torch.equal(model.get_submodule(name).weight, torch.where(mask, w, torch.zeros_like(w)))


def test_global_scope_uses_one_threshold():
    model = _net()
    with torch.no_grad():
        model[6].weight.mul_(100)  # the last layer's weights are large: global pruning spares them
    weights = torch.cat([model.get_submodule(n).weight.detach().abs().flatten() for n in LAYERS])
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.8, scope="global"))
    masks = masks_of(model)
    kept = torch.cat([masks[n].flatten() for n in LAYERS])
    assert int((~kept).sum()) == round(0.8 * weights.numel())
    threshold = torch.sort(weights).values[round(0.8 * weights.numel()) - 1]
    assert torch.equal(kept, weights > threshold)  # continuous weights: no ties
    assert bool(masks["6"].all())


def test_masks_stay_through_optimizer_steps():
    model = _net()
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.7))
    masks = {n: m.clone() for n, m in masks_of(model).items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    x, y = torch.randn(5, 3, 11, 11), torch.randint(0, 3, (5,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for name, mask in masks.items():
        w = model.get_submodule(name).weight
        assert torch.equal(w[~mask], torch.zeros_like(w[~mask]))
        assert bool((w[mask] != 0).all())
    ref = copy.deepcopy(model)
    report = finalize_(model)
    assert set(report.converted) == set(LAYERS)
    assert masks_of(model) == {}
    assert set(model.state_dict()) == set(_net().state_dict())
    for name in LAYERS:
        module = model.get_submodule(name)
        assert type(module) in (nn.Linear, nn.Conv2d)
        assert sorted(n for n, _ in module.named_parameters()) == ["bias", "weight"]
        assert torch.equal(module.weight == 0, ~masks[name])
    torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_ddp_training_keeps_masks(tmp_path):
    store = tmp_path / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        model = _net()
        prune_unstructured_(model, UnstructuredConfig(sparsity=0.6, scope="global"))
        plain = copy.deepcopy(model)
        ddp = nn.parallel.DistributedDataParallel(model)
        x, y = torch.randn(4, 3, 11, 11), torch.randint(0, 3, (4,))
        for net in (ddp, plain):
            opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
            for _ in range(2):
                opt.zero_grad()
                nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
        for name, mask in masks_of(model).items():
            w = model.get_submodule(name).weight
            assert not bool(w[~mask].any())
            torch.testing.assert_close(w, plain.get_submodule(name).weight)
    finally:
        dist.destroy_process_group()


def test_repruning_keeps_removed_weights_removed():
    model = _net()
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.5))
    first = {n: m.clone() for n, m in masks_of(model).items()}
    with torch.no_grad():  # the removed entries of the original grow large: they must stay removed
        model[0].parametrizations.weight.original.add_(torch.where(first["0"], 0.0, 100.0))
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.75))
    for name, mask in masks_of(model).items():
        assert not bool((mask & ~first[name]).any())
        assert int((~mask).sum()) == round(0.75 * mask.numel())


def test_filter_fn_and_composition():
    model = _net()
    report = prune_unstructured_(model, UnstructuredConfig(sparsity=0.5), filter_fn=lambda m, fqn: fqn != "6")
    assert set(masks_of(model)) == {"0", "2", "4"}
    assert report.skipped["6"] == "excluded by filter_fn"
    # a masked layer is no longer a plain layer: other conversions leave it alone and say why
    assert isinstance(conversion_source(model[0]), Skip)


def test_state_dict_round_trip_and_nan():
    model = _net()
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.5))
    other = _net(seed=1)
    prune_unstructured_(other, UnstructuredConfig(sparsity=0.5))
    other.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 11, 11)
    torch.testing.assert_close(other(x), model(x), rtol=0, atol=0)
    x[0, 0, 0, 0] = float("nan")
    assert torch.isnan(model(x)[0]).all() and not torch.isnan(model(x)[1]).any()


def test_random_method_and_reproducible():
    a, b = _net(), _net()
    prune_unstructured_(a, UnstructuredConfig(method="random", sparsity=0.5, seed=3))
    prune_unstructured_(b, UnstructuredConfig(method="random", sparsity=0.5, seed=3))
    for name, mask in masks_of(a).items():
        assert torch.equal(mask, masks_of(b)[name])
        assert int((~mask).sum()) == round(0.5 * mask.numel())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sparsity": 1.0}, ValueError, "sparsity: expected .* in \\[0, 1\\), got 1.0"),
        ({"sparsity": -0.1}, ValueError, "sparsity"),
        ({"sparsity": "0.5"}, TypeError, "sparsity"),
        ({"method": "l3"}, ValueError, "method"),
        ({"scope": "net"}, ValueError, "scope"),
    ],
)
def test_bad_config_raises(kwargs, error, match):
    with pytest.raises(error, match=match):
        UnstructuredConfig(**kwargs)


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="config: expected an UnstructuredConfig"):
        prune_unstructured_(_net(), 0.5)

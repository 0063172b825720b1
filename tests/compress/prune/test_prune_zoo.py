"""Every zoo model prunes at ratio 0.5 (exactly, when the removed channels were zero), and the
zoo's registered ``_pruned25`` / ``_pruned50`` architectures are what the pruner produces: a pruned
checkpoint loads into them."""

import os

import pytest
import torch

zoo = pytest.importorskip("slimtorch.zoo")

from slimtorch.compress.prune import Pruner  # noqa: E402

ALL = sorted(n for n in zoo.list_models() if "pruned" not in n)
# CI walks one model per family; `nox -s bench_prune` (SLIMTORCH_PRUNE_FULL_WALK=1) walks all 42
FAMILY = (
    "slim_mobilenetv1_025",
    "slim_mobilenetv2_035",
    "slim_mobilenetv3_small_100",
    "slim_shiftnet_a",
    "slim_shiftresnet20",
    "slim_shufflenetv1_g3_050",
    "slim_shufflenetv2_x0_5",
    "slim_squeezenet1_1_bypass",
)
BASES = ALL if os.environ.get("SLIMTORCH_PRUNE_FULL_WALK") == "1" else [n for n in FAMILY if n in ALL]


@pytest.mark.parametrize("name", BASES)
def test_zoo_model_prunes_exactly(name, exact):
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=10)
    for m in model.modules():  # non-trivial BN statistics so an exact match means something
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    exact(model, torch.randn(2, 3, 32, 32), bound=1e-5, importance="random", round_to=8)


def _zoo_ignored(name, model):
    """The layers whose outputs the zoo's width tables keep: the stem, each block's projection
    (residual stream / concatenated half) and, for SqueezeNet, the stem only."""
    if name.startswith("slim_squeezenet"):
        return [model.stem]
    keep = [model.stem]
    for module_name, module in model.named_modules():
        if module_name.endswith(("conv_pwl", "proj_pw")):
            keep.append(module)
    return keep


@pytest.mark.parametrize(
    ("base", "pruned"),
    [
        (base, f"{base}_pruned{p}")
        for base in ("slim_mobilenetv2_100", "slim_shufflenetv2_x1_0", "slim_squeezenet1_1")
        for p in (25, 50)
    ],
)
def test_pruner_reproduces_the_zoo_pruned_architectures(base, pruned):
    torch.manual_seed(0)
    model = zoo.create_model(base).eval()
    x = torch.randn(1, 3, 64, 64)
    ratio = int(pruned.rsplit("pruned", 1)[1]) / 100
    out = Pruner(model, x, ratio=ratio, importance="l1", round_to=8, ignored_layers=_zoo_ignored(base, model)).step()
    target = zoo.create_model(pruned).eval()
    got = {k: tuple(v.shape) for k, v in out.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    assert got == want
    target.load_state_dict(out.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(target(x), out(x), rtol=0, atol=0)

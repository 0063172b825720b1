"""Every torchvision classification model up to 200M parameters prunes at ratio 0.5 on the meta
device (no weights allocated, no FLOPs run): the pruned model runs, its output shape is unchanged
and it has fewer parameters; where the coupling leaves nothing to prune the report says why.
Exactness on real weights is tested on small models in test_prune_graph / test_prune_zoo and on
three torchvision models below."""

import contextlib
import os

import pytest
import torch

torchvision = pytest.importorskip("torchvision")

from slimtorch.compress.prune import Pruner  # noqa: E402
from slimtorch.core.model_stats import count_parameters  # noqa: E402

MAX_PARAMS = 200_000_000


@contextlib.contextmanager
def _no_init():
    """torch.nn.init's in-place initialisers as no-ops (memory is allocated, nothing computed)."""
    saved = {k: v for k, v in vars(torch.nn.init).items() if k.endswith("_") and not k.startswith("_") and callable(v)}
    try:
        for k in saved:
            setattr(torch.nn.init, k, lambda t, *a, **kw: t)
        yield
    finally:
        for k, v in saved.items():
            setattr(torch.nn.init, k, v)


def _build(name):
    try:
        with torch.device("meta"):
            return torchvision.models.get_model(name).eval()
    except NotImplementedError:  # RegNet computes its widths with torch ops on the default device
        with _no_init():
            return torchvision.models.get_model(name).eval().to("meta")


def _models():
    names = []
    for name in torchvision.models.list_models(module=torchvision.models):
        if count_parameters(_build(name)) <= MAX_PARAMS:
            names.append(name)
    return names


# CI (2 cores) walks one model per family; `nox -s bench_prune` sets SLIMTORCH_PRUNE_FULL_WALK=1 and
# walks every model (76 with torchvision 0.29: all prune; about 10 minutes on 2 loaded cores).
FULL = os.environ.get("SLIMTORCH_PRUNE_FULL_WALK") == "1"
FAMILY = (
    "alexnet",
    "convnext_tiny",
    "densenet121",
    "efficientnet_b0",
    "googlenet",
    "mnasnet0_5",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "regnet_y_400mf",
    "resnet50",
    "resnext50_32x4d",
    "shufflenet_v2_x1_0",
    "squeezenet1_1",
    "swin_t",
    "vgg11_bn",
    "vit_b_16",
    "wide_resnet50_2",
)
MODELS = _models() if FULL else list(FAMILY)


def test_the_walk_covers_the_classification_zoo():
    names = set(torchvision.models.list_models(module=torchvision.models))
    assert set(FAMILY) <= names
    if FULL:
        assert len(MODELS) >= 70 and "resnet50" in MODELS and "vit_b_16" in MODELS


@pytest.mark.parametrize("name", MODELS)
def test_torchvision_model_prunes_on_meta(name):
    model = _build(name)
    size = 299 if name == "inception_v3" else 224
    x = torch.empty(1, 3, size, size, device="meta")
    before = count_parameters(model)
    out_shape = model(x).shape
    pruner = Pruner(model, x, ratio=0.5, importance="random", round_to=8)
    pruned = pruner.step()
    assert pruned(x).shape == out_shape
    after = count_parameters(pruned)
    assert after < before, pruner.report
    assert pruner.report.converted
    # every layer whose outputs stayed has its reason
    for why in pruner.report.skipped.values():
        assert why


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "regnet_x_400mf"])
def test_torchvision_model_prunes_exactly(name, exact):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, num_classes=10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    exact(model, torch.randn(2, 3, 48, 48), bound=1e-5, round_to=8)

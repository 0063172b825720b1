"""Registry-wide: every registered model builds, trains a step, has its documented parameter
count, survives a safetensors state_dict round trip and agrees with its published figures."""

import pytest
import safetensors.torch
import timm
import torch

import slimtorch.zoo as zoo
from slimtorch.core import reference_only
from slimtorch.core.model_stats import count_parameters, state_dict_tensors
from slimtorch.core.testing import randn

MODELS = zoo.list_models()
PUBLISHED = [name for name in MODELS if zoo.model_card(name).published is not None]
EQUIVALENTS = [(name, eq) for name in MODELS for eq in zoo.model_card(name).equivalents]


def small_input(seed: int) -> torch.Tensor:
    """2×3×32×32: the smallest input every model maps to at least 1×1 (two images so that
    BatchNorm has more than one value per channel in training mode)."""
    return randn((2, 3, 32, 32), seed=seed)


def test_the_zoo_lists_every_family_and_nothing_of_timms():
    assert len(MODELS) == 49 and all(name.startswith("slim_") for name in MODELS)
    assert set(timm.list_models("slim_*")) >= set(MODELS)
    assert zoo.list_models("slim_squeezenet1_1*") == [
        "slim_squeezenet1_1",
        "slim_squeezenet1_1_bypass",
        "slim_squeezenet1_1_pruned25",
        "slim_squeezenet1_1_pruned50",
    ]
    with pytest.raises(ValueError, match=r"'mobilenetv2_100' is not a slimtorch\.zoo model"):
        zoo.create_model("mobilenetv2_100")


@pytest.mark.parametrize("name", MODELS)
def test_model_builds_trains_counts_and_round_trips(name, tmp_path):
    model = zoo.create_model(name)
    assert count_parameters(model) == zoo.model_card(name).params
    model.reset_classifier(7)
    x = small_input(seed=len(name))
    with reference_only():
        out = model(x)
        assert out.shape == (2, 7) and bool(torch.isfinite(out).all())
        out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(torch.isfinite(p.grad).all())]
    assert missing == [], f"parameters without a finite gradient: {missing}"

    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(state_dict_tensors(model), path)
    fresh = zoo.create_model(name, num_classes=7)
    fresh.load_state_dict(safetensors.torch.load_file(path), strict=True)
    with reference_only(), torch.no_grad():
        assert torch.equal(model.eval()(x), fresh.eval()(x))


@pytest.mark.parametrize("name", PUBLISHED)
def test_profile_agrees_with_the_published_figures(name):
    with torch.device("meta"):
        model = zoo.create_model(name)
    prof = zoo.profile(model, (1, *model.pretrained_cfg["input_size"]))
    published = zoo.model_card(name).published
    if published.params:
        counted = published.counted_params(prof)
        assert zoo.Published.agrees(counted, published.params), f"{counted} params vs {published}"
    if published.macs:
        assert zoo.Published.agrees(prof.macs, published.macs), f"{prof.macs} MACs vs {published}"


@pytest.mark.parametrize(("name", "equivalent"), EQUIVALENTS, ids=lambda v: str(v))
def test_parameter_count_equals_the_torchvision_or_timm_model(name, equivalent):
    with torch.device("meta"):
        theirs = equivalent.build()
    assert zoo.model_card(name).params == sum(p.numel() for p in theirs.parameters())

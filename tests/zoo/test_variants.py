"""Compressed variants come from core's registry: names, create_model(variant=...) for every
variant (fused included: train-mode models are put in eval), composition of conversions on every
zoo family, and the distillation recipes."""

import copy

import pytest
import torch

import slimtorch.zoo as zoo
from slimtorch.core.conversions import ConversionReport
from slimtorch.core.model_stats import count_parameters
from slimtorch.core.registry import available_conversions
from slimtorch.core.testing import assert_rel_close, assert_sqnr_at_least, randn


def test_variants_are_the_registry_names():
    assert zoo.list_variants() == sorted(c.name for c in available_conversions())
    assert {"int8", "int4-g128", "int4-g32", "sparse24", "fused"} <= set(zoo.list_variants())


def test_unknown_variants_and_non_modules_are_refused():
    with pytest.raises(ValueError, match=r"conversion: expected one of \[.*'int8'.*\], got 'fp8'"):
        zoo.apply_variant(torch.nn.Linear(2, 2), "fp8")
    with pytest.raises(TypeError, match=r"model: expected a torch.nn.Module, got str"):
        zoo.apply_variant("slim_mobilenetv2_035", "int8")


def test_a_missing_distribution_is_named(monkeypatch):
    from slimtorch.core import registry

    monkeypatch.setattr(registry, "import_all_packages", lambda: ["core", "zoo"])
    monkeypatch.setattr(registry, "_REGISTRY", {k: v for k, v in registry._REGISTRY.items() if v.family == "core"})
    with pytest.raises(ValueError, match=r"got 'int8'; not installed: .*slimtorch-quant.*pip install"):
        zoo.apply_variant(torch.nn.Linear(2, 2), "int8")


@pytest.mark.parametrize("variant", ["fused", "int8", "sparse24"])
def test_create_model_with_a_variant_works_from_train_mode(variant):
    """timm builds models in train mode; variants are deployment conversions applied in eval."""
    torch.manual_seed(0)
    model = zoo.create_model("slim_mobilenetv2_035", num_classes=5, variant=variant)
    assert not model.training
    out = model(randn((1, 3, 32, 32), seed=1))
    assert out.shape == (1, 5) and bool(torch.isfinite(out).all())
    if variant == "fused":
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("recipe", list(zoo.DISTILLATION_RECIPES.values()), ids=lambda r: r.name)
def test_distillation_recipes_pair_layers_of_equal_resolution(recipe):
    assert recipe.name.startswith(recipe.student + ".")
    assert 0.0 <= recipe.alpha <= 1.0 and recipe.temperature > 0
    assert recipe.hint_layers or recipe.attention_layers
    with torch.device("meta"):
        sizes = [count_parameters(zoo.create_model(name)) for name in (recipe.teacher, recipe.student)]
    assert sizes[1] < sizes[0], "the student is the smaller model"
    shapes = recipe.feature_shapes((1, 3, 224, 224))
    assert set(shapes) == {*recipe.hint_layers, *recipe.attention_layers}
    for (teacher_layer, student_layer), (t, s) in shapes.items():
        assert t[-2:] == s[-2:], f"{teacher_layer} {tuple(t)} vs {student_layer} {tuple(s)}"


@pytest.mark.parametrize("variant", [c.name for c in available_conversions("cpu")])
def test_every_variant_converts_a_zoo_model_with_the_real_package(variant):
    """The real slimtorch-quant / -sparse / -convops conversions on a zoo model (references on CPU)."""
    torch.manual_seed(0)
    model = zoo.create_model("slim_mobilenetv2_035", num_classes=5).eval()
    x = randn((2, 3, 32, 32), seed=3)
    entry = next(c for c in available_conversions() if c.name == variant)
    with torch.no_grad():
        expected = model(x)
        report = zoo.apply_variant(copy.deepcopy(model), variant)
        x = x.to(entry.dtype or x.dtype)
        assert isinstance(report, ConversionReport) and report.converted
        converted = report.model
        out = converted(x)
    assert out.shape == expected.shape and bool(torch.isfinite(out).all())
    if entry.dtype is not None:  # a cast: the rounding of the dtype, no more
        assert_sqnr_at_least(expected, out.float(), 30.0)
        return
    if variant == "fused":  # BatchNorm folded away, the function kept
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in converted.modules())
        assert_rel_close(out, expected, 1e-5)
        return
    packages = {
        type(m).__module__.split(".")[1] for m in converted.modules() if type(m).__module__.startswith("slimtorch")
    }
    assert entry.family in packages, f"{variant}: no slimtorch.{entry.family} layer in the model"
    if variant == "int8":  # near-lossless: ~30 dB through 50 layers of a random model
        assert_sqnr_at_least(expected, out, 25.0)

"""Compressed variants: the conversion contract with slimtorch.quant / slimtorch.sparse (with
stand-in packages), the same conversions with the real packages, the ImportError when one is
missing, and the distillation recipes."""

import copy
import sys
import types

import pytest
import torch

import slimtorch.zoo as zoo
from slimtorch.core.model_stats import count_parameters
from slimtorch.core.testing import assert_rel_close, assert_sqnr_at_least, randn


def fake_package(monkeypatch, module: str, **attrs) -> list:
    """Install a stand-in ``module`` whose functions record their calls; returns the record."""
    calls: list = []
    package = types.ModuleType(module)
    for name, value in attrs.items():
        setattr(package, name, value(calls) if name.endswith("_") else value)
    monkeypatch.setitem(sys.modules, module, package)
    return calls


class Config:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def recorder(returns_model: bool):
    def make(calls):
        def convert(model, config):
            calls.append((model, type(config).__name__, config.kwargs))
            return torch.nn.Sequential(model) if returns_model else None

        return convert

    return make


def test_quantized_variants_call_quantize_with_their_configs(monkeypatch):
    int8 = type("Int8WeightOnlyConfig", (Config,), {})
    int4 = type("Int4WeightOnlyConfig", (Config,), {})
    calls = fake_package(
        monkeypatch, "slimtorch.quant", quantize_=recorder(False), Int8WeightOnlyConfig=int8, Int4WeightOnlyConfig=int4
    )
    model = zoo.create_model("slim_mobilenetv2_035", variant="int8")
    assert calls == [(model, "Int8WeightOnlyConfig", {})]
    zoo.apply_variant(model, "int4")
    zoo.apply_variant(model, "int4-g32")
    assert [c[1:] for c in calls[1:]] == [
        ("Int4WeightOnlyConfig", {"group_size": 128}),
        ("Int4WeightOnlyConfig", {"group_size": 32}),
    ]


def test_sparse_variant_returns_what_sparsify_returns(monkeypatch):
    calls = fake_package(
        monkeypatch, "slimtorch.sparse", sparsify_=recorder(True), Sparse24Config=type("Sparse24Config", (Config,), {})
    )
    model = zoo.create_model("slim_squeezenet1_1")
    converted = zoo.apply_variant(model, "sparse24")
    assert calls == [(model, "Sparse24Config", {})] and converted[0] is model


@pytest.mark.parametrize(("variant", "distribution"), [("int8", "slimtorch-quant"), ("sparse24", "slimtorch-sparse")])
def test_a_missing_distribution_is_named(monkeypatch, variant, distribution):
    monkeypatch.setitem(sys.modules, distribution.replace("-", "."), None)  # what an absent package looks like
    with pytest.raises(ImportError, match=rf"variant '{variant}' needs the {distribution} distribution .*pip install"):
        zoo.apply_variant(zoo.create_model("slim_shufflenetv2_x0_5"), variant)


def test_unknown_variants_are_refused():
    assert zoo.list_variants() == ["fused", "int4", "int4-g32", "int8", "sparse24"]
    with pytest.raises(
        ValueError, match=r"variant: expected one of \['fused', 'int4', 'int4-g32', 'int8', 'sparse24'\], got 'fp8'"
    ):
        zoo.apply_variant(torch.nn.Linear(2, 2), "fp8")


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


@pytest.mark.parametrize("variant", zoo.list_variants())
def test_every_variant_converts_a_zoo_model_with_the_real_package(variant):
    """The real slimtorch-quant / -sparse / -convops conversions on a zoo model (references on CPU)."""
    torch.manual_seed(0)
    model = zoo.create_model("slim_mobilenetv2_035", num_classes=5).eval()
    x = randn((2, 3, 32, 32), seed=3)
    with torch.no_grad():
        expected = model(x)
        converted = zoo.apply_variant(copy.deepcopy(model), variant).eval()
        out = converted(x)
    assert out.shape == expected.shape and bool(torch.isfinite(out).all())
    if variant == "fused":  # BatchNorm folded away, the function kept
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in converted.modules())
        assert_rel_close(out, expected, 1e-5)
        return
    package = "quant" if variant.startswith("int") else "sparse"
    modules = {type(m).__module__ for m in converted.modules()}
    assert f"slimtorch.{package}.layers" in modules, f"{variant}: no slimtorch.{package} layer in the model"
    if variant == "int8":  # near-lossless: ~30 dB through 50 layers of a random model
        assert_sqnr_at_least(expected, out, 25.0)

"""Compressed variants: the conversion contract with slimtorch.quant / slimtorch.sparse (with
stand-in packages: the real ones are separate distributions), the ImportError when one is
missing, and the distillation recipes."""

import sys
import types

import pytest
import torch

import slimtorch.zoo as zoo
from slimtorch.core.model_stats import count_parameters


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
    assert zoo.list_variants() == ["int4", "int4-g32", "int8", "sparse24"]
    with pytest.raises(
        ValueError, match=r"variant: expected one of \['int4', 'int4-g32', 'int8', 'sparse24'\], got 'fp8'"
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

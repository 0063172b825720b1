"""Compressed variants of the zoo's models, named as timm names them:

- **pruned**: a new architecture with its own per-layer widths, registered as
  ``<base>_pruned25`` / ``_pruned50`` (the widths structures live in the family modules:
  ``pruned_mobilenetv2_widths``, ``pruned_shufflenetv2_widths``, ``pruned_squeezenet_widths``);
- **quantized / 2:4-sparse / fused**: conversions of a trained float model by ``slimtorch.quant``,
  ``slimtorch.sparse`` and ``slimtorch.convops`` (BatchNorm folding and activation fusion for
  deployment), named by a variant tag: ``apply_variant(model, "int8")`` or
  ``slimtorch.zoo.create_model(name, variant="int8")``. Those distributions are optional: a
  variant whose distribution is missing raises an ``ImportError`` naming it;
- **distilled**: a base architecture trained with a :class:`DistillationRecipe` (the training
  machinery is a separate package); published weights would carry the recipe's name as tag.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Variant:
    name: str
    distribution: str
    module: str
    description: str
    convert: Callable[[ModuleType, nn.Module], Any]


VARIANTS: dict[str, Variant] = {
    variant.name: variant
    for variant in (
        Variant(
            "int8",
            "slimtorch-quant",
            "slimtorch.quant",
            "int8 weights (per output channel scales), float activations",
            lambda quant, model: quant.quantize_(model, quant.Int8WeightOnlyConfig()),
        ),
        Variant(
            "int4",
            "slimtorch-quant",
            "slimtorch.quant",
            "int4 weights in groups of 128 along the input, float activations",
            lambda quant, model: quant.quantize_(model, quant.Int4WeightOnlyConfig(group_size=128)),
        ),
        Variant(
            "int4-g32",
            "slimtorch-quant",
            "slimtorch.quant",
            "int4 weights in groups of 32 along the input, float activations",
            lambda quant, model: quant.quantize_(model, quant.Int4WeightOnlyConfig(group_size=32)),
        ),
        Variant(
            "fused",
            "slimtorch-convops",
            "slimtorch.convops",
            "eval BatchNorm folded into the convolutions, activations fused into their epilogues",
            lambda convops, model: convops.convert(convops.fold_bn(model)),
        ),
        Variant(
            "sparse24",
            "slimtorch-sparse",
            "slimtorch.sparse",
            "2:4 semi-structured sparse weights (two of every four along the input kept)",
            lambda sparse, model: sparse.sparsify_(model, sparse.Sparse24Config()),
        ),
    )
}


def list_variants() -> list[str]:
    return sorted(VARIANTS)


def apply_variant(model: nn.Module, variant: str) -> nn.Module:
    """Convert ``model`` (a trained float model; modified in place) into ``variant``; returns it."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {list_variants()}, got {variant!r}")
    spec = VARIANTS[variant]
    try:
        package = importlib.import_module(spec.module)
    except ImportError as err:
        raise ImportError(
            f"variant {variant!r} needs the {spec.distribution} distribution ({spec.module}), which is not "
            f"installed: pip install {spec.distribution}"
        ) from err
    converted = spec.convert(package, model)
    return model if converted is None else converted


@dataclass(frozen=True)
class DistillationRecipe:
    """How to train ``student`` from ``teacher`` (both zoo model names).

    Loss = ``alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T))`` + ``(1 − alpha) ·
    CE(student, labels)`` (Hinton et al. 2015) + ``hint_weight`` · Σ FitNets hints (Romero et
    al. 2015: a 1x1 convolution regresses the student feature onto the teacher's, L2) +
    ``attention_weight`` · Σ attention transfer (Zagoruyko & Komodakis 2017: L2 distance of the
    L2-normalised maps ``Σ_c f²``). Layer pairs are ``(teacher module, student module)`` names
    whose outputs share their spatial size; :meth:`feature_shapes` gives their shapes.
    """

    name: str
    teacher: str
    student: str
    temperature: float = 4.0
    alpha: float = 0.9
    hint_layers: tuple[tuple[str, str], ...] = ()
    hint_weight: float = 1.0
    attention_layers: tuple[tuple[str, str], ...] = ()
    attention_weight: float = 1000.0
    epochs: int = 150
    notes: str = ""

    def feature_shapes(self, input_size: tuple[int, ...] = (1, 3, 224, 224)) -> dict[tuple[str, str], tuple]:
        """``{(teacher layer, student layer): (teacher shape, student shape)}`` for every hint and
        attention pair, from one forward of both models on the meta device (free)."""
        import timm

        pairs = dict.fromkeys((*self.hint_layers, *self.attention_layers))
        outputs: dict[str, dict[str, tuple]] = {}
        for role, name, index in (("teacher", self.teacher, 0), ("student", self.student, 1)):
            with torch.device("meta"):
                model = timm.create_model(name).eval()
            shapes: dict[str, tuple] = {}
            for layer in {pair[index] for pair in pairs}:
                module = model.get_submodule(layer)
                module.register_forward_hook(
                    lambda _m, _i, out, layer=layer, shapes=shapes: shapes.__setitem__(layer, out.shape)
                )
            with torch.no_grad():
                model(torch.zeros(input_size, device="meta"))
            outputs[role] = shapes
        return {pair: (outputs["teacher"][pair[0]], outputs["student"][pair[1]]) for pair in pairs}


DISTILLATION_RECIPES: dict[str, DistillationRecipe] = {
    recipe.name: recipe
    for recipe in (
        DistillationRecipe(
            "slim_mobilenetv2_050.kd_mobilenetv2_140",
            teacher="slim_mobilenetv2_140",
            student="slim_mobilenetv2_050",
            hint_layers=(("stages.3", "stages.3"),),
            attention_layers=(("stages.1", "stages.1"), ("stages.2", "stages.2"), ("stages.4", "stages.4")),
            notes="one FitNets hint mid-network (stride 16), attention transfer at strides 4, 8 and 16",
        ),
        DistillationRecipe(
            "slim_shufflenetv2_x0_5.kd_shufflenetv2_x2_0",
            teacher="slim_shufflenetv2_x2_0",
            student="slim_shufflenetv2_x0_5",
            hint_layers=(("stages.1", "stages.1"),),
            attention_layers=(("stages.0", "stages.0"), ("stages.1", "stages.1"), ("stages.2", "stages.2")),
            notes="hint on stage 3 (stride 16), attention transfer on the three stage outputs",
        ),
        DistillationRecipe(
            "slim_mobilenetv3_small_100.kd_mobilenetv3_large_100",
            teacher="slim_mobilenetv3_large_100",
            student="slim_mobilenetv3_small_100",
            temperature=2.0,
            attention_layers=(("stages.2", "stages.1"), ("stages.4", "stages.3"), ("final_conv", "final_conv")),
            notes="attention transfer where the resolutions meet (strides 8, 16, 32); no hint",
        ),
        DistillationRecipe(
            "slim_mobilenetv2_100_pruned50.kd_mobilenetv2_100",
            teacher="slim_mobilenetv2_100",
            student="slim_mobilenetv2_100_pruned50",
            temperature=2.0,
            alpha=0.7,
            hint_layers=(("stages.3", "stages.3"), ("stages.5", "stages.5")),
            epochs=30,
            notes="recovers a pruned model from its unpruned parent; start from the parent's kept channels",
        ),
    )
}

"""Compressed variants of the zoo's models, named as timm names them:

- **pruned**: a new architecture with its own per-layer widths, registered as
  ``<base>_pruned25`` / ``_pruned50`` (the widths structures live in the family modules:
  ``pruned_mobilenetv2_widths``, ``pruned_shufflenetv2_widths``, ``pruned_squeezenet_widths``);
- **quantized / sparse / fused / structured**: a conversion of a trained float model from core's
  registry (:mod:`slimtorch.core.registry`: one name per conversion, the same names as the demo's
  rows and ``slimtorch formats``), applied in eval mode: ``apply_variant(model, "int8")`` or
  ``slimtorch.zoo.create_model(name, variant="int8")``. The distributions that register them
  (slimtorch-quant, -sparse, -convops, -structured) are optional: an unknown name lists what the
  installed ones offer and names the distributions that are not installed;
- **distilled**: a base architecture trained with a :class:`DistillationRecipe` (the training
  machinery is a separate package); published weights would carry the recipe's name as tag.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from slimtorch.core.conversions import ConversionReport
from slimtorch.core.registry import available_conversions, get_conversion


def list_variants() -> list[str]:
    """The conversion names the installed slimtorch distributions register."""
    return sorted(entry.name for entry in available_conversions())


def apply_variant(model: nn.Module, variant: str) -> ConversionReport:
    """Convert ``model`` (a trained float model; put in eval mode and modified in place) into
    ``variant``; returns the conversion's report (``report.model`` is the converted model)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    entry = get_conversion(variant)
    return entry.convert(model.eval())


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

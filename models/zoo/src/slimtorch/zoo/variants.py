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
- **distilled**: a base architecture trained by one of :data:`DISTILLATION_RECIPES`, instances of
  core's :class:`~slimtorch.core.distillation.DistillConfig` (the training machinery is
  slimtorch-compress's ``Distiller``); published weights would carry the recipe's name as tag.
"""

from __future__ import annotations

from torch import nn

from slimtorch.core.conversions import ConversionReport
from slimtorch.core.distillation import DistillConfig
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


# The published distillation recipes: core's DistillConfig (one type for a distillation run;
# slimtorch.compress.distill.Distiller trains by it), keyed by the tag a distilled model carries.
DISTILLATION_RECIPES: dict[str, DistillConfig] = {
    recipe.name: recipe
    for recipe in (
        DistillConfig(
            "slim_mobilenetv2_050.kd_mobilenetv2_140",
            teacher="slim_mobilenetv2_140",
            student="slim_mobilenetv2_050",
            hint_layers=(("stages.3", "stages.3"),),
            attention_layers=(("stages.1", "stages.1"), ("stages.2", "stages.2"), ("stages.4", "stages.4")),
            epochs=150,
            notes="one FitNets hint mid-network (stride 16), attention transfer at strides 4, 8 and 16",
        ),
        DistillConfig(
            "slim_shufflenetv2_x0_5.kd_shufflenetv2_x2_0",
            teacher="slim_shufflenetv2_x2_0",
            student="slim_shufflenetv2_x0_5",
            hint_layers=(("stages.1", "stages.1"),),
            attention_layers=(("stages.0", "stages.0"), ("stages.1", "stages.1"), ("stages.2", "stages.2")),
            epochs=150,
            notes="hint on stage 3 (stride 16), attention transfer on the three stage outputs",
        ),
        DistillConfig(
            "slim_mobilenetv3_small_100.kd_mobilenetv3_large_100",
            teacher="slim_mobilenetv3_large_100",
            student="slim_mobilenetv3_small_100",
            temperature=2.0,
            attention_layers=(("stages.2", "stages.1"), ("stages.4", "stages.3"), ("final_conv", "final_conv")),
            epochs=150,
            notes="attention transfer where the resolutions meet (strides 8, 16, 32); no hint",
        ),
        DistillConfig(
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

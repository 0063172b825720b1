"""slimtorch.compress.distill: knowledge distillation (soft targets, FitNets hints, attention
transfer) and the :class:`Distiller` that trains a student against a teacher, in one process or
under DDP (torchrun), with resumable safetensors checkpoints."""

from slimtorch.compress.distill.distiller import DistillConfig, Distiller
from slimtorch.compress.distill.losses import (
    HintRegressor,
    attention_loss,
    attention_map,
    hint_loss,
    soft_target_loss,
)

__all__ = [
    "DistillConfig",
    "Distiller",
    "HintRegressor",
    "attention_loss",
    "attention_map",
    "hint_loss",
    "soft_target_loss",
]

"""slimtorch.compress.distill: knowledge distillation (soft targets, FitNets hints, attention
transfer) and the :class:`Distiller` that trains a student against a teacher, in one process or
under DDP (torchrun), with resumable safetensors checkpoints. A run is described by core's
:class:`~slimtorch.core.distillation.DistillConfig` (re-exported here), the type of the zoo's recipes."""

from slimtorch.compress.distill.distiller import Distiller
from slimtorch.compress.distill.losses import (
    HintRegressor,
    attention_loss,
    attention_map,
    hint_loss,
    soft_target_loss,
)
from slimtorch.core.distillation import DistillConfig

__all__ = [
    "DistillConfig",
    "Distiller",
    "HintRegressor",
    "attention_loss",
    "attention_map",
    "hint_loss",
    "soft_target_loss",
]

"""The one description of a knowledge-distillation run, shared by the zoo (its published recipes
are instances: ``slimtorch.zoo.DISTILLATION_RECIPES``) and slimtorch-compress (its ``Distiller``
trains by one). Data only; the training machinery is ``slimtorch.compress.distill``.

Loss per batch (Hinton, Vinyals, Dean 2015; Romero et al. 2015; Zagoruyko & Komodakis 2017)::

    alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha) · CE(student, labels)
      + hint_weight · Σ_hints mean((r(f_s) − f_t)²)           # FitNets: a 1x1 conv regressor r, L2
      + attention_weight · Σ_attention mean((a(f_s) − a(f_t))²)   # a(f) = vec(Σ_c f_c²) / ‖·‖₂

Layer pairs are ``(teacher module, student module)`` names whose outputs share their spatial size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DistillConfig:
    """How to train ``student`` from ``teacher`` (model names, optional for models built in code):
    the loss's knobs (module docstring) and the optimisation (Adam, ``lr``, ``batch_size``,
    ``epochs``, ``seed``). ``name`` is the tag a distilled model carries (``<student>.<tag>``)."""

    name: str = ""
    teacher: str | None = None
    student: str | None = None
    temperature: float = 4.0
    alpha: float = 0.9
    hint_layers: tuple[tuple[str, str], ...] = ()
    hint_weight: float = 1.0
    attention_layers: tuple[tuple[str, str], ...] = ()
    attention_weight: float = 1000.0
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    notes: str = ""

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature: expected a positive value, got {self.temperature!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha: expected a weight in [0, 1], got {self.alpha!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "epochs" else 1):
                raise ValueError(f"{name}: expected an int >= {0 if name == 'epochs' else 1}, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected a positive learning rate, got {self.lr!r}")
        for name in ("hint_layers", "attention_layers"):
            for pair in getattr(self, name):
                if len(pair) != 2 or not all(isinstance(p, str) for p in pair):
                    raise ValueError(f"{name}: expected (teacher module, student module) name pairs, got {pair!r}")

    def feature_shapes(
        self,
        input_size: tuple[int, ...] = (1, 3, 224, 224),
        create_model: Callable[[str], nn.Module] | None = None,
    ) -> dict[tuple[str, str], tuple]:
        """``{(teacher layer, student layer): (teacher shape, student shape)}`` for every hint and
        attention pair, from one forward of both models on the meta device (free). Models are
        built by name with ``create_model`` (default ``timm.create_model``, which needs timm)."""
        if self.teacher is None or self.student is None:
            raise ValueError("teacher, student: feature_shapes needs both model names")
        if create_model is None:
            import timm

            create_model = timm.create_model
        pairs = dict.fromkeys((*self.hint_layers, *self.attention_layers))
        outputs: dict[str, dict[str, tuple]] = {}
        for role, name, index in (("teacher", self.teacher, 0), ("student", self.student, 1)):
            with torch.device("meta"):
                model = create_model(name).eval()
            shapes: dict[str, tuple] = {}
            for layer in {pair[index] for pair in pairs}:
                model.get_submodule(layer).register_forward_hook(
                    lambda _m, _i, out, layer=layer, shapes=shapes: shapes.__setitem__(layer, out.shape)
                )
            with torch.no_grad():
                model(torch.zeros(input_size, device="meta"))
            outputs[role] = shapes
        return {pair: (outputs["teacher"][pair[0]], outputs["student"][pair[1]]) for pair in pairs}

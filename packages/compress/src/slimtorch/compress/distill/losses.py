"""Distillation losses (pure torch; each a function of tensors, checked against hand-computed values).

- Soft targets (Hinton, Vinyals, Dean 2015, *Distilling the Knowledge in a Neural Network*):
  ``alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) · CE(s, y)``, KL averaged over the
  batch (``batchmean``); T² keeps the soft gradients' scale independent of T.
- FitNets hints (Romero et al. 2015): a regressor ``r`` (1x1 convolution for feature maps, a linear
  layer for vectors) maps the student's feature to the teacher's channels;
  loss ``mean((r(f_s) − f_t)²)``.
- Attention transfer (Zagoruyko & Komodakis 2017), activation-based: ``a(f) = vec(Σ_c f_c²)``
  normalised to unit L2 norm per sample; loss ``mean_b mean_hw (a(f_s) − a(f_t))²``, the form of the
  authors' code, weighted by β (1000 in the paper) outside. Spatial sizes must match.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_target_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """Hinton's loss (module docstring); ``labels=None`` or ``alpha=1`` gives the soft term alone."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"teacher_logits: expected the student's shape {tuple(student_logits.shape)}, "
            f"got {tuple(teacher_logits.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature: expected a positive value, got {temperature!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a weight in [0, 1], got {alpha!r}")
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / t, dim=-1)
    soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t
    if labels is None or alpha == 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits.float(), labels)


class HintRegressor(nn.Module):
    """FitNets' regressor from the student's feature (C_s channels) to the teacher's (C_t)."""

    def __init__(self, student_channels: int, teacher_channels: int, *, spatial: bool = True):
        super().__init__()
        if spatial:
            self.proj: nn.Module = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
        else:
            self.proj = nn.Linear(student_channels, teacher_channels, bias=False)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.proj(feature)


def hint_loss(regressed: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNets: ``mean((r(f_s) − f_t)²)`` of the regressed student feature and the teacher's."""
    if regressed.shape != teacher_feature.shape:
        raise ValueError(
            f"teacher_feature: expected the regressed student feature's shape {tuple(regressed.shape)}, "
            f"got {tuple(teacher_feature.shape)}"
        )
    return F.mse_loss(regressed.float(), teacher_feature.detach().float())


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """``Σ_c f_c²`` flattened per sample and scaled to unit L2 norm: (B, C, H, W) -> (B, H·W)."""
    if feature.dim() != 4:
        raise ValueError(f"feature: expected a (B, C, H, W) feature map, got shape {tuple(feature.shape)}")
    return F.normalize(feature.float().pow(2).sum(1).flatten(1), dim=1)


def attention_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Attention transfer: ``mean((a(f_s) − a(f_t))²)`` (module docstring)."""
    if student_feature.shape[0] != teacher_feature.shape[0] or student_feature.shape[2:] != teacher_feature.shape[2:]:
        raise ValueError(
            f"teacher_feature: expected batch and spatial size of the student's {tuple(student_feature.shape)}, "
            f"got {tuple(teacher_feature.shape)}"
        )
    return (attention_map(student_feature) - attention_map(teacher_feature.detach())).pow(2).mean()

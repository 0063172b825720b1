"""Folding an eval BatchNorm into the convolution before it, pure torch.

Eval BatchNorm folds into a per-channel affine map: ``scale = γ / √(var + ε)``,
``shift = β − mean · scale``; folded into a convolution, ``w' = w · scale`` (per output channel)
and ``b' = b · scale + shift``.
"""

from __future__ import annotations

import torch
from torch import nn


def batchnorm_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode BatchNorm as ``(scale, shift)`` (float32, or float64 for float64 stats)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn: a BatchNorm without running statistics (track_running_stats=False) cannot be folded")
    dtype = torch.float64 if bn.running_var.dtype == torch.float64 else torch.float32
    var, mean = bn.running_var.detach().to(dtype), bn.running_mean.detach().to(dtype)
    gamma = torch.ones_like(var) if bn.weight is None else bn.weight.detach().to(dtype)
    beta = torch.zeros_like(var) if bn.bias is None else bn.bias.detach().to(dtype)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def fold_scale_shift(
    weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor, shift: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w · scale, b · scale + shift)`` per output channel (dim 0), in the weight's dtype."""
    if scale.shape != (weight.shape[0],) or shift.shape != (weight.shape[0],):
        raise ValueError(
            f"scale/shift: expected shape ({weight.shape[0]},) (the weight's output channels), "
            f"got {tuple(scale.shape)} and {tuple(shift.shape)}"
        )
    w = weight.detach().to(scale.dtype) * scale.view(-1, *([1] * (weight.dim() - 1)))
    b = shift if bias is None else bias.detach().to(scale.dtype) * scale + shift
    return w.to(weight.dtype), b.to(weight.dtype)

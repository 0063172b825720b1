"""The fixed index maps and parameter transforms of the convops layers, pure torch.

Channel shuffle (ShuffleNet, Zhang et al. 2018) with ``g`` groups views the C channels as a
(g, C/g) matrix and transposes it: output channel ``c`` reads input channel

    shuffle_source(c) = (c mod g) · (C/g) + ⌊c / g⌋

Its inverse is the shuffle with C/g groups. The kernels evaluate this formula in their index
maps (no permutation tensor, no copy); :func:`shuffle_permutation` gives it as a tensor.

Grouped shift (Wu et al. 2018, "Shift: A Zero FLOP, Zero Parameter Alternative to Spatial
Convolutions"): channel ``c`` of C belongs to group ``⌊c · k² / C⌋`` of the k² groups (sizes differ
by at most one), and group ``i`` samples its input at offset ``(dy, dx) = (⌊i/k⌋ − ⌊k/2⌋,
i mod k − ⌊k/2⌋)`` times the dilation. All shift ops read ``out[h, w] = x[h + dy, w + dx]``
(zero outside the image); offsets are stored as an int32 ``(C, 2)`` table of (dy, dx).

Eval BatchNorm folds into a per-channel affine map: ``scale = γ / √(var + ε)``,
``shift = β − mean · scale``; folded into a convolution, ``w' = w · scale`` (per output channel)
and ``b' = b · scale + shift``.
"""

from __future__ import annotations

import torch
from torch import nn

from slimtorch.core.checks import check_divisible, check_positive


def shuffle_permutation(channels: int, groups: int) -> torch.Tensor:
    """int64 ``(channels,)``: ``channel_shuffle(x, groups) == x[:, shuffle_permutation(C, groups)]``."""
    check_positive(groups, "groups")
    check_divisible(channels, groups, "channels (for channel shuffle groups)")
    c = torch.arange(channels)
    return (c % groups) * (channels // groups) + torch.div(c, groups, rounding_mode="floor")


def grouped_shift_offsets(channels: int, kernel_size: int = 3, dilation: int = 1) -> torch.Tensor:
    """int32 ``(channels, 2)`` (dy, dx) of the grouped shift over a ``kernel_size``² neighbourhood."""
    check_positive(channels, "channels")
    check_positive(dilation, "dilation")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: expected a positive odd int, got {kernel_size}")
    k2 = kernel_size * kernel_size
    group = torch.div(torch.arange(channels) * k2, channels, rounding_mode="floor")
    half = kernel_size // 2
    dy = torch.div(group, kernel_size, rounding_mode="floor") - half
    dx = group % kernel_size - half
    return (torch.stack([dy, dx], dim=1) * dilation).to(torch.int32)


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

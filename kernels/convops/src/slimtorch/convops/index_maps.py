"""The fixed index maps of the convops layers (channel shuffle, grouped shift), pure torch.

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
"""

from __future__ import annotations

import torch

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

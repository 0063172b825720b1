"""Pure-torch stand-ins for the ``slimtorch.convops`` layers the zoo is built on.

Only :mod:`slimtorch.zoo.blocks` imports this module. Each stand-in keeps the parameter names
and shapes of the convops layer it replaces (``weight`` of shape ``(out, in/groups, kh, kw)``
as in ``nn.Conv2d``, no other parameters or buffers), so a zoo ``state_dict`` loads unchanged
when ``blocks.py`` switches to convops; then this module can be deleted.

Layouts and maths (NCHW or channels_last, any float dtype):

- channel shuffle (Zhang et al. 2018, ShuffleNet): ``C = g·n`` channels seen as a ``g × n``
  matrix are transposed, ``out[:, j·g + i] = x[:, i·n + j]`` (torchvision's definition).
- grouped shift (Wu et al. 2018, "Shift: A Zero FLOP, Zero Parameter Alternative to Spatial
  Convolutions"): with ``k²`` groups of ``q = C // k²`` contiguous channels, channel
  ``c < k²·q`` of group ``t = c // q`` is shifted by ``(dy, dx) = (t // k − k//2, t % k − k//2)``,
  ``out[c, h, w] = x[c, h + dy, w + dx]`` (zero where that falls outside the image); the last
  ``C − k²·q`` channels pass unshifted (the centre shift), as in the authors' CUDA kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``out[:, j·groups + i] = x[:, i·(C/groups) + j]`` for an ``(N, C, H, W)`` tensor."""
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: channels ({c}) must be divisible by groups ({groups})")
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffledPointwiseConv2d(nn.Conv2d):
    """``y = grouped_1x1_conv(channel_shuffle(x, shuffle_groups))`` (convops folds the shuffle
    into the convolution's input read; here it is a separate reshape)."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, shuffle_groups: int, bias: bool = False):
        super().__init__(in_channels, out_channels, 1, groups=groups, bias=bias)
        self.shuffle_groups = shuffle_groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(channel_shuffle(x, self.shuffle_groups))


def check_shift_kernel(kernel_size: int) -> int:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: expected an odd shift neighbourhood >= 1, got {kernel_size}")
    return kernel_size


def grouped_shift(x: torch.Tensor, kernel_size: int, channels: int) -> torch.Tensor:
    """The grouped shift of the module docstring on ``x`` with ``channels`` channels: one
    zero-pad, then one slice per group (``channels`` is static: tracers see plain ints)."""
    k, r = kernel_size, kernel_size // 2
    group = channels // (k * k)
    if group == 0:
        return x.clone()
    height, width = x.shape[-2:]
    padded = F.pad(x, (r, r, r, r))
    parts = []
    for t in range(k * k):
        dy, dx = t // k - r, t % k - r
        channels = slice(t * group, (t + 1) * group)
        parts.append(padded[:, channels, r + dy : r + dy + height, r + dx : r + dx + width])
    parts.append(x[:, k * k * group :])
    return torch.cat(parts, dim=1)


class Shift2d(nn.Module):
    """Grouped shift of ``channels`` channels over a ``kernel_size × kernel_size`` neighbourhood:
    no parameters, no multiply-adds."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.channels = channels
        self.kernel_size = check_shift_kernel(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grouped_shift(x, self.kernel_size, self.channels)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"


class ShiftConv2d(nn.Conv2d):
    """Grouped shift of the input followed by a 1x1 convolution with ``stride``: the CSC module
    core. Its ``weight`` is the 1x1 kernel ``(out_channels, in_channels, 1, 1)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(in_channels, out_channels, 1, stride=stride, bias=False)
        self.shift_kernel_size = check_shift_kernel(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(grouped_shift(x, self.shift_kernel_size, self.in_channels))

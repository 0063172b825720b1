"""Back to plain torch: every convops layer replaced by standard torch modules computing the
same function, for exporters that cannot see through custom ops (ONNX) and for debugging.

    report = convops.to_torch_(model)      # core's conversion walk; report.model is the plain model
    torch.onnx.export(report.model.eval(), (x,), ...)

ONNX runtimes and TensorRT bring their own convolution kernels; what they need from us is the
function. The replacements use only ops every exporter knows:

- ``DepthwiseConv2d`` / ``GroupedPointwiseConv2d``: ``nn.Conv2d`` (+ activation module), the
  channel shuffles as :class:`TorchChannelShuffle` (reshape–transpose–reshape);
- ``ChannelShuffle`` / ``ShuffleConcat``: :class:`TorchChannelShuffle` / :class:`TorchShuffleConcat`;
- ``Shift2d``, ``SparseShift2d`` (integer offsets): :class:`TorchIntegerShift` — one zero pad,
  then one slice per run of consecutive channels sharing an offset, concatenated;
- ``ActiveShift2d``: :class:`TorchActiveShift` — bilinear ``grid_sample`` at (h + dy_c, w + dx_c);
- ``ShiftConv2d``: the shift above followed by its strided 1x1 ``nn.Conv2d``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.convops.layers import (
    ActiveShift2d,
    ChannelShuffle,
    DepthwiseConv2d,
    GroupedPointwiseConv2d,
    Shift2d,
    ShiftConv2d,
    ShuffleConcat,
    SparseShift2d,
)
from slimtorch.core.activations import activation_module
from slimtorch.core.conversions import ConversionConfig, ConversionReport, convert_model


class TorchChannelShuffle(nn.Module):
    """``out[:, j·g + i] = x[:, i·(C/g) + j]`` by reshape, transpose, reshape."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class TorchShuffleConcat(TorchChannelShuffle):
    """``channel_shuffle(cat([a, b], 1), groups)`` by cat then reshape–transpose–reshape."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.cat([a, b], dim=1))


class TorchIntegerShift(nn.Module):
    """``out[:, c, h, w] = x[:, c, h + dy_c, w + dx_c]`` (zero outside) for fixed integer offsets
    (C, 2): one pad by the largest |offset|, one slice per run of equal offsets."""

    def __init__(self, offsets: torch.Tensor):
        super().__init__()
        table = offsets.detach().to("cpu", torch.int64).tolist()
        self.pad = max([abs(v) for row in table for v in row], default=0)
        self.runs: list[tuple[int, int, int, int]] = []  # (first channel, end channel, dy, dx)
        for c, (dy, dx) in enumerate(table):
            if self.runs and self.runs[-1][2:] == (dy, dx) and self.runs[-1][1] == c:
                self.runs[-1] = (self.runs[-1][0], c + 1, dy, dx)
            else:
                self.runs.append((c, c + 1, dy, dx))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w, p = x.shape[2], x.shape[3], self.pad
        padded = F.pad(x, (p, p, p, p))
        parts = [padded[:, c0:c1, p + dy : p + dy + h, p + dx : p + dx + w] for c0, c1, dy, dx in self.runs]
        return torch.cat(parts, dim=1)


class TorchActiveShift(nn.Module):
    """Bilinear sampling of channel c at (h + dy_c, w + dx_c), zero outside, by ``grid_sample``."""

    def __init__(self, offsets: torch.Tensor):
        super().__init__()
        self.register_buffer("offsets", offsets.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        off = self.offsets.to(x.dtype)
        ys = torch.arange(h, dtype=x.dtype, device=x.device)[None, :, None] + off[:, 0, None, None]
        xs = torch.arange(w, dtype=x.dtype, device=x.device)[None, None, :] + off[:, 1, None, None]
        # align_corners=True: pixel i sits at 2i/(size-1) - 1 (a 1-pixel side maps to 0)
        gx = 2 * xs / max(w - 1, 1) - 1 + 0 * ys
        gy = 2 * ys / max(h - 1, 1) - 1 + 0 * xs
        grid = torch.stack([gx, gy], dim=-1).expand(n, c, h, w, 2).reshape(n * c, h, w, 2)
        out = F.grid_sample(x.reshape(n * c, 1, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out.reshape(n, c, h, w)


def _torch_shift(shift: nn.Module) -> nn.Module:
    if isinstance(shift, ActiveShift2d):
        return TorchActiveShift(shift.offsets)
    return TorchIntegerShift(shift.integer_offsets())


def _replacement(module: nn.Module) -> nn.Module | None:
    """The plain-torch module for one convops layer (None: not a convops layer)."""
    if isinstance(module, (DepthwiseConv2d, GroupedPointwiseConv2d)):
        dense = module.to_dense()
        if isinstance(dense, nn.Sequential):  # shuffles around the grouped conv
            return nn.Sequential(
                *[TorchChannelShuffle(m.groups) if isinstance(m, nn.ChannelShuffle) else m for m in dense]
            )
        return dense
    if isinstance(module, ChannelShuffle):
        return TorchChannelShuffle(module.groups)
    if isinstance(module, ShuffleConcat):
        return TorchShuffleConcat(module.groups)
    if isinstance(module, (Shift2d, SparseShift2d, ActiveShift2d)):
        return _torch_shift(module)
    if isinstance(module, ShiftConv2d):
        conv = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            1,
            module.stride,
            bias=module.bias is not None,
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
        conv.weight, conv.bias = module.weight, module.bias
        return nn.Sequential(_torch_shift(module.shift), conv, activation_module(module.activation))
    return None


@dataclasses.dataclass(frozen=True)
class _ToTorch(ConversionConfig):
    def convert_module(self, module: nn.Module, fqn: str, plan: object) -> nn.Module | None:
        return _replacement(module)


def to_torch_(model: nn.Module) -> ConversionReport:
    """Replace every convops layer in ``model`` (in place) by plain torch modules computing the
    same function; returns the report (``report.model``: a new object when ``model`` itself was a
    convops layer)."""
    return convert_model(model, _ToTorch(), conversion="to_torch_")

"""Model surgery shared by the conversion packages (the walk itself is :mod:`slimtorch.core.conversions`).

- :func:`replace_submodule` puts a module at a dotted name (loaders rebuilding saved layers).
- :func:`dense_linear` / :func:`conv_weight_as_linear` build the plain ``nn.Linear`` a compressed
  layer starts from or returns in ``to_dense()``.
- :class:`GemmConv2d` computes a groups=1 ``Conv2d`` with any GEMM module (a compressed linear
  layer of slimtorch.sparse or slimtorch.quant) over pixel rows, :func:`conv2d_as_gemm`:

      rows (B·Ho·Wo, C·kh·kw)  = channels-last pixels (1x1, no padding: strided by slicing)
                                 or F.unfold's patches, whose (C, kh, kw) order matches
                                 weight.reshape(N, C·kh·kw)
      y = gemm(rows)           → (B, N, Ho, Wo) in channels_last memory format
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair


def replace_submodule(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` at dotted ``name`` in ``model``; returns the root (``new`` itself when name is "")."""
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)
    return model


def conv2d_as_gemm(
    x: torch.Tensor,
    gemm: Callable[[torch.Tensor], torch.Tensor],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """``conv2d(x, W)`` for groups=1 as ``gemm(rows) = rows · Wᵀ (+ b)``, W as (N, C·kh·kw)."""
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"x: expected an (N, C, H, W) or (C, H, W) tensor, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if (kh, kw) == (1, 1) and (ph, pw) == (0, 0):
        rows = x[:, :, ::sh, ::sw].permute(0, 2, 3, 1).reshape(b * ho * wo, c)
    else:
        rows = F.unfold(x, (kh, kw), (dh, dw), (ph, pw), (sh, sw)).transpose(1, 2).reshape(b * ho * wo, c * kh * kw)
    y = gemm(rows)
    y = y.reshape(b, ho, wo, y.shape[-1]).permute(0, 3, 1, 2)
    return y.squeeze(0) if unbatched else y


def dense_linear(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype | None = None) -> nn.Linear:
    """An ``nn.Linear`` holding copies of ``weight`` (N, K) and ``bias`` (N,), in ``dtype``
    (default: the weight's)."""
    linear = nn.Linear(
        weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=dtype or weight.dtype
    )
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def gemm_conv_skip_reason(conv: nn.Conv2d) -> str | None:
    """Why :class:`GemmConv2d` cannot compute ``conv`` (None: it can)."""
    if conv.groups != 1:
        return (
            f"groups={conv.groups}: grouped/depthwise convolutions stay as they are (each group's K is tiny and "
            "the layer is bound by activation traffic)"
        )
    if isinstance(conv.padding, str) and conv.padding != "valid":
        return f"string padding {conv.padding!r} is not supported"
    if conv.padding_mode != "zeros":
        return f"padding_mode {conv.padding_mode!r} is not supported"
    return None


def conv_weight_as_linear(conv: nn.Conv2d) -> nn.Linear:
    """The nn.Linear (out_channels × in_channels·kh·kw) holding a groups=1 conv's weight and bias."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv: expected an nn.Conv2d, got {type(conv).__name__}")
    reason = gemm_conv_skip_reason(conv)
    if reason is not None:
        raise ValueError(f"conv: expected groups=1, numeric padding and padding_mode='zeros'; {reason}")
    return dense_linear(conv.weight.detach().reshape(conv.out_channels, -1), conv.bias)


class GemmConv2d(nn.Module):
    """A groups=1 Conv2d whose (N, C·kh·kw) weight lives in the GEMM module ``gemm`` (anything
    mapping rows (R, C·kh·kw) -> (R, N) with ``to_dense() -> nn.Linear``); see the module doc."""

    def __init__(
        self,
        gemm: nn.Module,
        in_channels: int,
        kernel_size: int | tuple[int, int] = 1,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
    ):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        in_features = getattr(gemm, "in_features", None)
        expected = in_channels * self.kernel_size[0] * self.kernel_size[1]
        if in_features is not None and in_features != expected:
            raise ValueError(
                f"gemm: expected in_features = in_channels·kh·kw = {in_channels}·{self.kernel_size[0]}·"
                f"{self.kernel_size[1]} = {expected}, got {in_features}"
            )
        self.gemm = gemm
        self.in_channels = in_channels

    @property
    def out_channels(self) -> int:
        return self.gemm.out_features

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, to_gemm: Callable[[nn.Linear], nn.Module]) -> GemmConv2d:
        """``to_gemm`` applied to the conv's weight as a Linear, e.g.
        ``GemmConv2d.from_dense(conv, SparseLinear24.from_dense)``."""
        padding = (0, 0) if conv.padding == "valid" else conv.padding
        return cls(
            to_gemm(conv_weight_as_linear(conv)),
            conv.in_channels,
            conv.kernel_size,
            conv.stride,
            padding,
            conv.dilation,
        )

    def conversion_source(self) -> str:
        return f"already converted: a convolution run by {type(self.gemm).__name__}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d_as_gemm(x, self.gemm, self.kernel_size, self.stride, self.padding, self.dilation)

    def to_dense(self) -> nn.Conv2d:
        linear = self.gemm.to_dense()
        conv = nn.Conv2d(
            self.in_channels,
            linear.out_features,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(linear.weight.reshape(conv.weight.shape))
            if linear.bias is not None:
                conv.bias.copy_(linear.bias)
        return conv

    def compressed_num_params(self) -> int:
        counter = getattr(self.gemm, "compressed_num_params", None)
        return int(counter()) if callable(counter) else sum(p.numel() for p in self.gemm.parameters())

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}"
        )

"""Memory formats and convolution geometry shared by the convops kernels (private).

Every convops op accepts NCHW (``torch.contiguous_format``) and NHWC (``torch.channels_last``)
tensors, and any other strides: kernels take the four strides of each tensor. The output takes
the memory format of the input (:func:`memory_format_of`); references and launchers both
allocate through these helpers so that fake (meta) and real outputs have the same strides.

Padding is carried internally as four ints ``(top, bottom, left, right)`` (asymmetric padding
is how the active shift's 2x2 bilinear stencil keeps the spatial size).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from slimtorch.core.dispatch import empty_output

# dtypes every convops op accepts. float64 runs the reference (there are no fp64 kernels); it
# exists for torch.autograd.gradcheck.
FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` when ``x`` is laid out NHWC (and not also plain contiguous), else
    ``contiguous_format``: the memory format every convops output inherits from its input."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def empty_in_format(
    shape: Sequence[int], memory_format: torch.memory_format, *, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """A (poisonable, see ``empty_output``) NCHW-shaped output laid out in ``memory_format``."""
    n, c, h, w = shape
    if memory_format == torch.channels_last:
        return empty_output((n, h, w, c), dtype=dtype, device=device).permute(0, 3, 1, 2)
    return empty_output((n, c, h, w), dtype=dtype, device=device)


def in_format(t: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``t`` laid out in ``memory_format`` (references end with this so strides match launchers)."""
    return t.contiguous(memory_format=memory_format)


def operand_or(t: torch.Tensor | None, placeholder: torch.Tensor) -> torch.Tensor:
    """A contiguous optional kernel operand, or a placeholder pointer the kernel never reads (its
    HAS_... flag is off)."""
    return placeholder if t is None else t.contiguous()


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """An int or a pair of ints as ``(h, w)``."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return value, value
    values = tuple(value)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    return values[0], values[1]


def padding4(padding: int | Sequence[int]) -> list[int]:
    """int, ``(h, w)`` or ``(top, bottom, left, right)`` -> ``[top, bottom, left, right]``."""
    if not isinstance(padding, int) and len(tuple(padding)) == 4:
        return [int(p) for p in padding]
    ph, pw = pair(padding, "padding")
    return [ph, ph, pw, pw]


def conv_output_size(size: int, kernel: int, stride: int, pad_lo: int, pad_hi: int, dilation: int) -> int:
    """Output length of a convolution along one axis (floor mode, as torch)."""
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def check_geometry(
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    *,
    input_hw: Sequence[int],
    kernel_hw: Sequence[int],
) -> tuple[int, int]:
    """Validate stride (2 positive ints), padding (4 non-negative ints), dilation (2 positive
    ints) against the input and kernel sizes; return the output ``(OH, OW)``."""
    if len(stride) != 2 or min(stride) < 1:
        raise ValueError(f"stride: expected 2 positive ints, got {list(stride)}")
    if len(dilation) != 2 or min(dilation) < 1:
        raise ValueError(f"dilation: expected 2 positive ints, got {list(dilation)}")
    if len(padding) != 4 or min(padding) < 0:
        raise ValueError(f"padding: expected 4 non-negative ints (top, bottom, left, right), got {list(padding)}")
    oh = conv_output_size(input_hw[0], kernel_hw[0], stride[0], padding[0], padding[1], dilation[0])
    ow = conv_output_size(input_hw[1], kernel_hw[1], stride[1], padding[2], padding[3], dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(
            f"x: spatial size {tuple(input_hw)} is too small for kernel {tuple(kernel_hw)} with dilation "
            f"{tuple(dilation)} and padding {tuple(padding)} (output would be {oh}x{ow})"
        )
    return oh, ow


# ----------------------------------------------------------------------------- vector widths and the (k, k, C) weights

VECTOR_BYTES = 16  # the widest global load/store (LDG.E.128 / STG.E.128)
KKC_CHANNEL_ALIGN = 16  # the (k, k, C) weight copy pads its channel rows to a multiple of this (64-byte fp32 rows)


def channel_vector(tensors: Sequence[torch.Tensor], channels: int) -> int:
    """Channels per vector access of NCHW-shaped ``tensors`` read/written along their channels: the
    largest power of two ``v`` (at most 16 bytes of the first tensor's elements) that divides
    ``channels`` and every stride except the (unit) channel stride of each tensor; 1 unless every
    tensor has contiguous channels (channels_last).

    A kernel that receives those strides divided by ``v`` and multiplies them back by the constexpr
    ``v`` lets the compiler prove that every pixel's channel run starts ``v``-aligned (the runtime
    only marks values divisible by 16), so C = 72 (v = 8, fp16) loads 16-byte vectors, 116 (v = 4)
    8-byte ones and 58 (v = 2) 4-byte ones; the channel tail is masked in whole vectors
    (``channels`` is ``v``-divisible). Pointer alignment stays Triton's own 16-byte test."""
    if not tensors:
        raise ValueError("tensors: expected at least one tensor")
    if any(t.dim() != 4 or t.stride(1) != 1 for t in tensors):
        return 1
    v = max(VECTOR_BYTES // tensors[0].element_size(), 1)
    while v > 1 and (channels % v or any(s % v for t in tensors for i, s in enumerate(t.stride()) if i != 1)):
        v //= 2
    return v


def depthwise_weight_kkc(weight: torch.Tensor) -> torch.Tensor:
    """A torch depthwise weight (C, 1, KH, KW) as the kernels' fp32 (KH, KW, C_pad) copy: one row of
    channels per tap, channels contiguous, zero-padded to a multiple of ``KKC_CHANNEL_ALIGN`` (so every
    tap row starts 64-byte aligned and loads as 16-byte vectors for any C), converted to fp32 once
    (exact from fp16/bf16/fp32; the kernels accumulate in fp32). Not differentiable: the ops take the
    (C, 1, KH, KW) parameter for autograd and this copy only to read it."""
    if weight.dim() != 4 or weight.shape[1] != 1:
        raise ValueError(f"weight: expected a depthwise weight (C, 1, kh, kw), got shape {tuple(weight.shape)}")
    c, _, kh, kw = weight.shape
    c_pad = -(-c // KKC_CHANNEL_ALIGN) * KKC_CHANNEL_ALIGN
    kkc = torch.zeros((kh, kw, c_pad), dtype=torch.float32, device=weight.device)
    kkc[:, :, :c] = weight.detach()[:, 0].permute(1, 2, 0)
    return kkc


def depthwise_weight_from_kkc(kkc: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of :func:`depthwise_weight_kkc`: (KH, KW, C_pad) -> (channels, 1, KH, KW) in ``dtype``."""
    if kkc.dim() != 3 or not 0 < channels <= kkc.shape[2]:
        raise ValueError(f"kkc: expected (kh, kw, C_pad >= {channels}), got shape {tuple(kkc.shape)}")
    return kkc[:, :, :channels].permute(2, 0, 1).unsqueeze(1).to(dtype).contiguous()

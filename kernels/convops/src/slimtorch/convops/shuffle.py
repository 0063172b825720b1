"""Channel shuffle (ShuffleNet V1, Zhang et al. 2018) and ShuffleNet V2's concat + shuffle
(Ma et al. 2018) as one Triton gather pass.

Math: with ``g`` groups over C channels, output channel ``c`` reads input channel

    src(c) = (c mod g) · (C/g) + ⌊c / g⌋           (view (g, C/g), transpose, flatten)

``shuffle_concat(a, b, g) = channel_shuffle(cat([a, b], 1), g)`` reads the virtual concatenation
(channels ``< C_a`` from ``a``, the rest from ``b``) without materialising it; with g = 2 and
C_a = C_b it interleaves a and b (ShuffleNet V2 unit). The inverse of a shuffle with g groups is
the shuffle with C/g groups (the backward pass).

Layout: any strides; a program copies a [BLOCK_P pixels × BLOCK_C channels] tile of one image,
vectorised along the output's contiguous dimension (C for channels_last, W for NCHW). The output
takes the memory format of the (first) input. Autotune key (``slimtorch.core.gemm``): C,
H·W bucketed and the layout.
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from slimtorch.convops._layout import FLOAT_DTYPES, empty_in_format, in_format, memory_format_of
from slimtorch.convops._tiles import image_grid, image_tile
from slimtorch.core.checks import check_divisible, check_positive, check_same_device, check_same_dtype, check_tensor
from slimtorch.core.gemm import layout_key, m_bucket
from slimtorch.core.library import kernel_op
from slimtorch.core.tuning import autotune_configs

_GATHER_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 32}, num_warps=4),
        triton.Config({"BLOCK_P": 16, "BLOCK_C": 128}, num_warps=4),
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 8}, num_warps=4),
        triton.Config({"BLOCK_P": 256, "BLOCK_C": 4}, num_warps=4),
    ]
)


@triton.autotune(configs=_GATHER_CONFIGS, key=["C", "HW_BUCKET", "LAYOUT"])
@triton.jit
def _channel_gather_kernel(
    a_ptr, b_ptr, y_ptr,
    C_A, C, HW, W, groups, HW_BUCKET, LAYOUT,
    san, sac, sah, saw, sbn, sbc, sbh, sbw, syn, syc, syh, syw,
    HAS_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    n, h, w, p_ok, c, c_ok = image_tile(HW, W, C, BLOCK_P, BLOCK_C)
    h = h[:, None]
    w = w[:, None]
    ok = p_ok[:, None] & c_ok[None, :]
    src = ((c % groups) * (C // groups) + c // groups)[None, :]
    from_a = src < C_A
    v = tl.load(a_ptr + n * san + src * sac + h * sah + w * saw, mask=ok & from_a, other=0.0)
    if HAS_B:
        vb = tl.load(b_ptr + n * sbn + (src - C_A) * sbc + h * sbh + w * sbw, mask=ok & (src >= C_A), other=0.0)
        v = tl.where(from_a, v, vb)
    tl.store(y_ptr + n * syn + c[None, :] * syc + h * syh + w * syw, v, mask=ok)


def _check_channel_shuffle(x: torch.Tensor, groups: int) -> None:
    check_tensor(x, "x", ndim=4, dtype=FLOAT_DTYPES)
    check_positive(groups, "groups")
    check_divisible(x.shape[1], groups, "x channels (for channel shuffle groups)")


def _check_shuffle_concat(a: torch.Tensor, b: torch.Tensor, groups: int) -> None:
    check_tensor(a, "a", ndim=4, dtype=FLOAT_DTYPES)
    check_tensor(b, "b", ndim=4, dtype=FLOAT_DTYPES)
    check_same_dtype(a=a, b=b)
    check_same_device(a=a, b=b)
    if a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError(
            f"b: expected shape (N={a.shape[0]}, *, H={a.shape[2]}, W={a.shape[3]}) (a's), got {tuple(b.shape)}"
        )
    check_positive(groups, "groups")
    check_divisible(a.shape[1] + b.shape[1], groups, "a + b channels (for channel shuffle groups)")


def _gather(a: torch.Tensor, b: Optional[torch.Tensor], groups: int) -> torch.Tensor:
    n, c_a, h, w = a.shape
    c = c_a + (0 if b is None else b.shape[1])
    y = empty_in_format((n, c, h, w), memory_format_of(a), dtype=a.dtype, device=a.device)
    if y.numel() == 0:
        return y

    other = a if b is None else b
    _channel_gather_kernel[image_grid(n, h * w, c)](
        a, other, y,
        c_a, c, h * w, w, groups, m_bucket(h * w), layout_key(a, y),
        *a.stride(), *other.stride(), *y.stride(),
        HAS_B=b is not None,
    )  # fmt: skip
    return y


@kernel_op("slimtorch::channel_shuffle", reference="channel_shuffle_reference", check=_check_channel_shuffle)
def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``x.view(N, g, C/g, H, W).transpose(1, 2)`` flattened back to (N, C, H, W) in one pass;
    output in x's memory format. Trains (the backward is the shuffle with C/g groups)."""
    return _gather(x, None, groups)


@kernel_op("slimtorch::shuffle_concat", reference="shuffle_concat_reference", check=_check_shuffle_concat)
def shuffle_concat(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    """``channel_shuffle(torch.cat([a, b], 1), groups)`` in one pass (no concatenated copy);
    output in a's memory format. Trains."""
    return _gather(a, b, groups)


def _setup_shuffle(ctx, inputs, output) -> None:
    ctx.groups = inputs[1]


def _shuffle_backward(ctx, grad):
    return channel_shuffle(grad, grad.shape[1] // ctx.groups), None


def _setup_concat(ctx, inputs, output) -> None:
    ctx.c_a, ctx.groups = inputs[0].shape[1], inputs[2]


def _concat_backward(ctx, grad):
    unshuffled = channel_shuffle(grad, grad.shape[1] // ctx.groups)
    return unshuffled[:, : ctx.c_a], unshuffled[:, ctx.c_a :], None


channel_shuffle.register_autograd(_shuffle_backward, setup_context=_setup_shuffle)
shuffle_concat.register_autograd(_concat_backward, setup_context=_setup_concat)


def channel_split(x: torch.Tensor, parts: int = 2) -> tuple[torch.Tensor, ...]:
    """ShuffleNet V2's channel split: ``parts`` equal channel slices, as views (no copy)."""
    check_divisible(x.shape[1], parts, "x channels (for channel split)")
    return tuple(x.chunk(parts, dim=1))


def channel_shuffle_reference(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    if groups in (1, c) or x.numel() == 0:  # the identity (or empty): a fresh copy, never a view of x
        return x.clone(memory_format=memory_format_of(x))
    y = x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)  # the one copy
    return in_format(y, memory_format_of(x))


def shuffle_concat_reference(a: torch.Tensor, b: torch.Tensor, groups: int) -> torch.Tensor:
    return in_format(channel_shuffle_reference(torch.cat([a, b], 1), groups), memory_format_of(a))

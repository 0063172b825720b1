"""Channel shuffle (ShuffleNet V1, Zhang et al. 2018) and ShuffleNet V2's concat + shuffle
(Ma et al. 2018) as one Triton gather pass.

Math: with ``g`` groups over C channels, output channel ``c`` reads input channel

    src(c) = (c mod g) · (C/g) + ⌊c / g⌋           (view (g, C/g), transpose, flatten)

``shuffle_concat(a, b, g) = channel_shuffle(cat([a, b], 1), g)`` reads the virtual concatenation
(channels ``< C_a`` from ``a``, the rest from ``b``) without materialising it; with g = 2 and
C_a = C_b it interleaves a and b (ShuffleNet V2 unit). The inverse of a shuffle with g groups is
the shuffle with C/g groups (the backward pass).

Layout: any strides; the output takes the memory format of the (first) input. A program copies
BLOCK_H × BLOCK_W pixels (``_tiles.pixel_tile``) of one image:

- groups = 2 over two equal halves (ShuffleNet V2's concat + shuffle, and ``channel_shuffle(x, 2)``,
  whose halves are x's two channel halves): output channels 2j, 2j+1 are a[j], b[j]; both halves load
  BLOCK_J consecutive channels as vectors, ``tl.interleave`` pairs them in registers and the 2·BLOCK_J
  output channels store as vectors (``_interleave_kernel``);
- any other groups: a per-element gather from src(c), stored as vectors (``_channel_gather_kernel``).

Vector widths for any C: with contiguous channels every stride but the channel stride is passed
divided by the channel vector (``_layout.channel_vector``) and multiplied back by the constexpr, as
in ``slimtorch.convops.depthwise``. Autotune key (``slimtorch.core.gemm``): C, H·W bucketed, the
layout and the vector widths.
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from slimtorch.convops._layout import FLOAT_DTYPES, channel_vector, empty_in_format, in_format, memory_format_of
from slimtorch.convops._tiles import pixel_grid, pixel_tile
from slimtorch.core.checks import check_divisible, check_positive, check_same_device, check_same_dtype, check_tensor
from slimtorch.core.gemm import layout_key, m_bucket
from slimtorch.core.library import kernel_op
from slimtorch.core.tuning import autotune_configs

# Tiles: BLOCK_H × BLOCK_W pixels × BLOCK_C channels (2·BLOCK_J output channels for the interleave).
# The first config is the interpreter's (core.tuning).
_GATHER_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_H": 4, "BLOCK_W": 8, "BLOCK_C": 32}, num_warps=4),
        triton.Config({"BLOCK_H": 2, "BLOCK_W": 8, "BLOCK_C": 128}, num_warps=4),
        triton.Config({"BLOCK_H": 4, "BLOCK_W": 8, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_H": 8, "BLOCK_W": 16, "BLOCK_C": 8}, num_warps=4),
        triton.Config({"BLOCK_H": 16, "BLOCK_W": 16, "BLOCK_C": 4}, num_warps=4),
    ]
)
_INTERLEAVE_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_H": 4, "BLOCK_W": 8, "BLOCK_J": 16}, num_warps=4),
        triton.Config({"BLOCK_H": 4, "BLOCK_W": 8, "BLOCK_J": 32}, num_warps=4),
        triton.Config({"BLOCK_H": 2, "BLOCK_W": 8, "BLOCK_J": 64}, num_warps=4),
        triton.Config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_J": 16}, num_warps=4),
        triton.Config({"BLOCK_H": 4, "BLOCK_W": 8, "BLOCK_J": 64}, num_warps=8),
    ]
)


@triton.autotune(configs=_GATHER_CONFIGS, key=["C", "HW_BUCKET", "LAYOUT", "VEC"])
@triton.jit
def _channel_gather_kernel(
    a_ptr, b_ptr, y_ptr,
    C_A, C, C_VECS, H, W, groups, HW_BUCKET, LAYOUT,
    san, sac, sah, saw, sbn, sbc, sbh, sbw, syn, syc, syh, syw,
    HAS_B: tl.constexpr, VEC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # any groups: a per-element gather from src(c); the output strides (but its channel stride) arrive
    # divided by VEC, multiplied back here, so the stores are VEC-wide (channels_last)
    n, h, w, p_ok, c, c_ok = pixel_tile(H, W, C_VECS * VEC, BLOCK_H, BLOCK_W, BLOCK_C)
    h = h[:, None]
    w = w[:, None]
    ok = p_ok[:, None] & c_ok[None, :]
    src = ((c % groups) * (C // groups) + c // groups)[None, :]
    from_a = src < C_A
    v = tl.load(a_ptr + n * san + src * sac + h * sah + w * saw, mask=ok & from_a, other=0.0)
    if HAS_B:
        vb = tl.load(b_ptr + n * sbn + (src - C_A) * sbc + h * sbh + w * sbw, mask=ok & (src >= C_A), other=0.0)
        v = tl.where(from_a, v, vb)
    tl.store(y_ptr + n * (syn * VEC) + c[None, :] * syc + h * (syh * VEC) + w * (syw * VEC), v, mask=ok)


@triton.autotune(configs=_INTERLEAVE_CONFIGS, key=["C_HALF", "HW_BUCKET", "LAYOUT", "VEC_IN", "VEC_OUT"])
@triton.jit
def _interleave_kernel(
    a_ptr, b_ptr, y_ptr,
    C_HALF, C_HALF_VECS, B_START_VECS, H, W, HW_BUCKET, LAYOUT,
    san, sac, sah, saw, sbn, sbc, sbh, sbw, syn, syc, syh, syw,
    VEC_IN: tl.constexpr, VEC_OUT: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    # groups = 2 over two equal halves a, b (channels [0, C/2) and [C/2, C)): y[2j] = a[j], y[2j+1] = b[j].
    # Both halves load as VEC_IN-wide vectors of consecutive channels, tl.interleave pairs them in registers
    # and the 2·BLOCK_J consecutive output channels store VEC_OUT-wide. Every stride but the channel
    # strides (and b's start, in channels, within its tensor) arrives divided by its VEC.
    n, h, w, p_ok, j, j_ok = pixel_tile(H, W, C_HALF_VECS * VEC_IN, BLOCK_H, BLOCK_W, BLOCK_J)
    h = h[:, None]
    w = w[:, None]
    ok = p_ok[:, None] & j_ok[None, :]
    a_pix = a_ptr + n * (san * VEC_IN) + h * (sah * VEC_IN) + w * (saw * VEC_IN)
    b_pix = b_ptr + B_START_VECS * VEC_IN * sbc + n * (sbn * VEC_IN) + h * (sbh * VEC_IN) + w * (sbw * VEC_IN)
    va = tl.load(a_pix + j[None, :] * sac, mask=ok, other=0.0)
    vb = tl.load(b_pix + j[None, :] * sbc, mask=ok, other=0.0)
    v = tl.interleave(va, vb)  # (pixels, 2·BLOCK_J): v[:, 2i] = va[:, i], v[:, 2i + 1] = vb[:, i]
    c = 2 * tl.program_id(1) * BLOCK_J + tl.arange(0, 2 * BLOCK_J)
    c_ok = c < 2 * (C_HALF_VECS * VEC_IN)
    y_pix = y_ptr + n * (syn * VEC_OUT) + h * (syh * VEC_OUT) + w * (syw * VEC_OUT)
    tl.store(y_pix + c[None, :] * syc, v, mask=p_ok[:, None] & c_ok[None, :])


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


def _vec_strides(t: torch.Tensor, vec: int) -> list[int]:
    """t's strides, all but the channel stride divided by ``vec`` (the kernels multiply them back)."""
    return [s if i == 1 else s // vec for i, s in enumerate(t.stride())]


def _gather(a: torch.Tensor, b: Optional[torch.Tensor], groups: int) -> torch.Tensor:
    n, c_a, h, w = a.shape
    c = c_a + (0 if b is None else b.shape[1])
    y = empty_in_format((n, c, h, w), memory_format_of(a), dtype=a.dtype, device=a.device)
    if y.numel() == 0:
        return y
    other = a if b is None else b
    half = c // 2
    if groups == 2 and c_a == (half if b is not None else c) and c % 2 == 0:  # ShuffleNet V2: interleave halves
        vec_in = channel_vector((a, other), half) if b is not None else channel_vector((a,), half)
        vec_out = channel_vector((y,), c)
        b_start = 0 if b is not None else half  # channel_shuffle: b is the second half of a
        _interleave_kernel[pixel_grid(n, h, w, half, "BLOCK_J")](
            a, other, y,
            half, half // vec_in, b_start // vec_in, h, w, m_bucket(h * w), layout_key(a, y),
            *_vec_strides(a, vec_in), *_vec_strides(other, vec_in), *_vec_strides(y, vec_out),
            VEC_IN=vec_in, VEC_OUT=vec_out,
        )  # fmt: skip
        return y
    vec = channel_vector((y,), c)
    _channel_gather_kernel[pixel_grid(n, h, w, c)](
        a, other, y,
        c_a, c, c // vec, h, w, groups, m_bucket(h * w), layout_key(a, y),
        *a.stride(), *other.stride(), *_vec_strides(y, vec),
        HAS_B=b is not None, VEC=vec,
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

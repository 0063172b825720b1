"""Depthwise conv2d and the per-channel spatial ops built on it: Triton forward with a fused
epilogue, input gradient and weight gradient.

Math (N images, C input channels, channel multiplier M, C·M output channels, kernel KH×KW,
stride (sh, sw), padding (top pt, left pl), dilation (dh, dw)):

    z[n, co, oh, ow] = Σ_{kh,kw} w[co, 0, kh, kw] · x[n, ci, oh·sh − pt + kh·dh + dy[ci], ow·sw − pl + kw·dw + dx[ci]]
    ci = ⌊co / M⌋,  x = 0 outside the image
    y = act(z · scale[co] + shift[co])            (slimtorch.core.gemm.store_tile; torch side: ._epilogue)

(dy, dx) are optional per-input-channel offsets (int32 (C, 2), default 0). Without them this is
torch's conv2d(groups=C) (Howard et al. 2017, MobileNets); with them the shift ops of
slimtorch.convops.shift are depthwise convs: an integer shift is a 1x1 conv without weight
(``weight=None``), an active shift a 2x2 bilinear stencil.

Backward:

    grad_x[n, ci, ih, iw] = Σ_{m<M, kh, kw} g[n, ci·M+m, oh, ow] · w[ci·M+m, 0, kh, kw]
        over oh·sh = ih + pt − kh·dh − dy[ci] (exactly divisible, 0 ≤ oh < OH), likewise ow
    grad_w[co, 0, kh, kw] = Σ_{n, oh, ow} g[n, co, oh, ow] · x[n, ci, oh·sh − pt + kh·dh + dy[ci], …]

grad_x is a gather over the taps (no atomics); grad_w a per-channel reduction over N·OH·OW, split-K
across programs (slimtorch.core.gemm: fp32 partials (splits × taps × C) that the last split of each
channel tile sums in order, in the same launch: deterministic).

Layout: any strides (NCHW, NHWC = channels_last, or other); the output takes the input's memory
format; fp32 accumulation. The forward, tuned for channels_last:

- tiles: a program owns BLOCK_H × BLOCK_W output pixels (a 2-D block: a k×k stencil reads its
  (BLOCK_H+k−1)(BLOCK_W+k−1) halo once, from L1) × BLOCK_C channels of one image
  (``_tiles.pixel_tile``; the block's rows and columns are shifts and masks of constexprs);
- weights: the (C·M, 1, KH, KW) parameter stays torch's (state_dicts, timm); the kernel reads an
  fp32 (KH, KW, C_pad) copy (``_layout.depthwise_weight_kkc``: one zero-padded row of channels per tap,
  C_pad a multiple of 16), so a tap's weights for a thread's channels are one or two 16-byte loads
  shared by all its pixels (not one scalar load per channel and tap). ``DepthwiseConv2d`` caches the
  copy (keyed on the weight's storage and version counter); the launcher derives it when not given;
- vectors: with contiguous channels, every stride but the channel stride is passed divided by VEC
  (``_layout.channel_vector``: the largest power of two ≤ 16 bytes dividing C and the strides) and
  multiplied back by the constexpr VEC, so the compiler proves each pixel's channel run VEC-aligned
  for any C (the runtime marks only multiples of 16): C = 72, 120, 144, 232 in fp16 load and store
  16 bytes, 116 8 bytes, 58 4 bytes (a 116-byte pixel pitch admits no wider access); the channel
  tail is masked in whole vectors. NCHW gets VEC = 1 (W is contiguous, taps shift it by one).

On a GPU the op runs our kernel or cuDNN (F.conv2d(groups=C) + the epilogue in torch), whichever
measured faster for the shape bucket (``slimtorch.core.measured``; ``depthwise_conv2d.launcher`` is
always our kernel). The input-gradient kernel tiles 1-D runs of BLOCK_P pixels; the weight
gradient reads (C·M, 1, KH, KW) weights' shape only. Kernel sizes 1..MAX_KERNEL_SIZE (the tap loops
are unrolled). Autotune keys (``slimtorch.core.gemm``): the sizes bucketed (``*_BUCKET``) and the
layout, so a new batch size or resolution in the same bucket reuses the tuned config.
"""

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from slimtorch.convops._epilogue import epilogue_backward, epilogue_reference, is_identity
from slimtorch.convops._layout import (
    FLOAT_DTYPES,
    KKC_CHANNEL_ALIGN,
    channel_vector,
    check_geometry,
    depthwise_weight_kkc,
    empty_in_format,
    in_format,
    memory_format_of,
    operand_or,
)
from slimtorch.convops._tiles import image_grid, image_tile, pixel_grid, pixel_tile
from slimtorch.core import measured
from slimtorch.core.activations import ACTIVATIONS
from slimtorch.core.checks import check_choice, check_same_device, check_tensor
from slimtorch.core.dispatch import empty_output
from slimtorch.core.gemm import (
    layout_key,
    m_bucket,
    max_tiles,
    plan_split_k,
    sm_count,
    splitk_counters,
    splitk_partials,
    store_splitk,
    store_tile,
)
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import cast, compute_dtype
from slimtorch.core.tuning import autotune_configs

MAX_KERNEL_SIZE = 11

# Weight-gradient split-K (unmeasured until a GPU run): each split reduces at least this many output
# pixels, at most this many splits; the split count fills the GPU (core.gemm.plan_split_k).
_GRAD_WEIGHT_MIN_PIXELS = 2048
_GRAD_WEIGHT_MAX_SPLIT = 512

# Forward tiles: BLOCK_H × BLOCK_W output pixels × BLOCK_C channels. Channel-wide ones for channels_last
# (C contiguous: a warp covers BLOCK_C / VEC vectors of a pixel), pixel-wide ones for NCHW (W contiguous).
# The first is the interpreter's (core.tuning) and must be right for every shape. (2 × 4 × 128, 4 warps: dropped,
# never the best on sm_90a with triton 3.9 and 2 spill instructions with 3.6 on ShuffleNetV2's C58 stride 2.)
_FWD_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_H": 4, "BLOCK_W": 8, "BLOCK_C": 32}, num_warps=4),
        triton.Config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_C": 32}, num_warps=4),
        triton.Config({"BLOCK_H": 4, "BLOCK_W": 8, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_H": 4, "BLOCK_W": 4, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_C": 16}, num_warps=2),
        triton.Config({"BLOCK_H": 8, "BLOCK_W": 16, "BLOCK_C": 8}, num_warps=2),
        triton.Config({"BLOCK_H": 8, "BLOCK_W": 16, "BLOCK_C": 16}, num_warps=4),
        triton.Config({"BLOCK_H": 8, "BLOCK_W": 8, "BLOCK_C": 64}, num_warps=8),
    ]
)
# Input-gradient tiles (1-D pixel runs, slimtorch.convops._tiles.image_tile).
_SPATIAL_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 32}, num_warps=4),
        triton.Config({"BLOCK_P": 16, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 32}, num_warps=4),
        triton.Config({"BLOCK_P": 8, "BLOCK_C": 128}, num_warps=4),
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 64}, num_warps=8),
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 8}, num_warps=4),
        triton.Config({"BLOCK_P": 256, "BLOCK_C": 4}, num_warps=4),
    ]
)
_GRAD_WEIGHT_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 32}, num_warps=4),
        triton.Config({"BLOCK_P": 64, "BLOCK_C": 32}, num_warps=4),
        triton.Config({"BLOCK_P": 32, "BLOCK_C": 64}, num_warps=4),
        triton.Config({"BLOCK_P": 128, "BLOCK_C": 16}, num_warps=4),
    ]
)


@triton.autotune(configs=_FWD_CONFIGS, key=["N_BUCKET", "C_OUT", "OH_BUCKET", "OW_BUCKET", "LAYOUT", "VEC"])
@triton.jit
def _depthwise_fwd_kernel(
    x_ptr, w_ptr, scale_ptr, shift_ptr, off_ptr, y_ptr,
    N, H, W, C_OUT, C_VECS, W_ROW, OH, OW, N_BUCKET, OH_BUCKET, OW_BUCKET, LAYOUT,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    PAD_T, PAD_L,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    MULT: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr,
    HAS_OFFSETS: tl.constexpr, ACTIVATION: tl.constexpr, VEC: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # program = (image n, BLOCK_H × BLOCK_W block of output pixels) × BLOCK_C output channels.
    # Every stride but the channel strides arrives divided by VEC and C_OUT as C_VECS vectors: multiplied
    # back by the constexpr VEC, the compiler knows each pixel's channel run (and the channel mask) is
    # VEC-aligned and issues VEC-wide loads/stores (channels_last; VEC = 1 otherwise).
    n, oh, ow, p_ok, co, c_ok = pixel_tile(OH, OW, C_VECS * VEC, BLOCK_H, BLOCK_W, BLOCK_C)
    ci = co // MULT
    ih0 = (oh * SH - PAD_T)[:, None]
    iw0 = (ow * SW - PAD_L)[:, None]
    if HAS_OFFSETS:
        ih0 = ih0 + tl.load(off_ptr + 2 * ci, mask=c_ok, other=0)[None, :]
        iw0 = iw0 + tl.load(off_ptr + 2 * ci + 1, mask=c_ok, other=0)[None, :]
    tile_ok = p_ok[:, None] & c_ok[None, :]
    x_base = x_ptr + n * (sxn * VEC) + ci[None, :] * sxc
    w_ok = co < W_ROW  # the (KH, KW, W_ROW) fp32 weight rows are zero-padded to a multiple of 16 channels
    acc = tl.zeros((BLOCK_H * BLOCK_W, BLOCK_C), dtype=tl.float32)
    for kh in tl.static_range(KH):
        ih = ih0 + kh * DH
        row_ok = tile_ok & (ih >= 0) & (ih < H)
        x_row = x_base + ih * (sxh * VEC)
        for kw in tl.static_range(KW):
            iw = iw0 + kw * DW
            ok = row_ok & (iw >= 0) & (iw < W)
            v = tl.load(x_row + iw * (sxw * VEC), mask=ok, other=0.0).to(tl.float32)
            if HAS_WEIGHT:  # one vector of the tap's channel row, shared by the tile's pixels
                wv = tl.load(w_ptr + (kh * KW + kw) * W_ROW + co, mask=w_ok, other=0.0)
                v = v * wv[None, :]
            acc += v
    y_ptrs = y_ptr + n * (syn * VEC) + co[None, :] * syc + (oh * (syh * VEC))[:, None] + (ow * (syw * VEC))[:, None]
    store_tile(acc, y_ptrs, tile_ok, co, c_ok, scale_ptr, shift_ptr, HAS_SCALE, HAS_SHIFT, ACTIVATION)


@triton.autotune(configs=_SPATIAL_CONFIGS, key=["N_BUCKET", "C_IN", "H_BUCKET", "W_BUCKET", "LAYOUT"])
@triton.jit
def _depthwise_grad_input_kernel(
    g_ptr, w_ptr, off_ptr, dx_ptr,
    N, H, W, C_IN, OH, OW, N_BUCKET, H_BUCKET, W_BUCKET, LAYOUT,
    sgn, sgc, sgh, sgw, sdn, sdc, sdh, sdw,
    PAD_T, PAD_L,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    MULT: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_OFFSETS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # program = (image n, input-pixel tile) × input-channel tile; gathers every output tap that read it
    n, ih, iw, p_ok, ci, c_ok = image_tile(H * W, W, C_IN, BLOCK_P, BLOCK_C)
    th0 = (ih + PAD_T)[:, None]
    tw0 = (iw + PAD_L)[:, None]
    if HAS_OFFSETS:
        th0 = th0 - tl.load(off_ptr + 2 * ci, mask=c_ok, other=0)[None, :]
        tw0 = tw0 - tl.load(off_ptr + 2 * ci + 1, mask=c_ok, other=0)[None, :]
    tile_ok = p_ok[:, None] & c_ok[None, :]
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for m in tl.static_range(MULT):
        co = ci * MULT + m
        g_base = g_ptr + n * sgn + co[None, :] * sgc
        for kh in tl.static_range(KH):
            th = th0 - kh * DH  # = oh·SH where an output row read this input row
            oh = th // SH
            row_ok = tile_ok & (th >= 0) & (oh < OH)
            if SH > 1:
                row_ok = row_ok & (th % SH == 0)
            for kw in tl.static_range(KW):
                tw = tw0 - kw * DW
                ow = tw // SW
                ok = row_ok & (tw >= 0) & (ow < OW)
                if SW > 1:
                    ok = ok & (tw % SW == 0)
                v = tl.load(g_base + oh * sgh + ow * sgw, mask=ok, other=0.0).to(tl.float32)
                if HAS_WEIGHT:
                    wv = tl.load(w_ptr + co * (KH * KW) + (kh * KW + kw), mask=c_ok, other=0.0).to(tl.float32)
                    v = v * wv[None, :]
                acc += v
    dx_ptrs = dx_ptr + n * sdn + ci[None, :] * sdc + ih[:, None] * sdh + iw[:, None] * sdw
    store_tile(acc, dx_ptrs, tile_ok, ci, c_ok, dx_ptr, dx_ptr, False, False, "none")  # cast + masked store


@triton.autotune(configs=_GRAD_WEIGHT_CONFIGS, key=["N_BUCKET", "C_OUT", "OH_BUCKET", "OW_BUCKET", "LAYOUT"])
@triton.jit
def _depthwise_grad_weight_kernel(
    x_ptr, g_ptr, off_ptr, ws_ptr, counter_ptr, dw_ptr,
    N, H, W, C_OUT, OH, OW, CHUNK, N_BUCKET, OH_BUCKET, OW_BUCKET, LAYOUT,
    sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw,
    PAD_T, PAD_L,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    MULT: tl.constexpr, HAS_OFFSETS: tl.constexpr, TAPS: tl.constexpr, SPLIT: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # program = channel tile × split; reduces output pixels [split·CHUNK, (split+1)·CHUNK) of N·OH·OW
    # into dw (taps, C_out) row-major; SPLIT: fp32 partials ws (splits, taps, C_out) + tile counters
    co = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    split = tl.program_id(1)
    c_ok = co < C_OUT
    ci = co // MULT
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, N * OH * OW)
    if HAS_OFFSETS:
        dy = tl.load(off_ptr + 2 * ci, mask=c_ok, other=0)[None, :]
        dx = tl.load(off_ptr + 2 * ci + 1, mask=c_ok, other=0)[None, :]
    tap = tl.arange(0, TAPS)
    acc = tl.zeros((TAPS, BLOCK_C), dtype=tl.float32)
    for start in range(0, CHUNK, BLOCK_P):
        q = lo + start + tl.arange(0, BLOCK_P)  # flattened (n, oh, ow)
        q_ok = (q < hi)[:, None] & c_ok[None, :]
        n = (q // (OH * OW)).to(tl.int64)[:, None]
        oh = (q % (OH * OW)) // OW
        ow = q % OW
        gv = tl.load(g_ptr + n * sgn + co[None, :] * sgc + oh[:, None] * sgh + ow[:, None] * sgw, mask=q_ok, other=0.0)
        gv = gv.to(tl.float32)
        ih0 = (oh * SH - PAD_T)[:, None]
        iw0 = (ow * SW - PAD_L)[:, None]
        if HAS_OFFSETS:
            ih0 = ih0 + dy
            iw0 = iw0 + dx
        x_base = x_ptr + n * sxn + ci[None, :] * sxc
        for kh in tl.static_range(KH):
            ih = ih0 + kh * DH
            row_ok = q_ok & (ih >= 0) & (ih < H)
            for kw in tl.static_range(KW):
                iw = iw0 + kw * DW
                ok = row_ok & (iw >= 0) & (iw < W)
                xv = tl.load(x_base + ih * sxh + iw * sxw, mask=ok, other=0.0).to(tl.float32)
                contrib = tl.sum(gv * xv, axis=0)
                acc += tl.where(tap[:, None] == kh * KW + kw, contrib[None, :], 0.0)
    store_splitk(
        acc, tap, co, KH * KW, C_OUT, tl.program_id(0), split, tl.num_programs(1), ws_ptr, counter_ptr, ws_ptr,
        ws_ptr, dw_ptr, C_OUT, SPLIT, False, False, "none",
    )  # fmt: skip


# ----------------------------------------------------------------------------- argument checks


def _check_kernel(
    weight: Optional[torch.Tensor], c_in: int, dtype: torch.dtype, channels_out: Optional[int] = None
) -> None:
    """weight: (C·M, 1, KH, KW) with 1 ≤ KH, KW ≤ MAX_KERNEL_SIZE, in the activations' dtype."""
    if weight is None:
        return
    check_tensor(weight, "weight", ndim=4, dtype=dtype)
    c_out, per_group, kh, kw = weight.shape
    if per_group != 1:
        raise ValueError(
            f"weight: expected shape (C_out, 1, kh, kw) of a depthwise conv (groups = channels), "
            f"got {tuple(weight.shape)}"
        )
    if c_out == 0 or c_out % c_in != 0:
        raise ValueError(
            f"weight: depthwise conv output channels must be a multiple of the input channels {c_in} "
            f"(groups = channels), got {c_out}"
        )
    if channels_out is not None and c_out != channels_out:
        raise ValueError(f"weight: expected {channels_out} output channels (from grad), got {c_out}")
    if not (1 <= kh <= MAX_KERNEL_SIZE and 1 <= kw <= MAX_KERNEL_SIZE):
        raise ValueError(f"weight: kernel size must be between 1 and {MAX_KERNEL_SIZE}, got {kh}x{kw}")


def _check_kkc(weight_kkc: Optional[torch.Tensor], weight: Optional[torch.Tensor]) -> None:
    """weight_kkc: None, or the fp32 (KH, KW, C_pad) copy of ``weight`` (C_pad a multiple of 16, >= C)."""
    if weight_kkc is None:
        return
    if weight is None:
        raise ValueError("weight_kkc: expected None without a weight (the weightless shift stencil)")
    c, _, kh, kw = weight.shape
    check_tensor(weight_kkc, "weight_kkc", ndim=3, dtype=torch.float32)
    c_pad = weight_kkc.shape[2]
    if tuple(weight_kkc.shape[:2]) != (kh, kw) or c_pad < c or c_pad % KKC_CHANNEL_ALIGN:
        raise ValueError(
            f"weight_kkc: expected shape ({kh}, {kw}, C_pad) with C_pad >= {c} a multiple of {KKC_CHANNEL_ALIGN} "
            f"(depthwise_weight_kkc(weight)), got {tuple(weight_kkc.shape)}"
        )
    if not weight_kkc.is_contiguous():
        raise ValueError(f"weight_kkc: expected a contiguous tensor, got strides {weight_kkc.stride()}")
    check_same_device(weight=weight, weight_kkc=weight_kkc)


def _check_offsets(offsets: Optional[torch.Tensor], channels: int) -> None:
    if offsets is not None:
        check_tensor(offsets, "offsets", shape=(channels, 2), dtype=torch.int32)


def _check_per_channel(channels: int, **vectors: Optional[torch.Tensor]) -> None:
    for name, v in vectors.items():
        if v is not None:
            check_tensor(
                v, name, shape=(channels,), dtype=(torch.float16, torch.bfloat16, torch.float32, torch.float64)
            )


def _kernel_hw(weight: Optional[torch.Tensor]) -> tuple[int, int]:
    return (1, 1) if weight is None else (weight.shape[2], weight.shape[3])


def _check_depthwise_conv2d(
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    activation: str,
    weight_kkc: Optional[torch.Tensor] = None,
) -> None:
    check_tensor(x, "x", ndim=4, dtype=FLOAT_DTYPES)
    _check_kernel(weight, x.shape[1], x.dtype)
    _check_kkc(weight_kkc, weight)
    c_out = x.shape[1] if weight is None else weight.shape[0]
    _check_per_channel(c_out, scale=scale, shift=shift)
    _check_offsets(offsets, x.shape[1])
    check_same_device(x=x, weight=weight, scale=scale, shift=shift, offsets=offsets)
    check_geometry(stride, padding, dilation, input_hw=x.shape[2:], kernel_hw=_kernel_hw(weight))
    check_choice(activation, "activation", ACTIVATIONS)


def _check_grad_input(
    grad: torch.Tensor,
    weight: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    input_shape: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> None:
    check_tensor(grad, "grad", ndim=4, dtype=FLOAT_DTYPES)
    if len(input_shape) != 4 or input_shape[0] != grad.shape[0]:
        raise ValueError(f"input_shape: expected (N, C, H, W) with N={grad.shape[0]} (from grad), got {input_shape}")
    _check_kernel(weight, input_shape[1], grad.dtype, channels_out=grad.shape[1])
    if weight is None and grad.shape[1] != input_shape[1]:
        raise ValueError(
            f"grad: expected {input_shape[1]} channels (no weight: one per input channel), got {grad.shape}"
        )
    _check_offsets(offsets, input_shape[1])
    check_same_device(grad=grad, weight=weight, offsets=offsets)
    out_hw = check_geometry(stride, padding, dilation, input_hw=input_shape[2:], kernel_hw=_kernel_hw(weight))
    if tuple(grad.shape[2:]) != out_hw:
        raise ValueError(f"grad: expected spatial size {out_hw} (the conv's output), got {tuple(grad.shape[2:])}")


def _check_grad_weight(
    x: torch.Tensor,
    grad: torch.Tensor,
    offsets: Optional[torch.Tensor],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> None:
    check_tensor(x, "x", ndim=4, dtype=FLOAT_DTYPES)
    check_tensor(grad, "grad", ndim=4, dtype=x.dtype)
    if len(kernel_size) != 2 or not all(1 <= k <= MAX_KERNEL_SIZE for k in kernel_size):
        raise ValueError(f"kernel_size: expected 2 ints between 1 and {MAX_KERNEL_SIZE}, got {kernel_size}")
    if grad.shape[0] != x.shape[0] or grad.shape[1] % x.shape[1] != 0:
        raise ValueError(
            f"grad: expected shape (N={x.shape[0]}, a multiple of C={x.shape[1]}, OH, OW), got {tuple(grad.shape)}"
        )
    _check_offsets(offsets, x.shape[1])
    check_same_device(x=x, grad=grad, offsets=offsets)
    out_hw = check_geometry(stride, padding, dilation, input_hw=x.shape[2:], kernel_hw=kernel_size)
    if tuple(grad.shape[2:]) != out_hw:
        raise ValueError(f"grad: expected spatial size {out_hw} (the conv's output), got {tuple(grad.shape[2:])}")


# ----------------------------------------------------------------------------- launchers


def _geometry(kh: int, kw: int, stride: list[int], dilation: list[int]) -> dict[str, int]:
    return dict(KH=kh, KW=kw, SH=stride[0], SW=stride[1], DH=dilation[0], DW=dilation[1])


def _cudnn_path(x, weight, scale, shift, stride, padding, dilation, activation) -> torch.Tensor:
    """torch's best path to the same output, for dispatch by measurement: cuDNN's depthwise conv
    (F.conv2d(groups=C), a plain bias folded in) + the rest of the epilogue in torch, in x's dtype
    and memory format."""
    pt, pb, pl, pr = padding
    bias = shift.to(x.dtype) if scale is None and shift is not None else None
    if (pt, pl) == (pb, pr):
        z = F.conv2d(x, weight, bias, stride, (pt, pl), dilation, groups=x.shape[1])
    else:
        z = F.conv2d(F.pad(x, (pl, pr, pt, pb)), weight, bias, stride, 0, dilation, groups=x.shape[1])
    y = epilogue_reference(z, scale, None if scale is None else shift, activation)
    return in_format(y, memory_format_of(x))


def depthwise_key(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, activation, scale, shift) -> tuple:
    """The shape bucket of a depthwise forward for dispatch by measurement: the batch bucketed
    (core.gemm.m_bucket), everything else exact (channels, image, kernel, geometry, layout, dtype,
    epilogue)."""
    return (
        m_bucket(x.shape[0]), *x.shape[1:], weight.shape[0], *weight.shape[2:], *stride, *padding, *dilation,
        layout_key(x), str(x.dtype).removeprefix("torch."), activation, scale is not None, shift is not None,
    )  # fmt: skip


def launch_depthwise_conv2d(
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    activation: str,
    weight_kkc: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Our forward kernel (what ``depthwise_conv2d`` runs when its kernel is chosen; benchmarks and
    the static report call it directly). ``weight_kkc``: the fp32 (KH, KW, C_pad) copy of ``weight``
    (``_layout.depthwise_weight_kkc``; a layer caches it), derived here when None."""
    n, c_in, h, w = x.shape
    kh, kw = _kernel_hw(weight)
    mult = 1 if weight is None else weight.shape[0] // c_in
    c_out = c_in * mult
    oh, ow = check_geometry(stride, padding, dilation, input_hw=(h, w), kernel_hw=(kh, kw))
    y = empty_in_format((n, c_out, oh, ow), memory_format_of(x), dtype=x.dtype, device=x.device)
    if weight is not None and weight_kkc is None:
        weight_kkc = depthwise_weight_kkc(weight)
    vec = channel_vector((x, y), c_out) if mult == 1 else 1
    strides = [s // vec if i != 1 else s for t in (x, y) for i, s in enumerate(t.stride())]
    _depthwise_fwd_kernel[pixel_grid(n, oh, ow, c_out)](
        x, operand_or(weight_kkc, x), operand_or(scale, x), operand_or(shift, x), operand_or(offsets, x), y,
        n, h, w, c_out, c_out // vec, KKC_CHANNEL_ALIGN if weight_kkc is None else weight_kkc.shape[2], oh, ow,
        m_bucket(n), m_bucket(oh), m_bucket(ow), layout_key(x, y),
        *strides,
        padding[0], padding[2],
        **_geometry(kh, kw, stride, dilation), MULT=mult,
        HAS_WEIGHT=weight is not None, HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None,
        HAS_OFFSETS=offsets is not None, ACTIVATION=activation, VEC=vec,
    )  # fmt: skip
    return y


@kernel_op("slimtorch::depthwise_conv2d", reference="depthwise_conv2d_reference", check=_check_depthwise_conv2d)
def depthwise_conv2d(
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    activation: str,
    weight_kkc: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """y = act(depthwise_conv(x, weight) · scale + shift) (module docstring).

    x (N, C, H, W) any memory format; weight (C·M, 1, KH, KW) or None (1x1, weight 1: a pure
    gather, used by the integer shift); scale/shift (C·M,) or None; offsets int32 (C, 2) or None;
    stride [sh, sw]; padding [top, bottom, left, right]; dilation [dh, dw]; weight_kkc: optional
    fp32 (KH, KW, C_pad) copy of weight for the kernel (``_layout.depthwise_weight_kkc``; derived when
    None; never differentiated: gradients go to ``weight``). Returns (N, C·M, OH, OW) in x's memory
    format. Trains (autograd for x, weight, scale, shift). On a GPU, a plain depthwise conv (no offsets)
    runs our kernel or cuDNN + the torch epilogue, whichever measured faster for its shape bucket
    (core.measured).
    """
    if x.dtype == torch.float64:  # no fp64 kernel: the reference is exact
        return depthwise_conv2d_reference(x, weight, scale, shift, offsets, stride, padding, dilation, activation)
    geometry = (stride, padding, dilation, activation)
    candidates = {"triton": lambda: launch_depthwise_conv2d(x, weight, scale, shift, offsets, *geometry, weight_kkc)}
    if weight is None or offsets is not None:  # the shift paths: torch has no single op for them
        return candidates["triton"]()
    candidates["torch cudnn conv2d+epilogue"] = lambda: _cudnn_path(x, weight, scale, shift, *geometry)
    key = depthwise_key(x, weight, stride, padding, dilation, activation, scale, shift)
    return measured.run("slimtorch::depthwise_conv2d", key, candidates, x)


depthwise_conv2d.launcher = launch_depthwise_conv2d  # benchmarks and the static report time our kernel itself


@kernel_op(
    "slimtorch::depthwise_conv2d_grad_input", reference="depthwise_conv2d_grad_input_reference", check=_check_grad_input
)
def depthwise_conv2d_grad_input(
    grad: torch.Tensor,
    weight: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    input_shape: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> torch.Tensor:
    """∂L/∂x of ``depthwise_conv2d`` (no epilogue) from ∂L/∂z = ``grad``; x has ``input_shape``.
    Returned in grad's memory format."""
    if grad.dtype == torch.float64:
        return depthwise_conv2d_grad_input_reference(grad, weight, offsets, input_shape, stride, padding, dilation)
    n, c_in, h, w = input_shape
    oh, ow = grad.shape[2:]
    kh, kw = _kernel_hw(weight)
    dx = empty_in_format((n, c_in, h, w), memory_format_of(grad), dtype=grad.dtype, device=grad.device)
    _depthwise_grad_input_kernel[image_grid(n, h * w, c_in)](
        grad, operand_or(weight, grad), operand_or(offsets, grad), dx,
        n, h, w, c_in, oh, ow, m_bucket(n), m_bucket(h), m_bucket(w), layout_key(grad, dx),
        *grad.stride(), *dx.stride(),
        padding[0], padding[2],
        **_geometry(kh, kw, stride, dilation), MULT=grad.shape[1] // c_in,
        HAS_WEIGHT=weight is not None, HAS_OFFSETS=offsets is not None,
    )  # fmt: skip
    return dx


@kernel_op(
    "slimtorch::depthwise_conv2d_grad_weight",
    reference="depthwise_conv2d_grad_weight_reference",
    check=_check_grad_weight,
)
def depthwise_conv2d_grad_weight(
    x: torch.Tensor,
    grad: torch.Tensor,
    offsets: Optional[torch.Tensor],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> torch.Tensor:
    """∂L/∂weight (C·M, 1, KH, KW) of ``depthwise_conv2d`` (no epilogue) from ∂L/∂z = ``grad``,
    in x's dtype (fp32 accumulation; split-K over the pixels)."""
    if x.dtype == torch.float64:
        return depthwise_conv2d_grad_weight_reference(x, grad, offsets, kernel_size, stride, padding, dilation)
    n, c_in, h, w = x.shape
    c_out, oh, ow = grad.shape[1:]
    kh, kw = kernel_size
    total = n * oh * ow
    plan = plan_split_k(
        1, c_out, total, sm_count=sm_count(x.device), block_m=1, block_n=32, min_k_per_split=_GRAD_WEIGHT_MIN_PIXELS,
        max_splits=_GRAD_WEIGHT_MAX_SPLIT, granule=32,
    )  # fmt: skip
    split = plan.splits > 1
    dw = empty_output((kh * kw, c_out), dtype=x.dtype, device=x.device)
    partials = splitk_partials(plan.splits, kh * kw, c_out, x.device) if split else dw

    def grid(meta):
        return (triton.cdiv(c_out, meta["BLOCK_C"]), plan.splits)

    counters = splitk_counters(x.device, max_tiles(_GRAD_WEIGHT_CONFIGS, lambda c: grid(c)[0])) if split else dw

    _depthwise_grad_weight_kernel[grid](
        x, grad, operand_or(offsets, x), partials, counters, dw,
        n, h, w, c_out, oh, ow, plan.k_per_split, m_bucket(n), m_bucket(oh), m_bucket(ow), layout_key(x, grad),
        *x.stride(), *grad.stride(),
        padding[0], padding[2],
        **_geometry(kh, kw, stride, dilation), MULT=c_out // c_in,
        HAS_OFFSETS=offsets is not None, TAPS=triton.next_power_of_2(kh * kw), SPLIT=split,
    )  # fmt: skip
    return dw.t().reshape(c_out, 1, kh, kw)


# ----------------------------------------------------------------------------- autograd


def _setup_context(ctx, inputs, output) -> None:
    x, weight, scale, shift, offsets, stride, padding, dilation, activation, weight_kkc = inputs
    ctx.save_for_backward(x, weight, scale, shift, offsets, weight_kkc)
    ctx.geometry = (stride, padding, dilation)
    ctx.activation = activation


def _backward(ctx, grad):
    x, weight, scale, shift, offsets, weight_kkc = ctx.saved_tensors
    stride, padding, dilation = ctx.geometry
    z = None
    if not is_identity(scale, ctx.activation):  # recompute the conv instead of storing it
        z = depthwise_conv2d(x, weight, None, None, offsets, stride, padding, dilation, "none", weight_kkc)
    g_z, g_scale, g_shift = epilogue_backward(grad, z, scale, shift, ctx.activation)
    g_x = g_w = None
    if ctx.needs_input_grad[0]:
        g_x = depthwise_conv2d_grad_input(g_z, weight, offsets, list(x.shape), stride, padding, dilation)
    if weight is not None and ctx.needs_input_grad[1]:
        g_w = depthwise_conv2d_grad_weight(x, g_z, offsets, list(_kernel_hw(weight)), stride, padding, dilation)
        g_w = g_w.to(weight.dtype)
    return g_x, g_w, g_scale, g_shift, None, None, None, None, None, None


depthwise_conv2d.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- references


def _tap_positions(out_size, kernel, stride, pad, dilation, size, offset, device):
    """Input coordinate (C|1, kernel, out) each output position's taps read along one axis, and
    whether it lies inside [0, size)."""
    pos = (torch.arange(out_size, device=device) * stride - pad)[None, None, :]
    pos = pos + (torch.arange(kernel, device=device) * dilation)[None, :, None]
    if offset is not None:
        pos = pos + offset.to(torch.int64)[:, None, None]
    inside = (pos >= 0) & (pos < size)
    return pos.clamp(0, size - 1), inside


def _taps_index(x_shape, kernel_hw, offsets, stride, padding, dilation, out_hw, device):
    """Advanced-index tuple (channel, row, col) of shape (C, KH, KW, OH, OW) and its in-image mask."""
    c, h, w = x_shape[1:]
    rows, rows_in = _tap_positions(
        out_hw[0],
        kernel_hw[0],
        stride[0],
        padding[0],
        dilation[0],
        h,
        None if offsets is None else offsets[:, 0],
        device,
    )
    cols, cols_in = _tap_positions(
        out_hw[1],
        kernel_hw[1],
        stride[1],
        padding[2],
        dilation[1],
        w,
        None if offsets is None else offsets[:, 1],
        device,
    )
    index = (
        torch.arange(c, device=device)[:, None, None, None, None],
        rows[:, :, None, :, None],
        cols[:, None, :, None, :],
    )
    inside = rows_in[:, :, None, :, None] & cols_in[:, None, :, None, :]
    return index, inside


def _weight_taps(weight, c_out, dtype, device):
    """(C_out, KH, KW, 1, 1) tap weights; ones for a weightless (1x1) gather."""
    if weight is None:
        return torch.ones(c_out, 1, 1, 1, 1, dtype=dtype, device=device)
    return weight.to(dtype)[:, 0, :, :, None, None]


def depthwise_conv2d_reference(
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    activation: str,
    weight_kkc: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """torch.nn.functional.conv2d(groups=C) + epilogue; a tap gather where offsets are given
    (``weight_kkc``, the kernels' copy of ``weight``, is not read)."""
    dt = compute_dtype(x.dtype)
    xc = cast(x, dt)
    c_in = x.shape[1]
    kernel_hw = _kernel_hw(weight)
    if offsets is None and weight is not None:
        pt, pb, pl, pr = padding
        # a plain bias goes into conv2d, and symmetric padding too: no extra pass, no padded copy
        bias, scale, shift = (
            (None if shift is None else cast(shift, dt), None, None) if scale is None else (None, scale, shift)
        )
        if (pt, pl) == (pb, pr):
            z = F.conv2d(xc, cast(weight, dt), bias, stride, (pt, pl), dilation, groups=c_in)
        else:
            z = F.conv2d(F.pad(xc, (pl, pr, pt, pb)), cast(weight, dt), bias, stride, 0, dilation, groups=c_in)
    else:
        out_hw = check_geometry(stride, padding, dilation, input_hw=x.shape[2:], kernel_hw=kernel_hw)
        index, inside = _taps_index(x.shape, kernel_hw, offsets, stride, padding, dilation, out_hw, x.device)
        taps = xc[(slice(None), *index)] * inside  # (N, C, KH, KW, OH, OW)
        c_out = c_in if weight is None else weight.shape[0]
        taps = taps.repeat_interleave(c_out // c_in, dim=1)
        z = (taps * _weight_taps(weight, c_out, dt, x.device)).sum((2, 3))
    y = epilogue_reference(z, scale, shift, activation)
    return in_format(cast(y, x.dtype), memory_format_of(x))


def depthwise_conv2d_grad_input_reference(
    grad: torch.Tensor,
    weight: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    input_shape: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> torch.Tensor:
    """torch.nn.grad.conv2d_input(groups=C) on the padded input, cropped; a tap scatter where
    offsets are given (or there is no weight)."""
    dt = compute_dtype(grad.dtype)
    g = grad.to(dt)
    n, c_in, h, w = input_shape
    pt, pb, pl, pr = padding
    if offsets is None and weight is not None:
        padded = (n, c_in, h + pt + pb, w + pl + pr)
        dx = torch.nn.grad.conv2d_input(padded, weight.to(dt), g, stride, 0, dilation, groups=c_in)
        dx = dx[:, :, pt : pt + h, pl : pl + w]
    else:
        kernel_hw = _kernel_hw(weight)
        index, inside = _taps_index(input_shape, kernel_hw, offsets, stride, padding, dilation, g.shape[2:], g.device)
        c_out = g.shape[1]
        # per tap and input channel: Σ_m g[n, ci·M+m] · w[ci·M+m, tap]
        contrib = g[:, :, None, None] * _weight_taps(weight, c_out, dt, g.device)  # (N, C_out, KH, KW, OH, OW)
        contrib = contrib.unflatten(1, (c_in, c_out // c_in)).sum(2) * inside
        dx = torch.zeros(c_in, h, w, n, dtype=dt, device=g.device)
        dx.index_put_(index, contrib.permute(1, 2, 3, 4, 5, 0), accumulate=True)
        dx = dx.permute(3, 0, 1, 2)
    return in_format(dx.to(grad.dtype), memory_format_of(grad))


def depthwise_conv2d_grad_weight_reference(
    x: torch.Tensor,
    grad: torch.Tensor,
    offsets: Optional[torch.Tensor],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> torch.Tensor:
    """torch.nn.grad.conv2d_weight(groups=C) on the padded input; Σ grad · gathered taps where
    offsets are given."""
    dt = compute_dtype(x.dtype)
    xc, g = x.to(dt), grad.to(dt)
    c_in, c_out = x.shape[1], grad.shape[1]
    pt, pb, pl, pr = padding
    if offsets is None:
        xp = F.pad(xc, (pl, pr, pt, pb))
        dw = torch.nn.grad.conv2d_weight(xp, (c_out, 1, *kernel_size), g, stride, 0, dilation, groups=c_in)
    else:
        index, inside = _taps_index(x.shape, kernel_size, offsets, stride, padding, dilation, g.shape[2:], x.device)
        taps = (xc[(slice(None), *index)] * inside).repeat_interleave(c_out // c_in, dim=1)
        dw = (taps * g[:, :, None, None]).sum((0, 4, 5))[:, None]
    return dw.to(x.dtype).contiguous()

"""Grouped pointwise (1x1) convolution as a Triton GEMM whose operand load applies the channel
shuffle and the shift, and whose store applies the output shuffle: one memory pass.

Math: x (N, C_in, H, W); G groups of Kg = C_in/G inputs and Ng = C_out/G outputs; input shuffle
S_in, output shuffle S_out; optional per-input-channel integer offsets (dy, dx); stride s:

    src(k) = (k mod S_in)·(C_in/S_in) + ⌊k/S_in⌋                    (channel_shuffle(·, S_in))
    a[n, k, oh, ow] = x[n, src(k), oh·s + dy[src(k)], ow·s + dx[src(k)]]   (0 outside the image)
    z[n, o, oh, ow] = Σ_{j<Kg} w[o, j] · a[n, g·Kg + j, oh, ow],   g = ⌊o/Ng⌋
    y[n, dst(o), oh, ow] = act(z · scale[o] + shift[o]),
    dst(o) = (o mod (C_out/S_out))·S_out + ⌊o/(C_out/S_out)⌋          (y = channel_shuffle(·, S_out))

so ``y = channel_shuffle(act(conv1x1_groups(channel_shuffle(shift(x), S_in)) · scale + shift), S_out)``:
ShuffleNet V1 (Zhang et al. 2018) "gconv → BN → ReLU → shuffle" is S_out = G, "shuffle → gconv"
S_in; ShiftNet's shift → 1x1 (Wu et al. 2018) is the offsets, loaded in the GEMM's operand load
(no shifted copy). OH = ⌈H/s⌉ (a 1x1 conv with stride s).

GEMM: M = N·OH·OW output pixels (flattened across images), N = Ng, K = Kg per group; a program
owns a [BLOCK_M × BLOCK_N] tile of one group and loops over K with tl.dot (fp32 accumulation; fp32
inputs use tf32 on GPUs, like cuDNN's default). Weight (C_out, Kg, 1, 1) contiguous.

Backward (epilogue derivative in torch, z recomputed):
    ∂a = per-group ∂z · w          the same kernel with w transposed per group, written through the
                                   inverse input shuffle (S_out' = C_in/S_in)
    ∂x = shiftᵀ(∂a)                depthwise_conv2d_grad_input with a weightless 1x1 stencil (offsets,
                                   stride); nothing to do without offsets and stride
    ∂w[o, j] = Σ_p ∂z[p, o] · a[p, g·Kg + j]    split-K over the pixels (slimtorch.core.gemm: planned by
                                   plan_split_k, fp32 partials reduced in order in the same launch)

Dispatch by measurement (:mod:`slimtorch.core.measured`): on CUDA tensors :func:`pointwise_conv2d`
runs, per shape bucket (pixels bucketed, channels, groups, shuffles, stride, offsets, epilogue,
dtype, layout), this kernel or torch's path (cuDNN ``F.conv2d`` in x's dtype between torch's
shift / shuffles, the same epilogue in torch), whichever measured faster on the bucket's first
call; ``pointwise_conv2d.launcher`` stays this kernel (benchmarks, the static report).
"""

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from slimtorch.convops._epilogue import epilogue_backward, epilogue_reference, is_identity
from slimtorch.convops._layout import (
    FLOAT_DTYPES,
    empty_in_format,
    in_format,
    memory_format_of,
    operand_or,
)
from slimtorch.convops.depthwise import depthwise_conv2d_grad_input, depthwise_conv2d_reference
from slimtorch.convops.shuffle import channel_shuffle, channel_shuffle_reference
from slimtorch.core import measured
from slimtorch.core.activations import ACTIVATIONS
from slimtorch.core.checks import (
    check_choice,
    check_divisible,
    check_positive,
    check_same_device,
    check_tensor,
)
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
from slimtorch.core.triton_compat import dot_acc, upcast_dot_operands
from slimtorch.core.tuning import autotune_configs

# Weight-gradient split-K over pixels (unmeasured until a GPU run): at least this many pixels per
# split, at most this many splits; the split count fills the GPU (core.gemm.plan_split_k).
_GRAD_WEIGHT_MIN_PIXELS = 4096
_GRAD_WEIGHT_MAX_SPLIT = 256

_GEMM_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32}, num_warps=8),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=4),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=4),
        triton.Config({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4),  # few pixels (batch 1, 7x7)
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=2),  # narrow groups
    ]
)
_GRAD_WEIGHT_CONFIGS = autotune_configs(
    [
        triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4),
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8),
    ]
)


@triton.jit
def _load_operand(
    x_ptr, off_ptr, img, oh, ow, row_ok, k, k_ok,
    C_IN, H, W, in_groups,
    sxn, sxc, sxh, sxw,
    STRIDE: tl.constexpr, IN_SHUFFLE: tl.constexpr, HAS_OFFSETS: tl.constexpr,
):  # fmt: skip
    """a[rows, k] (module docstring) as a [rows, cols] tile; img int64, rows and k 1-D."""
    src = k
    if IN_SHUFFLE:
        src = (k % in_groups) * (C_IN // in_groups) + k // in_groups
    ih = (oh * STRIDE)[:, None]
    iw = (ow * STRIDE)[:, None]
    ok = row_ok[:, None] & k_ok[None, :]
    if HAS_OFFSETS:
        ih = ih + tl.load(off_ptr + 2 * src, mask=k_ok, other=0)[None, :]
        iw = iw + tl.load(off_ptr + 2 * src + 1, mask=k_ok, other=0)[None, :]
        ok = ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    ptrs = x_ptr + img[:, None] * sxn + src[None, :] * sxc + ih * sxh + iw * sxw
    return tl.load(ptrs, mask=ok, other=0.0)


@triton.autotune(configs=_GEMM_CONFIGS, key=["P_BUCKET", "C_IN", "C_OUT", "K_G", "LAYOUT"])
@triton.jit
def _pointwise_fwd_kernel(
    x_ptr, w_ptr, scale_ptr, shift_ptr, off_ptr, y_ptr,
    P, H, W, OH, OW, C_IN, C_OUT, K_G, N_G, in_groups, out_groups, P_BUCKET, LAYOUT,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    STRIDE: tl.constexpr, IN_SHUFFLE: tl.constexpr, OUT_SHUFFLE: tl.constexpr, HAS_OFFSETS: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_SHIFT: tl.constexpr, ACTIVATION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # program = pixel tile × (group, output-column tile)
    tiles_n = tl.cdiv(N_G, BLOCK_N)
    g = tl.program_id(1) // tiles_n
    cols = (tl.program_id(1) % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N_G
    o = g * N_G + cols
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < P
    img = (rows // (OH * OW)).to(tl.int64)
    oh = (rows % (OH * OW)) // OW
    ow = rows % OW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K_G, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        k_ok = kk < K_G
        a = _load_operand(
            x_ptr, off_ptr, img, oh, ow, row_ok, g * K_G + kk, k_ok, C_IN, H, W, in_groups, sxn, sxc, sxh, sxw,
            STRIDE, IN_SHUFFLE, HAS_OFFSETS,
        )  # fmt: skip
        b = tl.load(w_ptr + o[None, :] * K_G + kk[:, None], mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = dot_acc(a, b, acc, UPCAST)
    if OUT_SHUFFLE:
        per = C_OUT // out_groups
        dst = (o % per) * out_groups + o // per
    else:
        dst = o
    y_ptrs = y_ptr + img[:, None] * syn + dst[None, :] * syc + oh[:, None] * syh + ow[:, None] * syw
    # per-channel scale / shift of conv channel o, stored at shuffled channel dst(o)
    ok = row_ok[:, None] & col_ok[None, :]
    store_tile(acc, y_ptrs, ok, o, col_ok, scale_ptr, shift_ptr, HAS_SCALE, HAS_SHIFT, ACTIVATION)


@triton.autotune(configs=_GRAD_WEIGHT_CONFIGS, key=["P_BUCKET", "C_IN", "C_OUT", "K_G", "LAYOUT"])
@triton.jit
def _pointwise_grad_weight_kernel(
    x_ptr, g_ptr, off_ptr, ws_ptr, counter_ptr, dw_ptr,
    P, H, W, OH, OW, C_IN, C_OUT, K_G, N_G, in_groups, CHUNK, P_BUCKET, LAYOUT,
    sxn, sxc, sxh, sxw, sgn, sgc, sgh, sgw,
    STRIDE: tl.constexpr, IN_SHUFFLE: tl.constexpr, HAS_OFFSETS: tl.constexpr, SPLIT: tl.constexpr,
    UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # program = (group, output-channel tile) × input-column tile × pixel split; dw (C_out, K_g) row-major,
    # SPLIT: fp32 partials ws (splits, C_out, K_g) and tile counters (core.gemm.store_splitk)
    tiles_n = tl.cdiv(N_G, BLOCK_N)
    g = tl.program_id(0) // tiles_n
    cols = (tl.program_id(0) % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N_G
    o = g * N_G + cols
    kk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    k_ok = kk < K_G
    split = tl.program_id(2)
    lo = split * CHUNK
    hi = tl.minimum(lo + CHUNK, P)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for start in range(0, CHUNK, BLOCK_M):
        rows = lo + start + tl.arange(0, BLOCK_M)
        row_ok = rows < hi
        img = (rows // (OH * OW)).to(tl.int64)
        oh = (rows % (OH * OW)) // OW
        ow = rows % OW
        g_ptrs = g_ptr + img[None, :] * sgn + o[:, None] * sgc + oh[None, :] * sgh + ow[None, :] * sgw
        gt = tl.load(g_ptrs, mask=col_ok[:, None] & row_ok[None, :], other=0.0)  # [BLOCK_N, BLOCK_M]
        a = _load_operand(
            x_ptr, off_ptr, img, oh, ow, row_ok, g * K_G + kk, k_ok, C_IN, H, W, in_groups, sxn, sxc, sxh, sxw,
            STRIDE, IN_SHUFFLE, HAS_OFFSETS,
        )  # fmt: skip
        acc = dot_acc(gt, a, acc, UPCAST)
    rows = tl.where(col_ok, o, C_OUT)  # columns past the group's N_G would be the next group's rows: masked
    tile = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    store_splitk(
        acc, rows, kk, C_OUT, K_G, tile, split, tl.num_programs(2), ws_ptr, counter_ptr, ws_ptr, ws_ptr, dw_ptr, K_G,
        SPLIT, False, False, "none",
    )  # fmt: skip


# ----------------------------------------------------------------------------- argument checks


def _check_operand(x: torch.Tensor, offsets: Optional[torch.Tensor], groups: int, in_shuffle: int, stride: int) -> None:
    check_tensor(x, "x", ndim=4, dtype=FLOAT_DTYPES)
    check_positive(groups, "groups")
    check_divisible(x.shape[1], groups, "x channels (for groups)")
    check_positive(in_shuffle, "in_shuffle")
    check_divisible(x.shape[1], in_shuffle, "x channels (for in_shuffle groups)")
    check_positive(stride, "stride")
    if offsets is not None:
        check_tensor(offsets, "offsets", shape=(x.shape[1], 2), dtype=torch.int32)


def _output_hw(x: torch.Tensor, stride: int) -> tuple[int, int]:
    return (x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1


def _check_pointwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    groups: int,
    in_shuffle: int,
    out_shuffle: int,
    stride: int,
    activation: str,
) -> None:
    _check_operand(x, offsets, groups, in_shuffle, stride)
    check_tensor(weight, "weight", ndim=4, dtype=x.dtype)
    c_out, k_g = weight.shape[0], x.shape[1] // groups
    if weight.shape[1:] != (k_g, 1, 1) or c_out == 0:
        raise ValueError(
            f"weight: expected shape (C_out, {k_g}, 1, 1) of a 1x1 conv with {groups} groups over "
            f"{x.shape[1]} channels, got {tuple(weight.shape)}"
        )
    check_divisible(c_out, groups, "weight output channels (for groups)")
    check_positive(out_shuffle, "out_shuffle")
    check_divisible(c_out, out_shuffle, "weight output channels (for out_shuffle groups)")
    for name, v in (("scale", scale), ("shift", shift)):
        if v is not None:
            check_tensor(v, name, shape=(c_out,), dtype=FLOAT_DTYPES)
    check_same_device(x=x, weight=weight, scale=scale, shift=shift, offsets=offsets)
    check_choice(activation, "activation", ACTIVATIONS)


def _check_grad_weight(
    x: torch.Tensor,
    grad: torch.Tensor,
    offsets: Optional[torch.Tensor],
    groups: int,
    in_shuffle: int,
    stride: int,
) -> None:
    _check_operand(x, offsets, groups, in_shuffle, stride)
    check_tensor(grad, "grad", ndim=4, dtype=x.dtype)
    want = (x.shape[0], *_output_hw(x, stride))
    if (grad.shape[0], *grad.shape[2:]) != want or grad.shape[1] % groups != 0:
        raise ValueError(
            f"grad: expected shape (N={want[0]}, a multiple of groups={groups}, {want[1]}, {want[2]}), "
            f"got {tuple(grad.shape)}"
        )
    check_same_device(x=x, grad=grad, offsets=offsets)


# ----------------------------------------------------------------------------- launchers


def launch_pointwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    groups: int,
    in_shuffle: int,
    out_shuffle: int,
    stride: int,
    activation: str,
) -> torch.Tensor:
    """Our kernel (``pointwise_conv2d.launcher``)."""
    if x.dtype == torch.float64:  # no fp64 kernel
        return pointwise_conv2d_reference(
            x, weight, scale, shift, offsets, groups, in_shuffle, out_shuffle, stride, activation
        )
    n, c_in, h, w = x.shape
    c_out = weight.shape[0]
    oh, ow = _output_hw(x, stride)
    y = empty_in_format((n, c_out, oh, ow), memory_format_of(x), dtype=x.dtype, device=x.device)
    p = n * oh * ow
    if p == 0:
        return y
    n_g = c_out // groups

    def grid(meta):
        return (triton.cdiv(p, meta["BLOCK_M"]), groups * triton.cdiv(n_g, meta["BLOCK_N"]))

    _pointwise_fwd_kernel[grid](
        x, weight.contiguous(), operand_or(scale, x), operand_or(shift, x), operand_or(offsets, x), y,
        p, h, w, oh, ow, c_in, c_out, c_in // groups, n_g, in_shuffle, out_shuffle, m_bucket(p), layout_key(x, y),
        *x.stride(), *y.stride(),
        STRIDE=stride, IN_SHUFFLE=in_shuffle > 1, OUT_SHUFFLE=out_shuffle > 1, HAS_OFFSETS=offsets is not None,
        HAS_SCALE=scale is not None, HAS_SHIFT=shift is not None, ACTIVATION=activation,
        UPCAST=upcast_dot_operands(x.dtype),
    )  # fmt: skip
    return y


def pointwise_measure_key(x: torch.Tensor, weight: torch.Tensor, scale, shift, offsets, *config) -> tuple:
    """core.measured's bucket: (m_bucket(pixels), C_in, C_out, groups, in_shuffle, out_shuffle, stride,
    activation, has scale / shift / offsets, dtype, layout_key(x)); ``config`` = (groups, ..., activation)."""
    oh, ow = _output_hw(x, config[3])
    flags = tuple(int(t is not None) for t in (scale, shift, offsets))
    dtype = str(x.dtype).removeprefix("torch.")
    return (m_bucket(x.shape[0] * oh * ow), x.shape[1], weight.shape[0], *config, *flags, dtype, layout_key(x))


@kernel_op("slimtorch::pointwise_conv2d", reference="pointwise_conv2d_reference", check=_check_pointwise_conv2d)
def pointwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    groups: int,
    in_shuffle: int,
    out_shuffle: int,
    stride: int,
    activation: str,
) -> torch.Tensor:
    """y = channel_shuffle(act(conv1x1(channel_shuffle(shift(x), in_shuffle), weight, groups) · scale
    + shift), out_shuffle) (module docstring); shuffles of 1 and offsets None are identities.

    x (N, C_in, H, W) any memory format; weight (C_out, C_in/groups, 1, 1); scale/shift (C_out,)
    or None; offsets int32 (C_in, 2) or None. Returns (N, C_out, ⌈H/s⌉, ⌈W/s⌉) in x's memory
    format. Trains (autograd for x, weight, scale, shift). On CUDA, our kernel or cuDNN + the
    epilogue in torch, whichever measured faster for this shape bucket (module docstring).
    """
    args = (x, weight, scale, shift, offsets, groups, in_shuffle, out_shuffle, stride, activation)
    candidates = {
        "triton": lambda: launch_pointwise_conv2d(*args),
        "torch cuDNN": lambda: pointwise_conv2d_torch(*args),
    }
    return measured.run("slimtorch::pointwise_conv2d", pointwise_measure_key(*args), candidates, x)


pointwise_conv2d.launcher = launch_pointwise_conv2d  # benchmarks and the static report time our kernel itself


@kernel_op(
    "slimtorch::pointwise_conv2d_grad_weight",
    reference="pointwise_conv2d_grad_weight_reference",
    check=_check_grad_weight,
)
def pointwise_conv2d_grad_weight(
    x: torch.Tensor,
    grad: torch.Tensor,
    offsets: Optional[torch.Tensor],
    groups: int,
    in_shuffle: int,
    stride: int,
) -> torch.Tensor:
    """∂L/∂weight (C_out, C_in/groups, 1, 1) of ``pointwise_conv2d`` (no epilogue, no output
    shuffle) from ∂L/∂z = ``grad``, in x's dtype (fp32 accumulation; split-K over the pixels)."""
    if x.dtype == torch.float64:
        return pointwise_conv2d_grad_weight_reference(x, grad, offsets, groups, in_shuffle, stride)
    n, c_in, h, w = x.shape
    c_out, oh, ow = grad.shape[1:]
    k_g, n_g = c_in // groups, c_out // groups
    p = n * oh * ow
    plan = plan_split_k(
        c_out, k_g, p, sm_count=sm_count(x.device), block_m=64, block_n=64, min_k_per_split=_GRAD_WEIGHT_MIN_PIXELS,
        max_splits=_GRAD_WEIGHT_MAX_SPLIT, granule=32,
    )  # fmt: skip
    split = plan.splits > 1
    dw = empty_output((c_out, k_g), dtype=x.dtype, device=x.device)
    partials = splitk_partials(plan.splits, c_out, k_g, x.device) if split else dw

    def grid(meta):
        return (groups * triton.cdiv(n_g, meta["BLOCK_N"]), triton.cdiv(k_g, meta["BLOCK_K"]), plan.splits)

    tiles = max_tiles(_GRAD_WEIGHT_CONFIGS, lambda c: grid(c)[0] * grid(c)[1])  # tile = pid0 · programs1 + pid1
    counters = splitk_counters(x.device, tiles) if split else dw

    _pointwise_grad_weight_kernel[grid](
        x, grad, operand_or(offsets, x), partials, counters, dw,
        p, h, w, oh, ow, c_in, c_out, k_g, n_g, in_shuffle, plan.k_per_split, m_bucket(p), layout_key(x, grad),
        *x.stride(), *grad.stride(),
        STRIDE=stride, IN_SHUFFLE=in_shuffle > 1, HAS_OFFSETS=offsets is not None, SPLIT=split,
        UPCAST=upcast_dot_operands(x.dtype),
    )  # fmt: skip
    return dw.view(c_out, k_g, 1, 1)


# ----------------------------------------------------------------------------- autograd


def transpose_groups(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(C_out, Kg, 1, 1) -> (C_in, Ng, 1, 1): each group's Ng×Kg block transposed."""
    c_out, k_g = weight.shape[:2]
    n_g = c_out // groups
    return weight.reshape(groups, n_g, k_g).transpose(1, 2).reshape(groups * k_g, n_g, 1, 1).contiguous()


def _setup_context(ctx, inputs, output) -> None:
    x, weight, scale, shift, offsets, groups, in_shuffle, out_shuffle, stride, activation = inputs
    ctx.save_for_backward(x, weight, scale, shift, offsets)
    ctx.args = (groups, in_shuffle, out_shuffle, stride, activation)


def _backward(ctx, grad):
    x, weight, scale, shift, offsets = ctx.saved_tensors
    groups, in_shuffle, out_shuffle, stride, activation = ctx.args
    c_in, c_out = x.shape[1], weight.shape[0]
    if out_shuffle > 1:  # back to the conv's channel order
        grad = channel_shuffle(grad, c_out // out_shuffle)
    z = None
    if not is_identity(scale, activation):  # recompute the conv instead of storing it
        z = pointwise_conv2d(x, weight, None, None, offsets, groups, in_shuffle, 1, stride, "none")
    g_z, g_scale, g_shift = epilogue_backward(grad, z, scale, shift, activation)
    g_x = g_w = None
    if ctx.needs_input_grad[0]:
        unshuffle = c_in // in_shuffle if in_shuffle > 1 else 1
        g_x = pointwise_conv2d(g_z, transpose_groups(weight, groups), None, None, None, groups, 1, unshuffle, 1, "none")
        if offsets is not None or stride > 1:
            g_x = depthwise_conv2d_grad_input(g_x, None, offsets, list(x.shape), [stride, stride], [0] * 4, [1, 1])
    if ctx.needs_input_grad[1]:
        g_w = pointwise_conv2d_grad_weight(x, g_z, offsets, groups, in_shuffle, stride)
    return g_x, g_w, g_scale, g_shift, None, None, None, None, None, None


pointwise_conv2d.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- references


def _operand_reference(x: torch.Tensor, offsets: Optional[torch.Tensor], in_shuffle: int, stride: int) -> torch.Tensor:
    """a = channel_shuffle(shift(x)[..., ::s, ::s], in_shuffle) (module docstring)."""
    if offsets is None:
        a = x if stride == 1 else x[:, :, ::stride, ::stride]
    else:
        a = depthwise_conv2d_reference(x, None, None, None, offsets, [stride, stride], [0] * 4, [1, 1], "none")
    return a if in_shuffle == 1 else channel_shuffle_reference(a, in_shuffle)


def pointwise_conv2d_torch(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    groups: int,
    in_shuffle: int,
    out_shuffle: int,
    stride: int,
    activation: str,
) -> torch.Tensor:
    """torch's path (the dispatch candidate): the reference's math in x's own dtype, i.e. cuDNN in
    fp16/bf16 (fp32 accumulation) instead of an fp32 copy."""
    args = (x, weight, scale, shift, offsets, groups, in_shuffle, out_shuffle, stride, activation)
    return _pointwise_conv2d_in(x.dtype, *args)


def pointwise_conv2d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    groups: int,
    in_shuffle: int,
    out_shuffle: int,
    stride: int,
    activation: str,
) -> torch.Tensor:
    """torch.nn.functional.conv2d(1x1, groups) between the reference shift/shuffles + epilogue."""
    args = (x, weight, scale, shift, offsets, groups, in_shuffle, out_shuffle, stride, activation)
    return _pointwise_conv2d_in(compute_dtype(x.dtype), *args)


def _pointwise_conv2d_in(
    dt: torch.dtype,
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: Optional[torch.Tensor],
    shift: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    groups: int,
    in_shuffle: int,
    out_shuffle: int,
    stride: int,
    activation: str,
) -> torch.Tensor:
    """The reference's math computed in ``dt`` (fp32 for the reference; x's dtype for torch's path)."""
    a = _operand_reference(cast(x, dt), offsets, in_shuffle, stride)
    if scale is None:  # a plain bias: conv2d adds it (one pass less on the CPU path)
        bias = None if shift is None else cast(shift, dt)
        y = epilogue_reference(F.conv2d(a, cast(weight, dt), bias, groups=groups), None, None, activation)
    else:
        y = epilogue_reference(F.conv2d(a, cast(weight, dt), groups=groups), scale, shift, activation)
    if out_shuffle > 1:
        y = channel_shuffle_reference(y, out_shuffle)
    return in_format(cast(y, x.dtype), memory_format_of(x))


def pointwise_conv2d_grad_weight_reference(
    x: torch.Tensor,
    grad: torch.Tensor,
    offsets: Optional[torch.Tensor],
    groups: int,
    in_shuffle: int,
    stride: int,
) -> torch.Tensor:
    dt = compute_dtype(x.dtype)
    a = _operand_reference(x.to(dt), offsets, in_shuffle, stride)
    shape = (grad.shape[1], x.shape[1] // groups, 1, 1)
    return torch.nn.grad.conv2d_weight(a, shape, grad.to(dt), groups=groups).to(x.dtype).contiguous()

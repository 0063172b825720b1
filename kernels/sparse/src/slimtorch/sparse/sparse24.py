"""2:4 semi-structured sparse weight × dense activations, Triton: ``y = act(x @ W.T + bias)``.

W (N, K) is stored compressed (see :mod:`slimtorch.sparse.formats`): ``values`` (N, K/2) and
``meta`` (N, ceil(K/32)) int32 holding the 2-bit in-group index of every value, so

    y[m, n] = Σ_j values[n, j] · x[m, 4·(j // 2) + idx[n, j]]        (j over the K/2 stored values)

Only half of W's bytes plus 1/16 of them in metadata are read: ~1.78x less than a dense fp16
weight, which is the whole gain in the memory-bound regime (small M). Triton cannot issue sparse
tensor-core MMAs (``mma.sp``); that compute-bound path is the CUDA kernel in :mod:`.mma_sp`.

Two kernels, chosen in the launcher by M (thresholds unmeasured until a GPU run):

- ``_sparse24_gemv_kernel`` (M <= GEMV_MAX_M): no dense tile at all. Each program owns BLOCK_N
  output features and walks its share of the stored values, BLOCK_V / BLOCK_M of them (whole meta
  words: 16 values = 32 dense columns each) per iteration, as a (BLOCK_N, words, 16) tile: the
  values with 16-byte vector loads, one int32 meta word per 16 values, each value's x element
  gathered (x is tiny and stays in L1). Every lane keeps its own fp32 partial products across the
  whole K loop and the tile is reduced once at the end (one ``tl.sum``: no warp shuffles or
  barriers per K step); rows past M / N are clamped, so only the last partial tile is masked.
- ``_sparse24_mm_kernel`` (larger M): per K tile it loads the (BLOCK_N, BLOCK_K/2) stored values
  once (contiguous), splits them into the first and second value of each group, and for each of
  the 4 slots p builds ``W_p[n, g] = W[n, 4g + p]`` (the value whose index is p, else 0) and adds
  ``x[:, p::4] @ W_p.T`` with ``tl.dot`` (fp32 accumulation): four dots of K = BLOCK_K/4, the same
  tensor-core work as one dense tile, with half the weight bytes. (Interleaving the four slots back
  into one dense tile with ``tl.join`` + ``reshape`` breaks Triton 3.6's dot-operand pass for
  large tiles, so the interleaving is done on x's side by strided loads instead.)

Split-K (both kernels): for small M the N/BLOCK_N programs alone cannot fill the GPU, so K is cut
into ``splits`` ranges of ``k_per_split`` columns (program axis 1, planned by
``slimtorch.core.gemm.plan_split_k``); each split writes an fp32 partial and the last split of
each output tile sums them in order (deterministic), adds bias, applies the activation and casts,
in the same launch (``slimtorch.core.gemm.store_splitk``). Without split-K the epilogue is fused
in the matmul kernel directly.

Paper: Mishra et al., "Accelerating Sparse Deep Neural Networks" (NVIDIA, arXiv:2104.08378).
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from slimtorch.core.activations import ACTIVATIONS
from slimtorch.core.checks import KERNEL_DTYPES, check_choice, check_divisible, check_same_device, check_tensor
from slimtorch.core.dispatch import empty_output
from slimtorch.core.gemm import (
    SplitK,
    grouped_tile,
    m_bucket,
    max_tiles,
    plan_split_k,
    sm_count,
    split_k_ranges,
    splitk_counters,
    splitk_partials,
    store_splitk,
)
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import linear_reference
from slimtorch.core.triton_compat import dot_acc, upcast_dot_operands
from slimtorch.core.tuning import autotune_configs
from slimtorch.sparse._linear import linear_grads
from slimtorch.sparse.formats import decompress_24, kept_columns, meta_words

SUPPORTED_DTYPES = KERNEL_DTYPES

# Dispatch thresholds — UNMEASURED until a GPU run (python -m slimtorch.sparse.bench).
GEMV_MAX_M = 2  # M <= this: gather GEMV on CUDA cores; above: per-slot tl.dot kernel (static SASS estimate)
SPLIT_K_MAX_M = 64  # split K only for M <= this
SPLIT_K_PROGRAMS_PER_SM = 2  # split until (output tiles × splits) reaches this many programs per SM
SPLIT_K_GRANULE = 512  # dense columns per split: a multiple of every config's K block
SPLIT_K_MAX_SPLITS = 16
SPLIT_K_MAX_PARTIAL_BYTES_RATIO = 0.25  # fp32 partial traffic <= this fraction of the weight bytes
PLANNING_BLOCK_N = 64  # output features per program assumed when sizing the grid (configs vary)
EXPLICIT_SPLIT_GRANULE = 32  # an explicit split_k rounds its ranges to this many columns

# ----------------------------------------------------------------------------- autotune configs


def _gemv_config(block_n: int, block_v: int, warps: int) -> triton.Config:
    return triton.Config({"BLOCK_N": block_n, "BLOCK_V": block_v}, num_warps=warps, num_stages=2)


# BLOCK_V / BLOCK_M stored values per iteration (a multiple of 16: whole meta words, so BLOCK_V >=
# 16·GEMV_MAX_M); each lane keeps BLOCK_N·BLOCK_V / (32·warps) fp32 partials across the K loop.
GEMV_CONFIGS = autotune_configs(
    [
        _gemv_config(16, 256, 4),
        _gemv_config(32, 128, 4),
        _gemv_config(8, 512, 4),
        _gemv_config(16, 128, 4),
        _gemv_config(32, 256, 8),
        _gemv_config(64, 128, 8),
        _gemv_config(16, 512, 8),
    ]
)


def _mm_config(block_m: int, block_n: int, block_k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": 8},
        num_warps=warps,
        num_stages=stages,
    )


# BLOCK_K >= 64 so each of the 4 slot dots has K = BLOCK_K/4 >= 16; every dim >= 16 for tl.dot.
# Dropped because they spill on sm_90a (benchmarks/static/sm_90a-sparse24.md): 16×64×128 with 4 warps
# (2 STL/LDL at any stage count), 128×256×64 (25–30 with 8 warps, ~870 with 16).
MM_CONFIGS = autotune_configs(
    [
        _mm_config(32, 32, 64, 4, 2),
        _mm_config(16, 64, 64, 4, 3),
        _mm_config(16, 128, 64, 4, 3),  # M = 16: 9.97 instr/weight, ceiling 0.945 of HBM, 190 regs (sm_90a)
        _mm_config(32, 64, 128, 4, 3),
        _mm_config(64, 64, 64, 4, 4),
        _mm_config(64, 128, 64, 4, 3),
        _mm_config(128, 64, 64, 4, 3),
        _mm_config(128, 128, 64, 8, 3),
    ]
)

# ----------------------------------------------------------------------------- kernels


@triton.jit
def _gemv_step(
    acc, x_rows, values_rows, meta_rows, w0, v_end, offs_w, offs_j, MASKED: tl.constexpr, BLOCK_W: tl.constexpr
):
    """acc (BLOCK_M, BLOCK_N, BLOCK_W, 16) += x[m, col(n, v)] · values[n, v] for the 16·BLOCK_W stored
    values v = 16·w + j of the meta words w = w0 .. w0 + BLOCK_W − 1 (no reduction here: every lane
    keeps its own partial products; MASKED only for the last, partial, tile of a split)."""
    words_w = w0 + offs_w  # (BLOCK_W,) meta word of each group of 16 stored values
    v = words_w[:, None] * 16 + offs_j[None, :]  # (BLOCK_W, 16) stored-value index
    if MASKED:
        v_mask = (v < v_end)[None, :, :]
        vals = tl.load(values_rows + v[None, :, :], mask=v_mask, other=0.0)
        words = tl.load(meta_rows + words_w[None, :], mask=(words_w * 16 < v_end)[None, :], other=0)
    else:
        vals = tl.load(values_rows + v[None, :, :])  # 16-byte vector loads along j
        words = tl.load(meta_rows + words_w[None, :])  # one int32 per 16 values
    idx = (words[:, :, None] >> (2 * offs_j)[None, None, :]) & 3  # 2-bit slot of value j in its group
    cols = (words_w[:, None] * 32 + (offs_j // 2) * 4)[None, :, :] + idx  # dense column: 4·(v // 2) + idx
    if MASKED:
        xg = tl.load(x_rows + cols[None, :, :, :], mask=v_mask[None, :, :, :], other=0.0)
    else:
        xg = tl.load(x_rows + cols[None, :, :, :])  # gather; x (M·K·2 bytes) stays in L1/L2
    return acc + xg.to(tl.float32) * vals.to(tl.float32)[None, :, :, :]


@triton.autotune(configs=GEMV_CONFIGS, key=["M_BUCKET", "N", "K"])
@triton.jit
def _sparse24_gemv_kernel(
    x_ptr,
    values_ptr,
    meta_ptr,
    bias_ptr,
    out_ptr,
    partial_ptr,  # SPLIT: fp32 (splits, M, N); else unused
    counter_ptr,  # SPLIT: int32 tile counters (zero); else unused
    M,
    N,
    K,
    k_per_split,  # a multiple of 32 when SPLIT: every split starts on a meta word
    M_BUCKET,  # core.gemm.m_bucket(M): the autotune key
    stride_xm,
    stride_vn,
    stride_meta_n,
    stride_om,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
):
    BLOCK_W: tl.constexpr = BLOCK_V // (16 * BLOCK_M)  # meta words per iteration: constant partials per lane
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = tl.arange(0, BLOCK_W)
    offs_j = tl.arange(0, 16)
    # Rows past M or N are clamped (in-bounds loads, no masks in the loop) and masked at the store.
    rows_n = tl.minimum(offs_n, N - 1).to(tl.int64)
    rows_m = tl.minimum(offs_m, M - 1).to(tl.int64)
    values_rows = values_ptr + rows_n[:, None, None] * stride_vn  # (BLOCK_N, 1, 1)
    meta_rows = meta_ptr + rows_n[:, None] * stride_meta_n  # (BLOCK_N, 1)
    x_rows = x_ptr + rows_m[:, None, None, None] * stride_xm  # (BLOCK_M, 1, 1, 1)
    # This split owns stored values [v_start, v_end) = dense columns [2·v_start, 2·v_end).
    v_start = split * (k_per_split // 2)
    v_end = tl.minimum(v_start + k_per_split // 2, K // 2)
    full_tiles = (v_end - v_start) // (16 * BLOCK_W)
    acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_W, 16), dtype=tl.float32)
    for it in range(0, full_tiles):
        w0 = v_start // 16 + it * BLOCK_W
        acc = _gemv_step(acc, x_rows, values_rows, meta_rows, w0, v_end, offs_w, offs_j, False, BLOCK_W)
    if v_start + full_tiles * 16 * BLOCK_W < v_end:
        w0 = v_start // 16 + full_tiles * BLOCK_W
        acc = _gemv_step(acc, x_rows, values_rows, meta_rows, w0, v_end, offs_w, offs_j, True, BLOCK_W)
    # The one reduction of the tile: 16·BLOCK_W per-lane partials -> (BLOCK_M, BLOCK_N).
    total = tl.sum(tl.sum(acc, axis=3), axis=2)
    store_splitk(
        total, offs_m, offs_n, M, N, pid_n, split, tl.num_programs(1), partial_ptr, counter_ptr, bias_ptr, bias_ptr,
        out_ptr, stride_om, SPLIT, False, HAS_BIAS, ACTIVATION,
    )  # fmt: skip


@triton.jit
def _slot_weights(v0, v1, idx_first, idx_second, SLOT: tl.constexpr):
    """(BLOCK_N, G) weights ``W[n, 4g + SLOT]`` from the first/second stored value and index of
    each group g: the stored value whose index is SLOT, else 0."""
    return tl.where(idx_first == SLOT, v0, tl.where(idx_second == SLOT, v1, tl.zeros_like(v0)))


@triton.autotune(configs=MM_CONFIGS, key=["M_BUCKET", "N", "K"])
@triton.jit
def _sparse24_mm_kernel(
    x_ptr,
    values_ptr,
    meta_ptr,
    bias_ptr,
    out_ptr,
    partial_ptr,  # SPLIT: fp32 (splits, M, N); else unused
    counter_ptr,  # SPLIT: int32 tile counters (zero); else unused
    M,
    N,
    K,
    k_per_split,
    M_BUCKET,  # core.gemm.m_bucket(M): the autotune key
    stride_xm,
    stride_vn,
    stride_meta_n,
    stride_om,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    SPLIT: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    tile = tl.program_id(0)
    pid_m, pid_n = grouped_tile(tile, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    split = tl.program_id(1)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask = offs_m < M
    n_mask = offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    values_rows = values_ptr + offs_n.to(tl.int64)[:, None] * stride_vn
    meta_rows = meta_ptr + offs_n.to(tl.int64)[:, None] * stride_meta_n
    k_start = split * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for it in range(0, tl.cdiv(k_per_split, BLOCK_K)):
        k0 = k_start + it * BLOCK_K  # a multiple of 4: the tile starts on a group
        offs_v = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        v_mask = n_mask[:, None] & (offs_v < k_end // 2)[None, :]
        vals = tl.load(values_rows + offs_v[None, :], mask=v_mask, other=0.0)
        v0, v1 = tl.split(tl.reshape(vals, (BLOCK_N, BLOCK_K // 4, 2)))  # 1st / 2nd value of each group
        offs_g = k0 // 4 + tl.arange(0, BLOCK_K // 4)
        g_mask = n_mask[:, None] & (offs_g < k_end // 4)[None, :]
        words = tl.load(meta_rows + (offs_g // 8)[None, :], mask=g_mask, other=0)
        nibble = (words >> ((offs_g % 8) * 4)[None, :]) & 15
        for slot in tl.static_range(4):
            offs_k = 4 * offs_g + slot  # x columns k0 + slot, k0 + slot + 4, ...
            x = tl.load(x_rows + offs_k[None, :], mask=m_mask[:, None] & (offs_k < k_end)[None, :], other=0.0)
            w = _slot_weights(v0, v1, nibble & 3, nibble >> 2, slot)
            acc = dot_acc(x, tl.trans(w), acc, UPCAST)
    store_splitk(
        acc, offs_m, offs_n, M, N, tile, split, tl.num_programs(1), partial_ptr, counter_ptr, bias_ptr, bias_ptr,
        out_ptr, stride_om, SPLIT, False, HAS_BIAS, ACTIVATION,
    )  # fmt: skip


# ----------------------------------------------------------------------------- checks and launcher


def check_sparse24_operands(
    x: torch.Tensor, values: torch.Tensor, bias: Optional[torch.Tensor], activation: str, *, dtypes=SUPPORTED_DTYPES
) -> tuple[int, int, int]:
    """Checks shared by every 2:4 op: x (M, K), values (N, K/2), bias (N,); returns (M, N, K)."""
    check_tensor(x, "x", ndim=2, dtype=dtypes)
    m, k = x.shape
    check_divisible(k, 4, "x.shape[1] (K)")
    check_tensor(values, "values", ndim=2, dtype=x.dtype)
    n = values.shape[0]
    if 2 * values.shape[1] != k:
        raise ValueError(f"values: expected shape (N, K/2) = (*, {k // 2}) for x with K={k}, got {tuple(values.shape)}")
    if bias is not None:
        check_tensor(bias, "bias", shape=(n,), dtype=x.dtype)
    check_choice(activation, "activation", ACTIVATIONS)
    check_same_device(x=x, values=values, bias=bias)
    return m, n, k


def _check_sparse24_mm(
    x: torch.Tensor,
    values: torch.Tensor,
    meta: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
    split_k: int = 0,
) -> None:
    _, n, k = check_sparse24_operands(x, values, bias, activation)
    check_tensor(meta, "meta", shape=(n, meta_words(k)), dtype=torch.int32)
    check_same_device(x=x, meta=meta)
    if split_k < 0:
        raise ValueError(f"split_k: expected 0 (automatic) or a positive number of splits, got {split_k}")


def split_plan(m: int, n: int, k: int, split_k: int, device: torch.device, weight_bytes: float) -> SplitK:
    """K ranges: ``split_k`` ranges of multiples of 32 columns when asked for, else core's planner
    with this op's policy (fill the GPU for M <= SPLIT_K_MAX_M, without letting the fp32 partials
    cost more than SPLIT_K_MAX_PARTIAL_BYTES_RATIO of the weight's traffic)."""
    if split_k:
        return split_k_ranges(k, split_k, EXPLICIT_SPLIT_GRANULE)
    return plan_split_k(
        m,
        n,
        k,
        sm_count=sm_count(device),
        block_m=SPLIT_K_MAX_M,  # one row of tiles for every M that splits
        block_n=PLANNING_BLOCK_N,
        min_k_per_split=SPLIT_K_GRANULE,
        max_splits=SPLIT_K_MAX_SPLITS,
        granule=SPLIT_K_GRANULE,
        programs_per_sm=SPLIT_K_PROGRAMS_PER_SM,
        max_m=SPLIT_K_MAX_M,
        max_partial_bytes=SPLIT_K_MAX_PARTIAL_BYTES_RATIO * weight_bytes,
    )


@kernel_op("slimtorch::sparse24_mm", reference="sparse24_mm_reference", check=_check_sparse24_mm, row_input="x")
def sparse24_mm(
    x: torch.Tensor,
    values: torch.Tensor,
    meta: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
    split_k: int = 0,
) -> torch.Tensor:
    """``act(x @ W.T + bias)`` for a 2:4 weight W given as (values, meta); x (M, K) -> (M, N).

    ``split_k``: 0 chooses by shape (split only for small M on a GPU); n >= 1 asks for n ranges
    of K (rounded to multiples of 32 columns).
    """
    x = x if x.stride(-1) == 1 else x.contiguous()
    values, meta = values.contiguous(), meta.contiguous()
    m, k = x.shape
    n = values.shape[0]
    out = empty_output((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    weight_bytes = values.numel() * values.element_size() + meta.numel() * 4
    splits, k_per_split = split_plan(m, n, k, split_k, x.device, weight_bytes)
    split = splits > 1
    gemv = m <= GEMV_MAX_M
    partials = splitk_partials(splits, m, n, x.device) if split else out
    if gemv:
        kernel, configs = _sparse24_gemv_kernel, GEMV_CONFIGS
        grid = lambda meta_: (triton.cdiv(n, meta_["BLOCK_N"]), splits)
        extra = dict(BLOCK_M=triton.next_power_of_2(m))
    else:
        kernel, configs = _sparse24_mm_kernel, MM_CONFIGS
        grid = lambda meta_: (triton.cdiv(m, meta_["BLOCK_M"]) * triton.cdiv(n, meta_["BLOCK_N"]), splits)
        extra = dict(UPCAST=upcast_dot_operands(x.dtype))
    counters = splitk_counters(x.device, max_tiles(configs, lambda c: grid(c)[0])) if split else out
    args = (x, values, meta, bias if bias is not None else out, out, partials, counters, m, n, k, k_per_split)
    args = (*args, m_bucket(m), x.stride(0), values.stride(0), meta.stride(0), out.stride(0))
    kernel[grid](*args, HAS_BIAS=bias is not None, ACTIVATION=activation, SPLIT=split, **extra)
    return out


# ----------------------------------------------------------------------------- autograd


def _setup_context(ctx, inputs, output) -> None:
    x, values, meta, bias, activation, split_k = inputs
    ctx.save_for_backward(x, values, meta, bias)
    ctx.activation, ctx.split_k = activation, split_k


def linear24_backward(ctx, grad_out, x, values, meta, bias, pre_activation):
    """(grad_x, grad_values, grad_bias) of ``act(x @ W.T + bias)``: grad_x = g @ W,
    grad_values = (g.T @ x) at the kept positions, grad_bias = Σ_m g, g = grad_out · act'(pre-act)
    (``pre_activation()`` recomputes it). W is decompressed to dense: not a fast path."""
    dense = decompress_24(values, meta)
    grad_x, grad_w, grad_bias = linear_grads(
        ctx, grad_out, x, dense, ctx.activation, pre_activation, weight_index=1, bias_index=3
    )
    grad_values = None
    if grad_w is not None:
        grad_values = torch.gather(grad_w, 1, kept_columns(meta, values.shape[1])).to(values.dtype)
    return grad_x, grad_values, grad_bias


def _backward(ctx, grad_out):
    x, values, meta, bias = ctx.saved_tensors
    pre_activation = lambda: sparse24_mm(x, values, meta, bias, "none", ctx.split_k)
    grad_x, grad_values, grad_bias = linear24_backward(ctx, grad_out, x, values, meta, bias, pre_activation)
    return grad_x, grad_values, None, grad_bias, None, None


sparse24_mm.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- reference


def sparse24_mm_reference(
    x: torch.Tensor,
    values: torch.Tensor,
    meta: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
    split_k: int = 0,
) -> torch.Tensor:
    """Pure torch: decompress W, ``act(x @ W.T + bias)`` accumulated in fp32 (fp64 for fp64 x)."""
    return linear_reference(x, decompress_24(values, meta), bias, activation)

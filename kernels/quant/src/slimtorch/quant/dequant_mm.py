"""Weight-only dequantising GEMM: ``y = x · Wᵀ (+ bias)`` with W decoded in registers, one Triton
kernel for every packed weight format (the ops live in ``int8_mm``, ``int4_mm``, ``lowbit_mm``,
``codebook_mm``, ``pow2_mm``; layouts in :mod:`slimtorch.quant.formats` and :mod:`slimtorch.quant.pow2`).

Math, per (BLOCK_K × BLOCK_N) tile of Wᵀ, decoded from the packed words (FORMAT, a constexpr):

    int8      W[n, k] = q[n, k]                      (exact in fp16/bf16; s_n scales the accumulator)
    int4      W[n, k] = (q − zero[g, n]) · scale[g, n],  g = k // G (a per-element gather, L1 hits)
    lowbit    t = 2c − 1 (1 bit) or (c ^ 2) − 2 (2 bits); W = pos_n if t = 1, −neg_n if t = −1, else 0
    codebook  W[n, k] = codebook[c]                  (≤ 256 fp32 entries: the gather stays in L1)
    pow2      c = sign << (S − 1) | e: W = (−1)^sign · 2^(1 − e) · 2^n1 (0 for e = 0; INQ)

pow2 decodes straight into the activation dtype's bit pattern: the exponent field gets
``bias + 1 − e`` (one integer add; 2^(1 − e) ∈ [2^−7, 1], normal in fp16), the sign bit is ORed in
and the int16/int32 pattern is bitcast — no multiply, no int→float convert. The per-layer 2^n1
multiplies the fp32 accumulator once in the epilogue (exact: a power of two, also per split).

The other formats' tiles are cast to the activation dtype; every tile is multiplied with
``tl.dot`` (fp16/bf16 tensor cores, tf32 for fp32 activations), accumulating in fp32. Packed
words are loaded once per tile, (BLOCK_K / P, BLOCK_N) int32 coalesced along N, then
shifted/masked per element.

One kernel, two launch shapes, chosen by :func:`launch_dequant_mm` from M:

- M ≤ SMALL_M_MAX (decode, batch 1..16): split-K GEMV. BLOCK_M = 16 (the smallest ``tl.dot`` tile;
  rows past M are masked), grid (N tiles, splits); split s reduces K columns
  [s·k_per_split, (s+1)·k_per_split) (planned by ``slimtorch.core.gemm.plan_split_k``) and the
  last split of each tile sums the fp32 partials in order and runs the epilogue, in the same
  launch (``slimtorch.core.gemm.store_splitk``: deterministic). Memory-bound: every weight word
  is read once.
- M > SMALL_M_MAX: output tiles (BLOCK_M × BLOCK_N) in grouped order (GROUP_M row-tiles walk the same
  weight tiles, which stay in L2), no split.

Both end in core's epilogue: int8's per-channel scale s_n, bias, cast, masked store.

Design after GPTQ-Triton / Marlin (Frantar et al., 2022 / 2024) and torchao's Triton int4 kernels.
Offsets that can pass 2^31 (rows of x/out, weight rows) are computed in int64.
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from slimtorch.core.checks import KERNEL_DTYPES, check_same_device, check_tensor
from slimtorch.core.dispatch import empty_output
from slimtorch.core.gemm import (
    SplitK,
    grouped_tile,
    m_bucket,
    max_tiles,
    plan_split_k,
    sm_count,
    splitk_counters,
    splitk_partials,
    store_splitk,
)
from slimtorch.core.triton_compat import dot_acc, upcast_dot_operands
from slimtorch.core.tuning import autotune_configs

ACTIVATION_DTYPES = KERNEL_DTYPES
SCALE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
FORMATS = ("int8", "int4", "lowbit", "codebook", "pow2")

# Dispatch thresholds: all unmeasured until a GPU run (see bench.py).
SMALL_M_MAX = 16  # M at or below: split-K GEMV path; above: the tile path
MIN_K_PER_SPLIT = 256  # a split reduces at least this many K
MAX_SPLIT_K = 16
PROGRAMS_PER_SM = 2  # split until the GEMV grid has about this many programs per SM
PLANNING_BLOCK_N = 64  # N tile assumed when sizing the split (the autotuned one may differ)
SPLIT_K_GRANULE = 256  # split ranges are multiples of this: of every config's BLOCK_K (and of 32)

_KEY = ["M_BUCKET", "N", "K", "FORMAT", "BITS", "GROUP_SIZE", "SPLIT"]

# First entry of each list: the interpreter's config, valid for every shape (masks handle tails).
# Every config compiles for sm_90 without register spills (checked ahead of time with triton 3.9
# and ptxas, 16-divisible arguments); which is fastest per shape is left to the autotuner.
SMALL_M_CONFIG_LIST = [
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 256, "GROUP_M": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 1}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 1}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 256, "GROUP_M": 1}, num_warps=2, num_stages=4),
]
SMALL_M_CONFIGS = autotune_configs(SMALL_M_CONFIG_LIST)
LARGE_M_CONFIG_LIST = [
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=8, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
]
LARGE_M_CONFIGS = autotune_configs(LARGE_M_CONFIG_LIST)


@triton.jit
def _unpack_tile(w_ptr, k0, offs_n, mask_n, N, K, BITS: tl.constexpr, BLOCK_K: tl.constexpr):
    """Codes of rows k0 .. k0 + BLOCK_K (k0 a multiple of BLOCK_K, itself a multiple of P = 32 / BITS)
    as a (BLOCK_K, BLOCK_N) int32 tile: each word is loaded once, (BLOCK_K / P, BLOCK_N), and
    expanded in registers by P shifts; row r·P + j of the tile is bits [j·BITS, (j + 1)·BITS) of
    word row r."""
    PER_WORD: tl.constexpr = 32 // BITS
    WORD_ROWS: tl.constexpr = BLOCK_K // PER_WORD
    rows = k0 // PER_WORD + tl.arange(0, WORD_ROWS)
    row_mask = rows < (K + PER_WORD - 1) // PER_WORD
    words = tl.load(
        w_ptr + rows.to(tl.int64)[:, None] * N + offs_n[None, :], mask=row_mask[:, None] & mask_n[None, :], other=0
    )
    shifts = tl.arange(0, PER_WORD) * BITS
    codes = (words[:, None, :] >> shifts[None, :, None]) & ((1 << BITS) - 1)
    return tl.reshape(codes, (BLOCK_K, words.shape[1]))


@triton.jit
def _decode_weight_tile(
    w_ptr,
    scale_ptr,
    aux_ptr,
    pos,
    neg,
    k0,
    offs_n,
    mask_n,
    N,
    K,
    GROUP_SIZE: tl.constexpr,
    FORMAT: tl.constexpr,
    BITS: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """The (BLOCK_K, BLOCK_N) fp32 tile Wᵀ[k0:k0 + BLOCK_K, n] (see the module doc for each FORMAT)."""
    offs_k = k0 + tl.arange(0, BLOCK_K)
    if FORMAT == "int8":  # (N, K) int8, K contiguous
        mask = (offs_k < K)[:, None] & mask_n[None, :]
        q = tl.load(w_ptr + offs_n.to(tl.int64)[None, :] * K + offs_k[:, None], mask=mask, other=0)
        w = q.to(tl.float32)
    else:
        codes = _unpack_tile(w_ptr, k0, offs_n, mask_n, N, K, BITS, BLOCK_K)
        if FORMAT == "int4":
            if GROUP_SIZE % BLOCK_K == 0:  # the tile lies in one group: one scale/zero row
                # (a tile past K, in the last split, reads the last group: its x columns are zero)
                group = (tl.minimum(k0, K - 1) // GROUP_SIZE).to(tl.int64) * N + offs_n
                scale = tl.load(scale_ptr + group, mask=mask_n, other=0.0).to(tl.float32)[None, :]
                zero = tl.load(aux_ptr + group, mask=mask_n, other=0).to(tl.int32)[None, :]
            else:  # several groups per tile: gather per element (L1 hits)
                group = (offs_k // GROUP_SIZE).to(tl.int64)[:, None] * N + offs_n[None, :]
                mask = (offs_k < K)[:, None] & mask_n[None, :]
                scale = tl.load(scale_ptr + group, mask=mask, other=0.0).to(tl.float32)
                zero = tl.load(aux_ptr + group, mask=mask, other=0).to(tl.int32)
            w = (codes - zero).to(tl.float32) * scale
        elif FORMAT == "lowbit":
            # 1 bit: 2c − 1; 2 bits: sign-extend the two's complement code
            t = 2 * codes - 1 if BITS == 1 else (codes ^ 2) - 2
            w = tl.where(t > 0, pos[None, :], tl.where(t < 0, -neg[None, :], 0.0))
        else:  # codebook: codes < 2^BITS index the centroids
            w = tl.load(scale_ptr + codes).to(tl.float32)
    return w


@triton.jit
def _decode_pow2_tile(
    w_ptr, k0, offs_n, mask_n, N, K, BITS: tl.constexpr, BLOCK_K: tl.constexpr, x_dtype: tl.constexpr
):
    """The (BLOCK_K, BLOCK_N) tile of 2^(1 − e) · (−1)^sign in ``x_dtype``, built as its bit pattern:
    exponent field = bias + 1 − e, sign bit from the code's top bit, zero for e = 0 (module doc)."""
    codes = _unpack_tile(w_ptr, k0, offs_n, mask_n, N, K, BITS, BLOCK_K)
    e = codes & ((1 << (BITS - 1)) - 1)
    sign = codes >> (BITS - 1)  # 0 or 1: the codes hold BITS bits
    if x_dtype == tl.float16:  # 1 | 5 exponent bits (bias 15) | 10 mantissa bits
        pattern = tl.where(e == 0, 0, ((16 - e) << 10) | (sign << 15))
        w = pattern.to(tl.int16).to(tl.float16, bitcast=True)
    elif x_dtype == tl.bfloat16:  # 1 | 8 (bias 127) | 7
        pattern = tl.where(e == 0, 0, ((128 - e) << 7) | (sign << 15))
        w = pattern.to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:  # float32: 1 | 8 (bias 127) | 23
        pattern = tl.where(e == 0, 0, ((128 - e) << 23) | (sign << 31))
        w = pattern.to(tl.float32, bitcast=True)
    return w


@triton.jit
def _pow2_scale(exponent_ptr):
    """2^n1 as fp32, from the int32 n1 (−126 ≤ n1 ≤ 127) by the same exponent-field construction."""
    n1 = tl.load(exponent_ptr)
    return ((n1 + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _dequant_mm_kernel(
    x_ptr,
    w_ptr,
    scale_ptr,  # int8: s (N,); int4: scale (K/G, N); lowbit: pos (N,); codebook: centroids; pow2: n1 (1,) int32
    aux_ptr,  # int4: zero (K/G, N) uint8; lowbit: neg (N,); else unused
    bias_ptr,
    out_ptr,  # out (M, N)
    partial_ptr,  # SPLIT: fp32 partials (splits, M, N); else unused
    counter_ptr,  # SPLIT: int32 tile counters (zero); else unused
    M,
    N,
    K,
    k_per_split,  # K columns per split (a multiple of SPLIT_K_GRANULE), K without SPLIT
    M_BUCKET,  # core.gemm.m_bucket(M): the autotune key (not used by the kernel body)
    stride_xm,
    stride_xk,
    stride_om,
    GROUP_SIZE: tl.constexpr,  # int4 group along K (0 for the other formats)
    FORMAT: tl.constexpr,
    BITS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreter + bf16 only: see slimtorch.core.triton_compat
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    tile = tl.program_id(0)
    pid_m, pid_n = grouped_tile(tile, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    split = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm

    pos = tl.zeros((BLOCK_N,), dtype=tl.float32)
    neg = tl.zeros((BLOCK_N,), dtype=tl.float32)
    if FORMAT == "lowbit":
        pos = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        neg = tl.load(aux_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)

    # this split's K range [k_begin, k_end): k_begin a multiple of BLOCK_K (k_per_split is)
    k_begin = split * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(x_rows + offs_k[None, :] * stride_xk, mask=mask_m[:, None] & (offs_k < K)[None, :], other=0.0)
        if FORMAT == "pow2":  # decoded in a's dtype directly
            w = _decode_pow2_tile(w_ptr, k0, offs_n, mask_n, N, K, BITS, BLOCK_K, x_ptr.dtype.element_ty)
            acc = dot_acc(a, w, acc, UPCAST)
        else:
            w = _decode_weight_tile(
                w_ptr, scale_ptr, aux_ptr, pos, neg, k0, offs_n, mask_n, N, K, GROUP_SIZE, FORMAT, BITS, BLOCK_K
            )
            acc = dot_acc(a, w.to(a.dtype), acc, UPCAST)
    if FORMAT == "pow2":  # W = 2^n1 · decoded: exact on every split's partial
        acc = acc * _pow2_scale(scale_ptr)

    # epilogue: y = acc · s_n (int8 only) + bias, cast (after the split-K reduction where split)
    splits = tl.num_programs(1)
    store_splitk(
        acc, offs_m, offs_n, M, N, tile, split, splits, partial_ptr, counter_ptr, scale_ptr, bias_ptr, out_ptr,
        stride_om, SPLIT, FORMAT == "int8", HAS_BIAS, "none",
    )  # fmt: skip


_small_m_kernel = triton.autotune(configs=SMALL_M_CONFIGS, key=_KEY)(_dequant_mm_kernel)
_large_m_kernel = triton.autotune(configs=LARGE_M_CONFIGS, key=_KEY)(_dequant_mm_kernel)


# ----------------------------------------------------------------------------- checks shared by the ops


def check_activation(x: torch.Tensor) -> tuple[int, int]:
    """x: a 2-d fp16/bf16/fp32 tensor (M, K); returns (M, K)."""
    check_tensor(x, "x", ndim=2, dtype=ACTIVATION_DTYPES)
    return x.shape[0], x.shape[1]


def check_bias(bias: Optional[torch.Tensor], n: int) -> None:
    if bias is not None:
        check_tensor(bias, "bias", shape=(n,), dtype=ACTIVATION_DTYPES)


def check_channel_vector(t: torch.Tensor, name: str, n: int) -> None:
    """A per-output-channel float vector (N,)."""
    check_tensor(t, name, shape=(n,), dtype=SCALE_DTYPES, contiguous=True)


def check_devices(x: torch.Tensor, **tensors: Optional[torch.Tensor]) -> None:
    check_same_device(x=x, **tensors)


# ----------------------------------------------------------------------------- launch


def split_plan(m: int, n: int, k: int, device: torch.device, block_n: int = PLANNING_BLOCK_N) -> SplitK:
    """K ranges for the GEMV path (one range on the tile path): core's planner with this
    kernel's policy (enough programs to fill the GPU, each split reducing >= MIN_K_PER_SPLIT);
    ``block_n``: the N tile the caller's configs use."""
    return plan_split_k(
        m,
        n,
        k,
        sm_count=sm_count(device),
        block_m=16,
        block_n=block_n,
        min_k_per_split=MIN_K_PER_SPLIT,
        max_splits=MAX_SPLIT_K,
        granule=SPLIT_K_GRANULE,
        programs_per_sm=PROGRAMS_PER_SM,
        max_m=SMALL_M_MAX,
    )


def launch_dequant_mm(
    x: torch.Tensor,
    fmt: str,
    bits: int,
    w: torch.Tensor,
    scale: torch.Tensor,
    aux: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    n: int,
    group_size: int = 0,
) -> torch.Tensor:
    """Run ``_dequant_mm_kernel`` for x (M, K) on the path M calls for; returns y (M, N) in x's dtype."""
    m, k = x.shape
    out = empty_output((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    plan = split_plan(m, n, k, x.device)
    kernel = _small_m_kernel if m <= SMALL_M_MAX else _large_m_kernel
    split = plan.splits > 1  # only on the GEMV path
    partials = splitk_partials(plan.splits, m, n, x.device) if split else out

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), plan.splits)

    counters = splitk_counters(x.device, max_tiles(SMALL_M_CONFIG_LIST, lambda c: grid(c)[0])) if split else out

    kernel[grid](
        x,
        w,
        scale,
        scale if aux is None else aux,
        w if bias is None else bias,
        out,
        partials,
        counters,
        m,
        n,
        k,
        plan.k_per_split,
        m_bucket(m),
        x.stride(0),
        x.stride(1),
        out.stride(0),
        GROUP_SIZE=group_size,
        FORMAT=fmt,
        BITS=bits,
        HAS_BIAS=bias is not None,
        SPLIT=split,
        UPCAST=upcast_dot_operands(x.dtype),
    )
    return out


# ----------------------------------------------------------------------------- reference tail

"""int4 group-wise weight-only GEMM: ``y = x · ((q − zero) · scale)ᵀ (+ bias)``.

Weights (:func:`slimtorch.quant.formats.quantize_int4`, or GPTQ checkpoints through
:func:`~slimtorch.quant.formats.from_gptq`): ``qweight (K/8, N) int32`` (8 codes along K per word,
lowest nibble first: GPTQ's layout), ``scale (K/G, N)`` and ``zero (K/G, N) uint8`` per group of G
consecutive k (K here is K_pad = ceil(K / G) · G when G does not divide x's K: zero weights in the
padded columns, which the kernels mask like any K tail, so x keeps its true K).

Three kernels, chosen by M and x:

- M ≤ F16_GEMV_MAX_M = 4 with fp16 x (decode, :func:`uses_f16_gemv`): ``_int4_gemv_f16_kernel``
  (the comment block above it): the same words and decode, but the products and 8-term sums on the
  fp16x2 pipe (ExLlama's design: one HFMA2 per two codes), with a per-program power of two folded
  into the decode so that no fp16 sum can overflow; fp32 carries the sum over K. 2.36 SASS
  instructions per weight at M = 1 (static ceiling 1.0 of HBM; the issue's budget: 2.5, 0.85), 3.24
  at M = 2, 5.44 at M = 4 (0.85); relative error ~5e-4 against the fp32 reference (fp16's own output
  rounding: ~1.5e-4).
- M ≤ GEMV_MAX_M otherwise (bf16 or fp32 x, M = 2): ``_int4_gemv_kernel`` below, on the CUDA
  cores, no ``tl.dot`` and so no shared-memory relayout. The GPTQ layout is already the one it
  reads, so no repacking (GPTQ import/export and state_dict stay exact by construction): word
  (r, n) holds the 8 consecutive k = 8r … 8r + 7 of channel n, words are contiguous along N, so
  each thread loads 4 channels × 8 k as one 16-byte vector (``LDG.E.128``) and reuses each x value
  for its 4 channels.
  Dequant without an int→float conversion per code (the fp16 exponent trick, two codes per 32-bit
  op): nibbles j and j + 4 sit in bits [4j, 4j + 4) and [4j + 16, 4j + 20), so

      pair = (word_j & 0x000F000F) | 0x64006400,   word_j = word (j = 0, 1) or word >> 8 (j = 2, 3)

  is two fp16 numbers 1024 + q (fp16's ulp at 1024 is 1: the code lands in the low mantissa bits;
  odd j are masked in place with 0x00F000F0, giving 1024 + 16q, so one shift serves all 8 codes).
  ``sub.f16x2`` of the pair (1024 + z, 1024 + z) (or 1024 + 16z) gives q − z exactly, and
  ``cvt.f32.f16`` reads each half in place; then fp32 FMAs with x (odd codes × 1/16 once per word)
  and the scale once per word and channel:

      acc[m, r, n] += s[g, n] · Σ_j x[m, 8r + j] · (q[8r + j, n] − z[g, n])

  The accumulator is the (M, word rows, N) tile; the sum over word rows runs once per program after
  the K loop. Split-K: ``slimtorch.core.gemm.store_splitk`` (one launch). On a GPU the decode is
  inline PTX (``_decode_word``, ASM); the interpreter runs its pure-Triton twin (same arithmetic).
  Static cost (sm_90a, ``python -m slimtorch.core.sass``): 4.7 SASS instructions per weight. The
  floor of fp32 products is 2.5 (one ``HADD2.F32`` conversion and one FFMA per code, half a LOP3);
  the rest is the sub.f16x2, the x loads and conversions, the zero points' byte unpacking and
  address arithmetic. Below that: fp16x2 products (the kernel above, fp16 x only: bf16's 8-bit
  mantissa is too short for the sums) or tensor cores (Marlin's register-fragment layout, which
  Triton cannot say without the relayout).
- M > GEMV_MAX_M: :func:`slimtorch.quant.dequant_mm.launch_dequant_mm` (FORMAT "int4", ``tl.dot``).

On CUDA the op picks per shape bucket, by measurement (:mod:`slimtorch.core.measured`), between these
(``launch_int4_weight_mm``) and torch's paths: tinygemm (``torch._weight_int4pack_mm``, bf16 x) and
dequantize + cuBLAS.

Exactness: every decoded q − z is an exact small integer; the only roundings are the fp32 products
and sums (and the output cast), so fp32 activations keep fp32 accuracy.

A quarter of fp16's weight bytes: the batch-1 GEMV is up to ~4x faster than fp16 when memory-bound
(Marlin, Frantar et al. 2024, reaches ~3.9x on Ampere; the exponent trick is Kim et al. 2022,
"Who Says Elephants Can't Run", as used by FasterTransformer and Marlin).
"""

import weakref
from typing import Optional

import torch
import triton
import triton.language as tl

from slimtorch.core import measured
from slimtorch.core.checks import check_tensor
from slimtorch.core.dispatch import empty_output
from slimtorch.core.gemm import m_bucket, max_tiles, splitk_counters, splitk_partials, store_splitk
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import compute_dtype, linear_reference
from slimtorch.core.tuning import autotune_configs
from slimtorch.quant.dequant_mm import (
    PLANNING_BLOCK_N,
    SCALE_DTYPES,
    check_activation,
    check_bias,
    check_devices,
    launch_dequant_mm,
    split_plan,
)
from slimtorch.quant.formats import check_group_size, dequantize_int4, padded_k, unpack_codes

# M at or below: the CUDA-core GEMV. Its FMAs grow with M: sm_90a best config 4.7 (M = 1), 6.4 (M = 2) and 12.6
# (M = 4, other configs spill) SASS instructions per weight, against 8.6 for the tl.dot kernel at any M <= 16.
GEMV_MAX_M = 2
MAGIC = tl.constexpr(0x64006400)  # two fp16 1024.0: OR a code into the low mantissa bits -> 1024 + code

_GEMV_KEY = ["M_BUCKET", "N", "K", "GROUP_SIZE", "SPLIT"]
# BLOCK_KW: word rows (8 k each) per iteration, a divisor of SPLIT_K_GRANULE / 8 = 32. First entry:
# the interpreter's config.
GEMV_CONFIG_LIST = [
    triton.Config({"BLOCK_N": 64, "BLOCK_KW": 16}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 128, "BLOCK_KW": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 64, "BLOCK_KW": 32}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_N": 256, "BLOCK_KW": 8}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 128, "BLOCK_KW": 8}, num_warps=2, num_stages=3),
]
GEMV_CONFIGS = autotune_configs(GEMV_CONFIG_LIST)


@triton.jit
def _codes(pair, zero):
    """(low, high) fp16 halves of the int32 ``pair`` minus ``zero`` (fp16), as fp32 (exact integers)."""
    lo = pair.to(tl.int16).to(tl.float16, bitcast=True)
    hi = (pair >> 16).to(tl.int16).to(tl.float16, bitcast=True)
    return (lo - zero).to(tl.float32), (hi - zero).to(tl.float32)


@triton.jit
def _decode_word(word, zero, ASM: tl.constexpr):
    """The 8 codes of each int32 ``word`` minus the zero point, as exact fp32 integers, in the order
    (q0 − z, 16 (q1 − z), q2 − z, 16 (q3 − z), q4 − z, 16 (q5 − z), q6 − z, 16 (q7 − z)); ``zero``
    is the uint8 zero point (as int32). ASM: the same arithmetic in PTX, two codes per 32-bit op
    (``lop3`` = AND + OR, ``sub.f16x2``), whose halves ``cvt`` reads in place (the pure-Triton twin
    below, which the interpreter runs, lets LLVM repack the halves across channels: PRMTs)."""
    if ASM:
        zero_even = (zero | 0x6400) * 0x10001  # 1024 + z in both fp16 halves
        zero_odd = ((zero << 4) | 0x6400) * 0x10001  # 1024 + 16 z
        return tl.inline_asm_elementwise(
            """{
            .reg .b32 w8, p0, p1, p2, p3;
            .reg .b16 l0, h0, l1, h1, l2, h2, l3, h3;
            shr.s32 w8, $8, 8;
            lop3.b32 p0, $8, 0x000F000F, 0x64006400, 0xea;
            lop3.b32 p1, $8, 0x00F000F0, 0x64006400, 0xea;
            lop3.b32 p2, w8, 0x000F000F, 0x64006400, 0xea;
            lop3.b32 p3, w8, 0x00F000F0, 0x64006400, 0xea;
            sub.rn.f16x2 p0, p0, $9;
            sub.rn.f16x2 p1, p1, $10;
            sub.rn.f16x2 p2, p2, $9;
            sub.rn.f16x2 p3, p3, $10;
            mov.b32 {l0, h0}, p0;
            mov.b32 {l1, h1}, p1;
            mov.b32 {l2, h2}, p2;
            mov.b32 {l3, h3}, p3;
            cvt.f32.f16 $0, l0;
            cvt.f32.f16 $1, l1;
            cvt.f32.f16 $2, l2;
            cvt.f32.f16 $3, l3;
            cvt.f32.f16 $4, h0;
            cvt.f32.f16 $5, h1;
            cvt.f32.f16 $6, h2;
            cvt.f32.f16 $7, h3;
            }""",
            "=f,=f,=f,=f,=f,=f,=f,=f,r,r,r",
            [word, zero_even, zero_odd],
            dtype=(tl.float32,) * 8,
            is_pure=True,
            pack=1,
        )
    else:
        zero_even = (zero.to(tl.int16) | 0x6400).to(tl.float16, bitcast=True)
        zero_odd = ((zero.to(tl.int16) << 4) | 0x6400).to(tl.float16, bitcast=True)
        shifted = word >> 8
        d0, d4 = _codes((word & 0x000F000F) | MAGIC, zero_even)
        d1, d5 = _codes((word & 0x00F000F0) | MAGIC, zero_odd)
        d2, d6 = _codes((shifted & 0x000F000F) | MAGIC, zero_even)
        d3, d7 = _codes((shifted & 0x00F000F0) | MAGIC, zero_odd)
        return d0, d1, d2, d3, d4, d5, d6, d7


@triton.jit
def _group_meta(scale_ptr, zero_ptr, kw0, r3, kw_end, KW, N, n3, mask_n3, GROUP_SIZE: tl.constexpr,
                BLOCK_KW: tl.constexpr, EVEN: tl.constexpr):  # fmt: skip
    """(scale as fp32, zero as int32) of the groups of word rows ``r3`` (a tile of BLOCK_KW rows from
    ``kw0``) and channels ``n3``: one (1, 1, BLOCK_N) row when the tile lies in one group, else per row."""
    if GROUP_SIZE % (8 * BLOCK_KW) == 0:
        meta = (tl.minimum(kw0, KW - 1) * 8 // GROUP_SIZE).to(tl.int64) * N + n3
        meta_mask = mask_n3
    else:
        meta = (r3 * 8 // GROUP_SIZE).to(tl.int64) * N + n3
        meta_mask = (r3 < kw_end) & mask_n3
    if EVEN:
        return tl.load(scale_ptr + meta).to(tl.float32), tl.load(zero_ptr + meta).to(tl.int32)
    scale = tl.load(scale_ptr + meta, mask=meta_mask, other=0.0).to(tl.float32)
    return scale, tl.load(zero_ptr + meta, mask=meta_mask, other=0).to(tl.int32)


@triton.jit
def _int4_gemv_kernel(
    x_ptr,
    w_ptr,  # qweight (K_pad/8, N) int32
    scale_ptr,  # (K_pad/G, N)
    zero_ptr,  # (K_pad/G, N) uint8
    bias_ptr,
    out_ptr,  # (M, N)
    partial_ptr,  # SPLIT: fp32 partials (splits, M, N)
    counter_ptr,  # SPLIT: int32 tile counters (zero)
    M,
    N,
    K,  # x's K (<= 8 · KW)
    KW,  # word rows: K_pad / 8
    kw_per_split,
    M_BUCKET,  # autotune key only
    stride_xm,
    stride_xk,
    stride_om,
    GROUP_SIZE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr,  # next power of two of M (<= GEMV_MAX_M)
    BLOCK_N: tl.constexpr,
    BLOCK_KW: tl.constexpr,
    EVEN: tl.constexpr,  # full tiles, no masks (heuristic below)
    ASM: tl.constexpr,  # decode with inline PTX (GPU); the interpreter runs the pure-Triton twin
):
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    n3 = offs_n[None, None, :]  # (1, 1, BLOCK_N)
    mask_n3 = n3 < N
    m3 = offs_m[:, None, None]  # (BLOCK_M, 1, 1)
    x_rows = x_ptr + m3.to(tl.int64) * stride_xm
    kw_begin = split * kw_per_split
    kw_end = tl.minimum(kw_begin + kw_per_split, KW)
    acc = tl.zeros((BLOCK_M, BLOCK_KW, BLOCK_N), dtype=tl.float32)
    for kw0 in range(kw_begin, kw_end, BLOCK_KW):
        r3 = (kw0 + tl.arange(0, BLOCK_KW))[None, :, None]  # word rows (1, BLOCK_KW, 1)
        w_ptrs = w_ptr + r3.to(tl.int64) * N + n3
        if EVEN:  # noqa: SIM108 (full tiles, no masks: N % BLOCK_N == 0, K = 8 KW, KW % BLOCK_KW == 0)
            word = tl.load(w_ptrs)
        else:
            word = tl.load(w_ptrs, mask=(r3 < kw_end) & mask_n3, other=0)
        scale, zero = _group_meta(scale_ptr, zero_ptr, kw0, r3, kw_end, KW, N, n3, mask_n3, GROUP_SIZE, BLOCK_KW, EVEN)
        # x at k = 8r + j, j = 0..7 (BLOCK_M, BLOCK_KW, 1), zero past K or M
        k3 = r3 * 8
        xs = x_rows + k3 * stride_xk
        if EVEN and BLOCK_M == 1:
            x0 = tl.load(xs).to(tl.float32)
            x1 = tl.load(xs + 1 * stride_xk).to(tl.float32)
            x2 = tl.load(xs + 2 * stride_xk).to(tl.float32)
            x3 = tl.load(xs + 3 * stride_xk).to(tl.float32)
            x4 = tl.load(xs + 4 * stride_xk).to(tl.float32)
            x5 = tl.load(xs + 5 * stride_xk).to(tl.float32)
            x6 = tl.load(xs + 6 * stride_xk).to(tl.float32)
            x7 = tl.load(xs + 7 * stride_xk).to(tl.float32)
        else:
            x_mask = (m3 < M) & (k3 < K)
            x0 = tl.load(xs, mask=x_mask, other=0.0).to(tl.float32)
            x1 = tl.load(xs + 1 * stride_xk, mask=x_mask & (k3 + 1 < K), other=0.0).to(tl.float32)
            x2 = tl.load(xs + 2 * stride_xk, mask=x_mask & (k3 + 2 < K), other=0.0).to(tl.float32)
            x3 = tl.load(xs + 3 * stride_xk, mask=x_mask & (k3 + 3 < K), other=0.0).to(tl.float32)
            x4 = tl.load(xs + 4 * stride_xk, mask=x_mask & (k3 + 4 < K), other=0.0).to(tl.float32)
            x5 = tl.load(xs + 5 * stride_xk, mask=x_mask & (k3 + 5 < K), other=0.0).to(tl.float32)
            x6 = tl.load(xs + 6 * stride_xk, mask=x_mask & (k3 + 6 < K), other=0.0).to(tl.float32)
            x7 = tl.load(xs + 7 * stride_xk, mask=x_mask & (k3 + 7 < K), other=0.0).to(tl.float32)
        d0, d1, d2, d3, d4, d5, d6, d7 = _decode_word(word, zero, ASM)
        even = x0 * d0 + x4 * d4 + x2 * d2 + x6 * d6
        odd = x1 * d1 + x5 * d5 + x3 * d3 + x7 * d7
        acc += scale * (even + odd * 0.0625)
    total = tl.sum(acc, axis=1)  # (BLOCK_M, BLOCK_N): the one reduction over word rows
    store_splitk(
        total, offs_m, offs_n, M, N, pid_n, split, tl.num_programs(1), partial_ptr, counter_ptr, scale_ptr,
        bias_ptr, out_ptr, stride_om, SPLIT, False, HAS_BIAS, "none",
    )  # fmt: skip


def _even(args: dict) -> bool:
    return args["N"] % args["BLOCK_N"] == 0 and args["K"] == 8 * args["KW"] and args["KW"] % args["BLOCK_KW"] == 0


_int4_gemv = triton.autotune(configs=GEMV_CONFIGS, key=_GEMV_KEY)(triton.heuristics({"EVEN": _even})(_int4_gemv_kernel))


# --- fp16 activations at M = 1: products and short sums on the packed fp16x2 pipe (ExLlama's design) ---
#
# Per element: two word rows r, r + 1 of one channel (16 codes). Decode as above, but keep the codes
# in fp16x2 pairs, times a power of two p, and multiply-add them with x pairs on the fp16x2 pipe
# (one HFMA2 per two codes):
#
#     h = Σ_{16 codes} ((q − z) · p) · x         two fp16 halves of 8 products each
#     acc[r/2, n] += s[g, n] · (float(h.lo) + float(h.hi))          fp32; the total times 1/p
#
# p = 2^e per program, e = 7 − ⌊log2 max|x|⌋ over its K range clamped to [−8, 5]: |(q − z) p x| <
# 15 · 256, so an 8-term fp16 half sum cannot overflow for any finite x, and small activations are
# scaled up rather than lost to fp16's subnormals. p enters the decode for free: fma(1024 + q, p,
# −(1024 + z) p) = (q − z) p exactly (odd codes: fma(1024 + 16q, p/16, −(64 + z) p)), both
# constants per channel and group. The fp16 roundings (each product and running half sum) cost about
# 5e-4 relative error against the fp32 reference (tests/quant/test_int4_gemv.py); fp32 carries the sum
# over K. fp32 and bf16 x keep ``_int4_gemv_kernel`` (fp32 products).
#
# x pairs: word r holds k = 8r + j as pairs (j, j + 4) (``_decode_word``); x is read as int32 pairs
# (x0, x1), (x2, x3), (x4, x5), (x6, x7), one 16-byte load per row and 4 channels: the x tile
# (rows, BLOCK_N) holds pair n % 4 of its row in column n. The inline PTX takes 4 consecutive channels
# of one row at a time (pack = 4; the blocked layout's 4 contiguous columns per thread, checked from
# the TTGIR in the tests) and re-pairs x once for the 4 (PRMT). Cost per 64 codes: 4 PRMT, 8 SHF,
# 32 LOP3, 32 HFMA2 decode, 32 HFMA2 products, 8 cvt, 4 FADD, 4 FFMA: 1.9 SASS instructions per weight
# before loads and addressing.
F16_BLOCK_KW = 16  # word rows per iteration (g128: one group per tile)
# fp16 x rows at or below: this kernel (sm_90a, K = N = 4096, best config: M = 1 2.36, M = 2 3.24, M = 4 5.44 SASS
# instr/weight (ptxas shares the decode between the rows: the PTX is pure), M = 8 spills; the tl.dot kernel: 8.56)
F16_GEMV_MAX_M = 4
# BLOCK_N = 128 · num_warps: each thread owns 4 adjacent channels and every row of the tile, so the
# weight, x and scale/zero tiles share one layout (no shared-memory conversion in the loop) and the
# per-channel constants serve BLOCK_KW / 2 row pairs. The split-K plan assumes F16_PLANNING_BLOCK_N.
F16_PLANNING_BLOCK_N = 128
# (No tl.dot, so num_stages changes nothing: the loads are not software-pipelined; latency is hidden by
# the 16 independent 16-byte loads per thread and iteration and by occupancy.)
F16_CONFIG_LIST = [
    triton.Config({"BLOCK_N": 128}, num_warps=1),  # first: the interpreter's
    triton.Config({"BLOCK_N": 256}, num_warps=2),
    triton.Config({"BLOCK_N": 512}, num_warps=4),
]
F16_CONFIGS = autotune_configs(F16_CONFIG_LIST)
_F16_KEY = ["M", "N", "K", "GROUP_SIZE", "SPLIT"]
X_LIMIT_EXPONENT = tl.constexpr(8)  # p · max|x| < 2^8 (comment above)
P_MIN_EXPONENT = tl.constexpr(-8)  # max|x| <= 65504
P_MAX_EXPONENT = tl.constexpr(5)  # (1024 + 15) · p stays below fp16's 65504


def _dot_asm() -> str:
    """PTX for 4 channels (operands: out $0-3; w0 $4-7, w1 $8-11, x pairs of rows r / r + 1 $12-15 /
    $16-19 (pair c in channel c), zero_even $20-23, zero_odd $24-27, scale $28-31, acc $32-35,
    p $36-39 and p/16 $40-43 as fp16x2 (the same in all four))."""
    lines = [
        ".reg .b32 xe<4>, xo<4>, s0, s1, q<8>, h;",
        ".reg .b16 lo, hi;",
        ".reg .f32 f0, f1;",
        "prmt.b32 xe0, $12, $14, 0x5410;",  # (x0, x4)
        "prmt.b32 xe1, $12, $14, 0x7632;",  # (x1, x5)
        "prmt.b32 xe2, $13, $15, 0x5410;",  # (x2, x6)
        "prmt.b32 xe3, $13, $15, 0x7632;",  # (x3, x7)
        "prmt.b32 xo0, $16, $18, 0x5410;",
        "prmt.b32 xo1, $16, $18, 0x7632;",
        "prmt.b32 xo2, $17, $19, 0x5410;",
        "prmt.b32 xo3, $17, $19, 0x7632;",
    ]
    for c in range(4):
        w0, w1, ze, zo, sc, acc = 4 + c, 8 + c, 20 + c, 24 + c, 28 + c, 32 + c
        lines += [
            f"shr.b32 s0, ${w0}, 8;",
            f"shr.b32 s1, ${w1}, 8;",
            f"lop3.b32 q0, ${w0}, 0x000F000F, 0x64006400, 0xea;",
            f"lop3.b32 q1, ${w0}, 0x00F000F0, 0x64006400, 0xea;",
            "lop3.b32 q2, s0, 0x000F000F, 0x64006400, 0xea;",
            "lop3.b32 q3, s0, 0x00F000F0, 0x64006400, 0xea;",
            f"lop3.b32 q4, ${w1}, 0x000F000F, 0x64006400, 0xea;",
            f"lop3.b32 q5, ${w1}, 0x00F000F0, 0x64006400, 0xea;",
            "lop3.b32 q6, s1, 0x000F000F, 0x64006400, 0xea;",
            "lop3.b32 q7, s1, 0x00F000F0, 0x64006400, 0xea;",
        ]
        for j in range(8):
            mult, zero = ("$36", ze) if j % 2 == 0 else ("$40", zo)
            lines.append(f"fma.rn.f16x2 q{j}, q{j}, {mult}, ${zero};")
        lines.append("mul.rn.f16x2 h, q0, xe0;")
        for j in range(1, 8):
            lines.append(f"fma.rn.f16x2 h, q{j}, {'xe' if j < 4 else 'xo'}{j % 4}, h;")
        lines += [
            "mov.b32 {lo, hi}, h;",
            "cvt.f32.f16 f0, lo;",
            "cvt.f32.f16 f1, hi;",
            "add.rn.f32 f0, f0, f1;",
            f"fma.rn.f32 ${c}, f0, ${sc}, ${acc};",
        ]
    return "{\n" + "\n".join(lines) + "\n}"


DOT_ASM = tl.constexpr(_dot_asm())


@triton.jit
def _f16_half(pair, HIGH: tl.constexpr):
    """One fp16 half of an int32 fp16x2 pair, as fp16."""
    if HIGH:
        return (pair >> 16).to(tl.int16).to(tl.float16, bitcast=True)
    return pair.to(tl.int16).to(tl.float16, bitcast=True)


@triton.jit
def _twin_pair(pair, zero, step, p, x_lo, x_hi, lo, hi):
    """lo/hi fp16 running sums += (decoded code pair · p) · x pair (the pure-Triton twin's step)."""
    d_lo = ((_f16_half(pair, False) - zero) * step).to(tl.float16) * p  # exact: (q − z) · p
    d_hi = ((_f16_half(pair, True) - zero) * step).to(tl.float16) * p
    return lo + d_lo * x_lo, hi + d_hi * x_hi


@triton.jit
def _twin_word(word, zero_even, zero_odd, p, x, lo, hi):
    """One word's 8 codes into the fp16 sums; ``x`` the row's 8 fp16 values (k = 8r + j)."""
    shifted = word >> 8
    lo, hi = _twin_pair((word & 0x000F000F) | MAGIC, zero_even, 1.0, p, x[0], x[4], lo, hi)
    lo, hi = _twin_pair((word & 0x00F000F0) | MAGIC, zero_odd, 0.0625, p, x[1], x[5], lo, hi)
    lo, hi = _twin_pair((shifted & 0x000F000F) | MAGIC, zero_even, 1.0, p, x[2], x[6], lo, hi)
    lo, hi = _twin_pair((shifted & 0x00F000F0) | MAGIC, zero_odd, 0.0625, p, x[3], x[7], lo, hi)
    return lo, hi


@triton.jit
def _twin_row_x(x_rows, rows, KW2, x_mask):
    """The 8 fp16 x values of word rows ``rows`` of each x row (the twin's gather; 0 past K or M)."""
    p = rows * 4
    a01 = tl.load(x_rows + p, mask=x_mask & (p < KW2), other=0)
    a23 = tl.load(x_rows + p + 1, mask=x_mask & (p + 1 < KW2), other=0)
    a45 = tl.load(x_rows + p + 2, mask=x_mask & (p + 2 < KW2), other=0)
    a67 = tl.load(x_rows + p + 3, mask=x_mask & (p + 3 < KW2), other=0)
    return (
        _f16_half(a01, False), _f16_half(a01, True), _f16_half(a23, False), _f16_half(a23, True),
        _f16_half(a45, False), _f16_half(a45, True), _f16_half(a67, False), _f16_half(a67, True),
    )  # fmt: skip


@triton.jit
def _int4_gemv_f16_kernel(
    xw_ptr,  # x (M, K) fp16 read as (M, K / 2) int32 pairs
    w_ptr,  # qweight (K_pad/8, N) int32
    scale_ptr,  # (K_pad/G, N)
    zero_ptr,  # (K_pad/G, N) uint8
    bias_ptr,
    out_ptr,  # (M, N)
    partial_ptr,  # SPLIT: fp32 partials (splits, M, N)
    counter_ptr,  # SPLIT: int32 tile counters (zero)
    M,
    N,
    K,  # x's K (even, <= 8 · KW)
    KW,  # word rows: K_pad / 8
    kw_per_split,  # a multiple of BLOCK_KW
    stride_xm,  # in int32 pairs
    stride_om,
    GROUP_SIZE: tl.constexpr,  # a multiple of 16: rows r, r + 1 (r even) share a group
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr,  # next power of two of M (<= F16_GEMV_MAX_M); the PTX runs per x row, ptxas keeps one decode
    BLOCK_N: tl.constexpr,
    BLOCK_KW: tl.constexpr,
    EVEN: tl.constexpr,
    ASM: tl.constexpr,
):
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    n3 = offs_n[None, None, :]  # (1, 1, BLOCK_N)
    mask_n3 = n3 < N
    m3 = offs_m[:, None, None]  # (BLOCK_M, 1, 1)
    mask_m3 = m3 < M
    x_rows = xw_ptr + m3 * stride_xm
    x_rows2 = xw_ptr + offs_m[:, None] * stride_xm
    kw_begin = split * kw_per_split
    kw_end = tl.minimum(kw_begin + kw_per_split, KW)
    KW2 = K // 2
    # p = 2^e (comment above) from max |x| over this program's K range and rows: per-lane maxima, one reduction
    xmax = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for p0 in range(kw_begin * 4, kw_end * 4, BLOCK_N):
        pp = (p0 + tl.arange(0, BLOCK_N))[None, :]
        a = tl.load(x_rows2 + pp, mask=(offs_m[:, None] < M) & (pp < kw_end * 4) & (pp < KW2), other=0)
        m = tl.maximum(tl.abs(_f16_half(a, False).to(tl.float32)), tl.abs(_f16_half(a, True).to(tl.float32)))
        xmax = tl.maximum(xmax, tl.where(m < float("inf"), m, 0.0))  # finite values only: a NaN/Inf row (NaN
        # out by the op's row rule) must not set the other rows' p
    top = tl.max(tl.max(xmax, axis=1), axis=0)
    exponent = ((top.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127  # ⌊log2 top⌋ (normal; 0 → −127)
    e = tl.minimum(tl.maximum(X_LIMIT_EXPONENT - 1 - exponent, P_MIN_EXPONENT), P_MAX_EXPONENT)
    unscale = ((127 - e) << 23).to(tl.float32, bitcast=True)  # 1/p in fp32
    acc = tl.zeros((BLOCK_M, BLOCK_KW // 2, BLOCK_N), dtype=tl.float32)
    r3 = (kw_begin + 2 * tl.arange(0, BLOCK_KW // 2))[None, :, None]  # even word rows; r3 + 1 the odd ones
    w_ptrs = w_ptr + r3.to(tl.int64) * N + n3  # loop-carried pointers: one add per vector and iteration
    x_ptrs = x_rows + r3 * 4 + (n3 % 4)  # pair n % 4 of row r3 in column n: one 16-byte load per 4 channels
    for kw0 in range(kw_begin, kw_end, BLOCK_KW):
        if EVEN:
            w0 = tl.load(w_ptrs)
            w1 = tl.load(w_ptrs + N)
        else:
            w0 = tl.load(w_ptrs, mask=(r3 < kw_end) & mask_n3, other=0)
            w1 = tl.load(w_ptrs + N, mask=(r3 + 1 < kw_end) & mask_n3, other=0)
        scale, zero = _group_meta(scale_ptr, zero_ptr, kw0, r3, kw_end, KW, N, n3, mask_n3, GROUP_SIZE, BLOCK_KW, EVEN)
        if ASM:
            if EVEN:
                xe = tl.load(x_ptrs)
                xo = tl.load(x_ptrs + 4)
            else:
                xe = tl.load(x_ptrs, mask=mask_m3 & (r3 * 4 + (n3 % 4) < KW2), other=0)
                xo = tl.load(x_ptrs + 4, mask=mask_m3 & (r3 * 4 + 4 + (n3 % 4) < KW2), other=0)
            zero_even = (0x8000 | ((25 + e) << 10) | zero) * 0x10001  # −(1024 + z) · p
            zero_odd = (0x8000 | ((21 + e) << 10) | (zero << 4)) * 0x10001  # −(64 + z) · p
            mult_even = ((15 + e) << 10) * 0x10001  # p
            mult_odd = ((11 + e) << 10) * 0x10001  # p / 16 (e >= −8: a normal fp16)
            acc = tl.inline_asm_elementwise(
                DOT_ASM,
                "=f,=f,=f,=f" + ",r" * 24 + ",f" * 8 + ",r" * 8,
                [w0, w1, xe, xo, zero_even, zero_odd, scale, acc, mult_even, mult_odd],
                dtype=tl.float32,
                is_pure=True,
                pack=4,
            )
        else:
            zero_even = (zero.to(tl.int16) | 0x6400).to(tl.float16, bitcast=True)  # 1024 + z
            zero_odd = ((zero.to(tl.int16) << 4) | 0x6400).to(tl.float16, bitcast=True)  # 1024 + 16 z
            p = ((15 + e) << 10).to(tl.int16).to(tl.float16, bitcast=True)
            lo = tl.zeros((BLOCK_M, BLOCK_KW // 2, BLOCK_N), tl.float16)
            hi = tl.zeros((BLOCK_M, BLOCK_KW // 2, BLOCK_N), tl.float16)
            lo, hi = _twin_word(w0, zero_even, zero_odd, p, _twin_row_x(x_rows, r3, KW2, mask_m3), lo, hi)
            lo, hi = _twin_word(w1, zero_even, zero_odd, p, _twin_row_x(x_rows, r3 + 1, KW2, mask_m3), lo, hi)
            acc += scale * (lo.to(tl.float32) + hi.to(tl.float32))
        w_ptrs += BLOCK_KW * N
        x_ptrs += BLOCK_KW * 4
        r3 += BLOCK_KW
    total = tl.sum(acc, axis=1) * unscale  # (BLOCK_M, BLOCK_N)
    store_splitk(
        total, offs_m, offs_n, M, N, pid_n, split, tl.num_programs(1), partial_ptr, counter_ptr, scale_ptr,
        bias_ptr, out_ptr, stride_om, SPLIT, False, HAS_BIAS, "none",
    )  # fmt: skip


_int4_gemv_f16 = triton.autotune(configs=F16_CONFIGS, key=_F16_KEY)(
    triton.heuristics({"EVEN": _even})(_int4_gemv_f16_kernel)
)


def uses_f16_gemv(x: torch.Tensor, group_size: int) -> bool:
    """Whether x takes ``_int4_gemv_f16_kernel``: fp16, at most GEMV_MAX_M rows, K even and contiguous, rows
    4-byte aligned (read as int32 pairs), groups of whole word-row pairs (G % 16 == 0). Other x (bf16,
    fp32): ``_int4_gemv_kernel``."""
    return (
        x.dtype == torch.float16
        and x.shape[0] <= F16_GEMV_MAX_M
        and x.shape[1] % 2 == 0
        and x.stride(1) == 1
        and (x.shape[0] == 1 or x.stride(0) % 2 == 0)
        and (x.storage_offset() % 2 == 0)
        and group_size % 16 == 0
    )


def launch_int4_gemv(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The CUDA-core GEMVs for x (M, K): ``_int4_gemv_f16_kernel`` where :func:`uses_f16_gemv`, else
    ``_int4_gemv_kernel`` (M ≤ GEMV_MAX_M); split-K planned as for the tile kernel."""
    m, k = x.shape
    kw, n = qweight.shape
    f16 = uses_f16_gemv(x, group_size)
    if m > (F16_GEMV_MAX_M if f16 else GEMV_MAX_M):
        limit = f"F16_GEMV_MAX_M = {F16_GEMV_MAX_M}" if x.dtype == torch.float16 else f"GEMV_MAX_M = {GEMV_MAX_M}"
        raise ValueError(f"x: expected at most {limit} rows for the int4 GEMV, got {m}")
    out = empty_output((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    # k_per_split: a multiple of 256 = 32 word rows
    plan = split_plan(m, n, 8 * kw, x.device, block_n=F16_PLANNING_BLOCK_N if f16 else PLANNING_BLOCK_N)
    split = plan.splits > 1
    partials = splitk_partials(plan.splits, m, n, x.device) if split else out

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), plan.splits)

    if f16:
        counters = splitk_counters(x.device, max_tiles(F16_CONFIG_LIST, lambda c: grid(c)[0])) if split else out
        block_kw = F16_BLOCK_KW if m <= 2 else F16_BLOCK_KW // 2  # M > 2: half the tile (registers)
        _int4_gemv_f16[grid](
            x.view(torch.int32), qweight, scale, zero, qweight if bias is None else bias, out, partials, counters,
            m, n, k, kw, plan.k_per_split // 8, x.stride(0) // 2, out.stride(0), GROUP_SIZE=group_size,
            HAS_BIAS=bias is not None, SPLIT=split, BLOCK_M=triton.next_power_of_2(m), BLOCK_KW=block_kw,
            ASM=x.device.type == "cuda",
        )  # fmt: skip
        return out
    counters = splitk_counters(x.device, max_tiles(GEMV_CONFIG_LIST, lambda c: grid(c)[0])) if split else out
    _int4_gemv[grid](
        x, qweight, scale, zero, qweight if bias is None else bias, out, partials, counters,
        m, n, k, kw, plan.k_per_split // 8, m_bucket(m), x.stride(0), x.stride(1), out.stride(0),
        GROUP_SIZE=group_size, HAS_BIAS=bias is not None, SPLIT=split, BLOCK_M=triton.next_power_of_2(m),
        ASM=x.device.type == "cuda",
    )  # fmt: skip
    return out


def _check_int4_weight_mm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    bias: Optional[torch.Tensor] = None,
) -> None:
    _, k = check_activation(x)
    check_group_size(k, group_size)
    k_pad = padded_k(k, group_size)  # the layout pads K to the group size (formats module doc)
    check_tensor(qweight, "qweight", ndim=2, dtype=torch.int32, contiguous=True)
    n = qweight.shape[1]
    check_tensor(qweight, "qweight", shape=(k_pad // 8, n))
    check_tensor(scale, "scale", shape=(k_pad // group_size, n), dtype=SCALE_DTYPES, contiguous=True)
    check_tensor(zero, "zero", shape=(k_pad // group_size, n), dtype=torch.uint8, contiguous=True)
    check_bias(bias, n)
    check_devices(x, qweight=qweight, scale=scale, zero=zero, bias=bias)


def launch_int4_weight_mm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Our kernels (``int4_weight_mm.launcher``): the GEMVs up to GEMV_MAX_M rows, else the tile kernel."""
    if x.shape[0] <= GEMV_MAX_M or uses_f16_gemv(x, group_size):
        return launch_int4_gemv(x, qweight, scale, zero, group_size, bias)
    return launch_dequant_mm(x, "int4", 4, qweight, scale, zero, bias, qweight.shape[1], group_size)


# torch's tinygemm operands (``_convert_weight_to_int4pack``: two codes per byte, the even k in the high
# nibble; scale-and-zero (K/G, N, 2) bf16 with w = (q − 8) · s + (8 − z) · s), built on first use per
# qweight tensor and version, held (weakly: they go with the layer's buffer) only while chosen.
_TINYGEMM: "weakref.WeakKeyDictionary[torch.Tensor, tuple]" = weakref.WeakKeyDictionary()
TINYGEMM = "torch._weight_int4pack_mm"


def tinygemm_operands(qweight: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> tuple:
    """(packed, scale_and_zero, inner_k_tiles) of torch's int4 GEMM for our layout (module doc)."""
    k_pad, n = qweight.shape[0] * 8, qweight.shape[1]
    if k_pad % 64 or n % 8:
        raise ValueError(f"qweight: torch's int4 GEMM needs K % 64 == 0 and N % 8 == 0, got K = {k_pad}, N = {n}")
    cached = _TINYGEMM.get(qweight)
    if cached is not None and cached[0] == (qweight._version, scale.data_ptr(), zero.data_ptr()):
        return cached[1]
    codes = unpack_codes(qweight, 4, k_pad)  # (N, K_pad)
    w_uint8 = ((codes[:, ::2] << 4) | codes[:, 1::2]).to(torch.uint8)
    inner = 8 if k_pad % 256 == 0 else 4 if k_pad % 128 == 0 else 2
    packed = torch._convert_weight_to_int4pack(w_uint8, inner)
    s = scale.float()
    scale_and_zero = torch.stack([s, (8.0 - zero.float()) * s], dim=-1).to(torch.bfloat16).contiguous()
    operands = (packed, scale_and_zero, inner)
    _TINYGEMM[qweight] = ((qweight._version, scale.data_ptr(), zero.data_ptr()), operands)
    return operands


def _torch_paths(x, qweight, scale, zero, group_size, bias) -> dict:
    """torch's ways to the same product, for dispatch by measurement: its int4 GEMM (tinygemm, bf16
    x, K = K_pad) and dequantize + cuBLAS."""

    def tinygemm() -> torch.Tensor:
        if x.dtype != torch.bfloat16 or x.shape[1] != qweight.shape[0] * 8:
            raise TypeError(f"x: torch's int4 GEMM takes bf16 x with K = K_pad, got {x.dtype}, K = {x.shape[1]}")
        packed, scale_and_zero, _ = tinygemm_operands(qweight, scale, zero)
        y = torch._weight_int4pack_mm(x, packed, group_size, scale_and_zero)
        return y if bias is None else y + bias.to(x.dtype)

    def decode(dtype: torch.dtype) -> torch.Tensor:
        return dequantize_int4(qweight, scale, zero, group_size, dtype=dtype, k=x.shape[1])

    return {TINYGEMM: tinygemm, measured.DECODE_LINEAR: measured.decode_linear(x, decode, bias)}


@kernel_op(
    "slimtorch::int4_weight_mm", reference="int4_weight_mm_reference", check=_check_int4_weight_mm, row_input="x"
)
def int4_weight_mm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """x (M, K) · dequant(qweight (K/8, N), scale, zero (K/G, N))ᵀ + bias → (M, N) in x's dtype. On CUDA,
    our kernel or torch's path, whichever measured faster for this shape bucket (core.measured)."""
    candidates = {
        "triton": lambda: launch_int4_weight_mm(x, qweight, scale, zero, group_size, bias),
        **_torch_paths(x, qweight, scale, zero, group_size, bias),
    }
    key = (*measured.gemm_key(x, qweight.shape[1], x.shape[1]), group_size)
    out = measured.run("slimtorch::int4_weight_mm", key, candidates, x)
    if qweight in _TINYGEMM and measured.chosen("slimtorch::int4_weight_mm", key, x) != TINYGEMM:
        del _TINYGEMM[qweight]  # built for the trial only
    return out


int4_weight_mm.launcher = launch_int4_weight_mm  # benchmarks and the static report time our kernels themselves


def int4_weight_mm_reference(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    w = dequantize_int4(qweight, scale, zero, group_size, dtype=compute_dtype(x.dtype), k=x.shape[-1])
    return linear_reference(x, w, bias)

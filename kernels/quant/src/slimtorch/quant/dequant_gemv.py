"""Weight-only dequantising GEMV for decode (M ≤ a format's GEMV_MAX_M): ``y = x · Wᵀ (+ bias)`` on the
CUDA cores, one Triton kernel for the int8, low-bit (1/2-bit), codebook and power-of-two formats (FORMAT, a
constexpr, as :mod:`slimtorch.quant.dequant_mm` has for the ``tl.dot`` tile kernel). int4 has its own GEMV
(:mod:`slimtorch.quant.int4_mm`), the model for this one.

Why a second kernel: at M ≤ 16 the tile kernel pads M to 16 for ``tl.dot`` and round-trips every
decoded weight through shared memory to change its layout; here nothing leaves registers:

- the weight words are loaded as 16-byte vectors (``LDG.E.128``) straight in the layout they are
  stored in, each thread decodes its own words, no ``tl.dot`` and no relayout;
- the accumulator is the whole (M, k-lanes, N) tile in fp32: per-lane partials across the K loop, and
  ONE reduction over the k lanes per program after the loop (no shuffles or barriers inside it);
- split-K (planned as for the tile kernel, :func:`slimtorch.quant.dequant_mm.split_plan`) is reduced in
  the same launch by :func:`slimtorch.core.gemm.store_splitk`.

Layouts (:mod:`slimtorch.quant.formats`, :mod:`slimtorch.quant.pow2`) and the decode per FORMAT
(every product and sum in fp32, so fp32 activations keep fp32 accuracy):

- ``int8``: ``qweight (N, K) int8``, K contiguous. A thread loads 16 consecutive k of one channel (one
  ``LDG.E.128``) and converts each byte with an ``I2F`` (after a sign-extending ``PRMT`` for three bytes
  of four: 1.75 instructions per weight; the fp16 exponent trick, ``(q ^ 0x80) | 0x6400`` by byte
  permutes, a ``sub.f16x2`` and a half→float convert per weight, costs about 2.5). ``acc[m, n, k] +=
  x[m, k] · q[n, k]``; the per-channel scale s_n multiplies the reduced sum once, in core's epilogue.
- packed codes (``lowbit``, ``codebook``, ``pow2``): ``qweight (ceil(K / P), N) int32``, P = 32 / B codes of
  B bits along K per word (code j of word r is k = r·P + j, bits [j·B, (j + 1)·B)), words contiguous along
  N: a thread loads 4 channels' words as one ``LDG.E.128`` and reuses each x value for its channels.
  ``acc[m, r, n] += Σ_j x[m, r·P + j] · w_j(word[r, n])`` with w_j per FORMAT:

  Byte tables (``lowbit``, ``codebook`` with 2- or 4-bit storage): each program first writes a table whose
  row b holds the values of the G = 8 / B codes of byte value b (256 rows, 2-8 KiB fp32, a scratch buffer;
  every program writes the same values), then reads each word's bytes as 64-bit loads of code pairs: one
  address and one L1 load per two weights, no per-code shift and mask. The values per FORMAT:

  - ``lowbit`` (B = 1: t = 2c − 1; B = 2: t = (c ^ 2) − 2): W = pos_n for t > 0, −neg_n for t < 0, else 0.
    pos/neg factor out of the sum over k. 1 bit: table value c, A = Σ x·c and the per-row Σ x (which every
    channel shares), y = pos_n·A − neg_n·(Σ x − A). 2 bits: table value t (code 2, which the packer never
    writes, clamped to −1 as the format reads it), T = Σ x·t and Z = Σ x·|t| (two FMAs per weight, the |·|
    free on the operand: the asymmetric TTQ values need both), y = ((pos + neg)·T + (pos − neg)·Z) / 2
    after the loop. Products, never selects: x = NaN meets t = 0 as 0 · NaN = NaN;
  - ``codebook``: W = codebook[c] (4-bit: 7.6 → 3.7 SASS instructions per weight against the tl.dot kernel).
    8-bit storage (one code per byte): one gather per code from the codebook itself, its byte offset ORed
    into the table's address when the table is aligned to its size (no 64-bit add);
  - ``pow2`` (INQ, c = sign << (B − 1) | e): W = (−1)^sign · 2^(1 − e), built as the fp32 bit pattern
    (exponent field 128 − e, the sign bit ORed in, 0 for e = 0: no multiply, no int→float convert); the
    layer's 2^n1 multiplies the reduced sum (exact, a power of two).

  The last word's padding codes are 0 (a nonzero weight for ``lowbit`` 1-bit and ``codebook``): x past K is
  loaded as 0, so they add nothing, as the reference's true-K decode has it.

Design after the int4 GEMV here, Marlin's and FasterTransformer's decode (Frantar et al. 2024; Kim et al.
2022), and the LUT-free CUDA-core GEMVs of llama.cpp / BitNet for ≤ 2-bit weights.
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from slimtorch.core.checks import check_choice, is_fake
from slimtorch.core.dispatch import empty_output
from slimtorch.core.gemm import m_bucket, max_tiles, splitk_counters, splitk_partials, store_splitk
from slimtorch.core.reference import compute_dtype, linear_reference
from slimtorch.core.tuning import autotune_configs
from slimtorch.quant.dequant_mm import split_plan
from slimtorch.quant.formats import dequantize_int8, unpack_codes

FORMATS = ("int8", "lowbit", "codebook", "pow2")
# M at or below which each op runs this GEMV (above: dequant_mm's tl.dot kernel): the GEMV's FMAs grow with M, the
# tile kernel's cost does not. Static ceilings, best config (benchmarks/static/sm_90a-gemv.md and sm_90a-gemv-m.md,
# K = N = 4096, fp16 x; the tile kernel's at M = 1 and 16):
#   int8      M = 1: 3.4 instr/weight, ceiling 1.00 (tile 4.7, 1.00); M = 2: 4.7-5.0 vs the tile's 4.6, both 1.00
#             (the 64 x 64 config's M = 2 / 4 rows read 1.6-1.8: the report's hot loop there is not the K loop)
#   lowbit    2-bit M = 1: 0.53 of HBM (tile 0.23), M = 2: 0.31, M = 4: 0.32 but 3 of 5 configs spill (tile 0.25);
#             1-bit 0.36 / 0.44 / 0.52 (tile 0.20-0.27)
#   codebook  4-bit M = 1: 1.00 (tile 0.52), M = 2: 0.77 (tile 0.52-0.55), M = 4: 0.49 (tile 0.55); 2-bit 0.70 / 0.44
#   pow2      5-bit M = 1: 0.94 (tile 0.87), M = 2: 0.75 (tile 0.84)
GEMV_MAX_M = {"int8": 1, "lowbit": 2, "codebook": 2, "pow2": 1}

_KEY = ["M_BUCKET", "N", "K", "FORMAT", "BITS", "SPLIT"]
# BLOCK_K: codes (k) per iteration, a divisor of SPLIT_K_GRANULE = 256 and a multiple of 32 (so of every
# format's codes per word); BLOCK_N: channels. First entry: the interpreter's config.
# Packed codes: a thread holds 4 channels' words per 16-byte load (several such groups for wide BLOCK_N), all
# sharing each x value; the (BLOCK_K / P) × BLOCK_N accumulator stays in registers. (256 x 128 on 2 warps:
# spilled for every format at M = 1, dropped.)
GEMV_CONFIG_LIST = [
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 256, "BLOCK_K": 64}, num_warps=2, num_stages=3),
    triton.Config({"BLOCK_N": 512, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 128, "BLOCK_K": 256}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 256, "BLOCK_K": 128}, num_warps=8, num_stages=3),
]
GEMV_CONFIGS = autotune_configs(GEMV_CONFIG_LIST)
# int8 (N, K): BLOCK_N · BLOCK_K / threads fp32 accumulators per thread (at most 64: no spills).
INT8_CONFIG_LIST = [
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 128, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 64, "BLOCK_K": 128}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 256, "BLOCK_K": 64}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_N": 128, "BLOCK_K": 128}, num_warps=8, num_stages=4),
]
INT8_CONFIGS = autotune_configs(INT8_CONFIG_LIST)


@triton.jit
def _pow2_value(c, B: tl.constexpr):
    """fp32 (−1)^sign · 2^(1 − e) of the INQ code c = sign << (B − 1) | e (0 for e = 0), as its bit pattern."""
    e = c & ((1 << (B - 1)) - 1)
    sign = (c >> (B - 1)) << 31
    return tl.where(e == 0, 0, ((128 - e) << 23) | sign).to(tl.float32, bitcast=True)


@triton.jit
def _x_code(xs, j: tl.constexpr, stride_xk, m3, r3, M, K, P: tl.constexpr, EVEN: tl.constexpr):
    """x[m, r·P + j] as fp32 for the word rows r3 (0 past K or M)."""
    if EVEN:
        return tl.load(xs + j * stride_xk).to(tl.float32)
    return tl.load(xs + j * stride_xk, mask=(m3 < M) & (r3 * P + j < K), other=0.0).to(tl.float32)


@triton.jit
def _table_entry(table_ptr, table_base, word, j: tl.constexpr, B: tl.constexpr, SHIFT: tl.constexpr,
                 ALIGNED: tl.constexpr):  # fmt: skip
    """codebook[c_j] as fp32 for code j of each word. ALIGNED (the table starts at a multiple of its size):
    the byte offset c_j << SHIFT is ORed into the base address (one SHF + one LOP3, no 64-bit add: the
    carry cannot happen), else the plain gather."""
    MASK: tl.constexpr = (1 << B) - 1
    if ALIGNED:
        if j * B >= SHIFT:  # noqa: SIM108 (constexpr branches)
            offset = (word >> (j * B - SHIFT)) & (MASK << SHIFT)
        else:
            offset = (word << (SHIFT - j * B)) & (MASK << SHIFT)
        ptr = (table_base | offset.to(tl.int64)).to(table_ptr.dtype)
        return tl.load(ptr).to(tl.float32)
    return tl.load(table_ptr + ((word >> (j * B)) & MASK).to(tl.uint32)).to(tl.float32)


@triton.jit
def _dequant_gemv_kernel(
    x_ptr,
    w_ptr,  # int8: (N, K) int8; else (KW, N) int32 words of P codes
    scale_ptr,  # int8: s (N,); lowbit: pos (N,); codebook: centroids (2^bits,); pow2: n1 (1,) int32
    aux_ptr,  # lowbit: neg (N,); else unused
    bias_ptr,
    out_ptr,  # (M, N)
    partial_ptr,  # SPLIT: fp32 partials (splits, M, N)
    counter_ptr,  # SPLIT: int32 tile counters (zero)
    table_ptr,  # BYTE_TABLE: a (256, 8 / B) fp32 scratch table (every program writes it); else unused
    M,
    N,
    K,  # x's K
    KW,  # word rows (int8: K)
    kw_per_split,  # word rows per split (a multiple of BLOCK_K / P)
    M_BUCKET,  # autotune key only
    stride_xm,
    stride_xk,
    stride_om,
    FORMAT: tl.constexpr,
    BITS: tl.constexpr,  # bits per stored code (int8: 8)
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr,  # next power of two of M
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    EVEN: tl.constexpr,  # full tiles, no masks (heuristic below)
    TABLE_SHIFT: tl.constexpr = 2,  # codebook: log2 of its element size
    ALIGNED: tl.constexpr = False,  # codebook: its base address is a multiple of its size (a power of two)
    BYTE_TABLE: tl.constexpr = False,  # lowbit, codebook 2/4-bit storage: decode a byte's codes by table rows
):
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    m3 = offs_m[:, None, None]  # (BLOCK_M, 1, 1)
    x_rows = x_ptr + m3.to(tl.int64) * stride_xm
    kw_begin = split * kw_per_split
    kw_end = tl.minimum(kw_begin + kw_per_split, KW)
    if FORMAT == "int8":
        # acc[m, n, k]: a thread holds 16 consecutive k of a channel (one 16-byte load)
        n3 = offs_n[None, :, None]  # (1, BLOCK_N, 1)
        w_rows = w_ptr + n3.to(tl.int64) * K
        acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K), dtype=tl.float32)
        for k0 in range(kw_begin, kw_end, BLOCK_K):
            k3 = tl.max_contiguous(tl.multiple_of(k0 + tl.arange(0, BLOCK_K), BLOCK_K), BLOCK_K)[None, None, :]
            if EVEN:
                q = tl.load(w_rows + k3)
                xv = tl.load(x_rows + k3 * stride_xk)
            else:
                q = tl.load(w_rows + k3, mask=(n3 < N) & (k3 < kw_end), other=0)
                xv = tl.load(x_rows + k3 * stride_xk, mask=(m3 < M) & (k3 < kw_end), other=0.0)
            acc += xv.to(tl.float32) * q.to(tl.float32)
        total = tl.sum(acc, axis=2)  # the one reduction over the k lanes; s_n in the epilogue
    else:
        P: tl.constexpr = 32 // BITS  # codes per word
        BLOCK_KW: tl.constexpr = BLOCK_K // P
        MASK: tl.constexpr = (1 << BITS) - 1
        n3 = offs_n[None, None, :]  # (1, 1, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_KW, BLOCK_N), dtype=tl.float32)  # Σ x·W (lowbit: A = Σ x·[t > 0])
        acc2 = tl.zeros((BLOCK_M, BLOCK_KW, BLOCK_N), dtype=tl.float32)  # lowbit 2-bit: Bn = Σ x·[t < 0]
        xsum = tl.zeros((BLOCK_M, BLOCK_KW, 1), dtype=tl.float32)  # lowbit 1-bit: Σ x (Bn = Σ x − A)
        table_base = scale_ptr.to(tl.int64)  # codebook: the table's address, ORed with byte offsets
        G: tl.constexpr = 8 // BITS  # codes per byte
        tl.static_assert(BYTE_TABLE or FORMAT != "lowbit", "lowbit decodes through the byte table")
        if BYTE_TABLE:  # every program writes the same byte table, then reads it
            slot = tl.arange(0, 256 * G)  # table[byte, i] = value of code (byte >> (i·B)) & MASK
            code = ((slot // G) >> ((slot % G) * BITS)) & MASK
            if FORMAT == "codebook":
                value = tl.load(scale_ptr + code).to(tl.float32)
            elif BITS == 1:  # [t > 0] = c
                value = code.to(tl.float32)
            else:  # t = (c ^ 2) − 2, code 2 (never packed) clamped to −1 as the format reads it
                value = tl.maximum((code ^ 2) - 2, -1).to(tl.float32)
            tl.store(table_ptr + slot, value)
            tl.debug_barrier()  # the CTA's stores are visible to its loads
        r3 = (kw_begin + tl.arange(0, BLOCK_KW))[None, :, None]  # word rows (1, BLOCK_KW, 1)
        w_ptrs = w_ptr + r3.to(tl.int64) * N + n3  # advanced by BLOCK_KW rows per iteration
        xs = x_rows + (r3 * P) * stride_xk
        for _ in range(kw_begin, kw_end, BLOCK_KW):
            if EVEN:  # noqa: SIM108
                word = tl.load(w_ptrs)
            else:
                word = tl.load(w_ptrs, mask=(r3 < kw_end) & (n3 < N), other=0)
            if BYTE_TABLE:  # byte b of each word = codes G·b .. G·b + G − 1
                for b in tl.static_range(P // G):
                    entry = ((word >> (8 * b)) & 0xFF) * (G // 2)  # the byte's table row, in 8-byte pairs
                    for h in tl.static_range(G // 2):
                        # the values of codes j, j + 1 (j = G·b + 2h) as one 64-bit load
                        pair = tl.load(table_ptr.to(tl.pointer_type(tl.int64)) + entry + h)
                        v0 = pair.to(tl.int32).to(tl.float32, bitcast=True)
                        v1 = (pair >> 32).to(tl.int32).to(tl.float32, bitcast=True)
                        x0 = _x_code(xs, G * b + 2 * h, stride_xk, m3, r3, M, K, P, EVEN)
                        x1 = _x_code(xs, G * b + 2 * h + 1, stride_xk, m3, r3, M, K, P, EVEN)
                        acc += x0 * v0
                        acc += x1 * v1
                        if FORMAT == "lowbit" and BITS == 1:
                            xsum += x0 + x1
                        elif FORMAT == "lowbit":  # Z = Σ x·|t|
                            acc2 += x0 * tl.abs(v0)
                            acc2 += x1 * tl.abs(v1)
            for j in tl.static_range(0 if BYTE_TABLE else P):  # 8-bit codebook storage, pow2: code by code
                # code j of each word: k = r·P + j, bits [j·B, (j + 1)·B)
                xj = _x_code(xs, j, stride_xk, m3, r3, M, K, P, EVEN)
                if FORMAT == "codebook":  # L1-resident table
                    acc += xj * _table_entry(scale_ptr, table_base, word, j, BITS, TABLE_SHIFT, ALIGNED)
                else:  # pow2
                    acc += xj * _pow2_value((word >> (j * BITS)) & MASK, BITS)
            w_ptrs += BLOCK_KW * N
            xs += BLOCK_K * stride_xk
            r3 += BLOCK_KW
        total = tl.sum(acc, axis=1)  # (BLOCK_M, BLOCK_N): the one reduction over word rows
        if FORMAT == "lowbit":
            mask_n = offs_n < N
            pos = tl.load(scale_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
            neg = tl.load(aux_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
            if BITS == 1:
                below = tl.sum(xsum, axis=1) - total  # (BLOCK_M, 1) − (BLOCK_M, BLOCK_N)
                total = pos * total - neg * below
            else:  # W = (pos + neg)/2 · t + (pos − neg)/2 · |t|
                total = 0.5 * ((pos + neg) * total + (pos - neg) * tl.sum(acc2, axis=1))
        elif FORMAT == "pow2":  # W = 2^n1 · decoded: exact on every split's partial
            n1 = tl.load(scale_ptr)
            total = total * ((n1 + 127) << 23).to(tl.float32, bitcast=True)
    store_splitk(
        total, offs_m, offs_n, M, N, pid_n, split, tl.num_programs(1), partial_ptr, counter_ptr, scale_ptr,
        bias_ptr, out_ptr, stride_om, SPLIT, FORMAT == "int8", HAS_BIAS, "none",
    )  # fmt: skip


def _codes_per_word(fmt: str, bits: int) -> int:
    return 1 if fmt == "int8" else 32 // bits


def _even(args: dict) -> bool:
    p = _codes_per_word(args["FORMAT"], args["BITS"])
    return (
        args["M"] == args["BLOCK_M"]
        and args["N"] % args["BLOCK_N"] == 0
        and args["K"] == p * args["KW"]
        and args["K"] % args["BLOCK_K"] == 0
    )


_heuristic_kernel = triton.heuristics({"EVEN": _even})(_dequant_gemv_kernel)
_dequant_gemv = triton.autotune(configs=GEMV_CONFIGS, key=_KEY)(_heuristic_kernel)
_int8_gemv = triton.autotune(configs=INT8_CONFIGS, key=_KEY)(_heuristic_kernel)


# CUDA's caching allocator (and the CPU one) aligns every allocation to at least this many bytes
ALLOCATOR_ALIGNMENT = 512


def _aligned_table(table: torch.Tensor) -> bool:
    """True when the codebook starts at a multiple of its size rounded up to a power of two (the OR
    addressing of ``_table_entry``); fake tensors (the static report) assume an allocation of their own."""
    span = 1 << (table.numel() * table.element_size() - 1).bit_length()
    if is_fake(table):
        return span <= ALLOCATOR_ALIGNMENT and table.storage_offset() == 0
    return table.data_ptr() % span == 0


def launch_dequant_gemv(
    x: torch.Tensor,
    fmt: str,
    bits: int,
    w: torch.Tensor,
    scale: torch.Tensor,
    aux: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    n: int,
) -> torch.Tensor:
    """``_dequant_gemv_kernel`` for x (M ≤ GEMV_MAX_M[fmt], K) → y (M, N) in x's dtype; arguments as
    :func:`slimtorch.quant.dequant_mm.launch_dequant_mm` (the ops check them); split-K planned as there."""
    check_choice(fmt, "fmt", FORMATS)
    m, k = x.shape
    if m > GEMV_MAX_M[fmt]:
        raise ValueError(f"x: expected at most GEMV_MAX_M = {GEMV_MAX_M[fmt]} rows for the {fmt} GEMV, got {m}")
    out = empty_output((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    p = _codes_per_word(fmt, bits)
    kw = k if fmt == "int8" else w.shape[0]
    plan = split_plan(m, n, p * kw, x.device)  # k_per_split: a multiple of 256, so of BLOCK_K
    split = plan.splits > 1
    partials = splitk_partials(plan.splits, m, n, x.device) if split else out

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), plan.splits)

    configs = INT8_CONFIG_LIST if fmt == "int8" else GEMV_CONFIG_LIST
    counters = splitk_counters(x.device, max_tiles(configs, lambda c: grid(c)[0])) if split else out
    table = {}
    if fmt == "codebook":
        table = {"TABLE_SHIFT": scale.element_size().bit_length() - 1, "ALIGNED": _aligned_table(scale)}
    byte_table = out
    if fmt == "lowbit" or (fmt == "codebook" and bits in (2, 4)):  # a byte's codes from a 256-row table
        byte_table, table["BYTE_TABLE"] = torch.empty(256 * 8 // bits, dtype=torch.float32, device=x.device), True
    kernel = _int8_gemv if fmt == "int8" else _dequant_gemv
    kernel[grid](
        x, w, scale, scale if aux is None else aux, w if bias is None else bias, out, partials, counters, byte_table,
        m, n, k, kw, plan.k_per_split // p, m_bucket(m), x.stride(0), x.stride(1), out.stride(0),
        FORMAT=fmt, BITS=bits, HAS_BIAS=bias is not None, SPLIT=split, BLOCK_M=triton.next_power_of_2(m), **table,
    )  # fmt: skip
    return out


def dequant_gemv_reference(
    x: torch.Tensor,
    fmt: str,
    bits: int,
    w: torch.Tensor,
    scale: torch.Tensor,
    aux: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    n: int,
) -> torch.Tensor:
    """:func:`launch_dequant_gemv`'s result in pure torch (the oracle of its arguments: ``bits`` as stored):
    decode W (N, K) per the module doc, then ``linear_reference``. The ops' own references decode through
    :mod:`slimtorch.quant.formats` / :mod:`slimtorch.quant.pow2` and agree with this one exactly."""
    check_choice(fmt, "fmt", FORMATS)
    k, dt = x.shape[1], compute_dtype(x.dtype)
    if fmt == "int8":
        return linear_reference(x, dequantize_int8(w, scale, dt), bias)
    codes = unpack_codes(w, bits, k)  # (N, K) int64
    if fmt == "lowbit":
        t = 2 * codes - 1 if bits == 1 else (codes ^ 2) - 2
        zero = torch.zeros((), dtype=dt, device=w.device)
        weight = torch.where(t > 0, scale.to(dt)[:, None], torch.where(t < 0, -aux.to(dt)[:, None], zero))
    elif fmt == "codebook":
        weight = scale.to(dt)[codes]
    else:  # pow2: (−1)^sign · 2^(n1 + 1 − e), 0 for e = 0
        e, sign = codes & ((1 << (bits - 1)) - 1), codes >> (bits - 1)
        magnitude = torch.exp2((scale.to(torch.int64) + 1 - e).to(dt))  # exact: powers of two
        weight = torch.where(e == 0, 0.0, torch.where(sign == 1, -magnitude, magnitude)).to(dt)
    return linear_reference(x, weight, bias)

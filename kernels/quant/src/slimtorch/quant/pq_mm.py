"""Product-quantized (Q-CNN) LUT GEMM: ``y = x · Wᵀ (+ bias)`` with W stored as sub-vector codes.

Format (:mod:`slimtorch.quant.product`; Wu, Leng, Wang, Hu, Cheng, "Quantized Convolutional Neural
Networks for Mobile Devices", CVPR 2016). K is split into S = ceil(K / d) sub-vectors of length d
(K padded with zero weights to S·d when d does not divide it; x keeps its K). Rows are grouped in
blocks of R (the last block may be shorter), B = ceil(N / R) blocks; each (row block b, subspace s)
has its own codebook of C ≤ 256 centroids of length d:

    codebooks (B, S, C, d)   float (fp32, or fp16/bf16 to store; the kernels compute in fp32)
    codes     (ceil(S / P), N) int32: the code of (row n, subspace s) sits in word [s // P, n] at
              bits [(s % P)·b, (s % P + 1)·b), b = pq_code_bits(C) ∈ {1, 2, 4, 8}, P = 32 / b
              (slimtorch.quant.formats.pack_codes along S: N contiguous, coalesced loads)
    W[n, s·d + j] = codebooks[n // R, s, codes[n, s], j]

The GEMM as table lookups (Q-CNN's test-phase computation), in two kernels:

1. table (``_pq_table_kernel``): T[m, b, s, c] = Σ_j x[m, s·d + j] · codebooks[b, s, c, j], a batched
   (M × d) · (d × C) product per (b, s), fp32, into a (M, B, S_pad, 2^b) scratch buffer: S padded to
   a multiple of TABLE_S_ALIGN and c to 2^b with zeros, so every code and every step of the gather
   loop has an entry and its loads need no mask. 2·M·B·K·C FLOPs: C / R of the dense GEMM's (one
   codebook per subspace, R = N: C / N).
2. gather-add (``_pq_gather_kernel``): y[m, n] = Σ_s T[m, n // R, s, codes[n, s]] (+ bias). Each
   program owns a (BLOCK_M, BLOCK_N) output tile and walks S in steps of BLOCK_S: it loads the code
   words once (BLOCK_S / P, BLOCK_N), expands them in registers (dequant_mm's unpacking) and gathers
   BLOCK_M · BLOCK_S · BLOCK_N table entries. M·N·S = M·N·K / d gathers and adds in place of M·N·K
   multiply-adds; lanes run along n, so one warp's gather for fixed (m, s) touches one table row of
   C fp32 values (64 B for C = 16: one L1 wavefront; 1 KiB for C = 256: up to 8).

Why not one fused kernel (the table per program, then lookups): Triton cannot index registers, so
the table would go through memory anyway, and every N tile would rebuild it (N / BLOCK_N times the
table FLOPs). For M ≤ 16 the (M, B, S, C) table is at most 16·K·C·B/d fp32 values (1 MiB for
K = 4096, d = 4, C = 16) and is read from L2 by the gather kernel; the extra launch costs a few µs.
For large M the LUT loses to decoding W once and using tensor cores (the table grows as M·K·C/d and
the gathers run on the LSU, not the tensor cores). The static report (benchmarks/static/sm_90a-pq.md,
d = 4, C = 16, LLM shapes): the gathers bound every M (the table is at most 10% of their time); 6
instructions per table entry, 1.63 instr/weight at M = 1 (0.70-0.75 of HBM, about 10x under an fp16
GEMV's weight bytes), 2.45 per 2-row program above; from M ≈ 16 on, dense fp16 tensor cores win.

Backward (codebook fine-tuning, codes fixed): grad_x = g · W (W decoded), and the gradient of each
centroid is the sum of the dense weight gradient gᵀ·x over the sub-vectors that use it:
grad_codebooks[b, s, c] = Σ_{n in block b, codes[n, s] = c} (gᵀ x)[n, s·d:(s+1)·d].
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from slimtorch.core import measured
from slimtorch.core.checks import KERNEL_DTYPES, check_positive_int, check_same_device, check_tensor
from slimtorch.core.dispatch import empty_output
from slimtorch.core.gemm import grouped_tile, m_bucket, store_output
from slimtorch.core.library import kernel_op
from slimtorch.core.packing import words_for
from slimtorch.core.reference import compute_dtype, linear_reference
from slimtorch.core.tuning import autotune_configs
from slimtorch.quant.dequant_mm import SCALE_DTYPES, _unpack_tile, check_bias
from slimtorch.quant.formats import packed_width, unpack_codes

MAX_CENTROIDS = 256  # codes fit one byte
MAX_SUB_DIM = 32  # the table kernel unrolls its loop over d
SMALL_M_MAX = 16  # M at or below: the small-M configs (one to four rows per program)
TABLE_ELEMENTS = 4096  # BLOCK_M · BLOCK_S · 2^bits of one table program (32 fp32 registers per thread at 4 warps)
TABLE_S_ALIGN = 32  # the table's subspaces are padded to a multiple of this (of every config's BLOCK_S)

_KEY = ["M_BUCKET", "N", "K", "D", "BITS"]

# BLOCK_S = 32 everywhere: a multiple of every P = 32 / bits (the unpacking loads whole words) dividing
# TABLE_S_ALIGN (the gather loop runs over whole BLOCK_S steps of the padded table).
# First entry of each list: the interpreter's config (masks handle every tail).
SMALL_M_CONFIG_LIST = [
    triton.Config({"BLOCK_M": 1, "BLOCK_N": 128, "BLOCK_S": 32, "GROUP_M": 1}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 1, "BLOCK_N": 256, "BLOCK_S": 32, "GROUP_M": 1}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 2, "BLOCK_N": 128, "BLOCK_S": 32, "GROUP_M": 1}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 4, "BLOCK_N": 64, "BLOCK_S": 32, "GROUP_M": 1}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 4, "BLOCK_N": 128, "BLOCK_S": 32, "GROUP_M": 1}, num_warps=8, num_stages=2),
]
SMALL_M_CONFIGS = autotune_configs(SMALL_M_CONFIG_LIST)
LARGE_M_CONFIG_LIST = [
    triton.Config({"BLOCK_M": 4, "BLOCK_N": 128, "BLOCK_S": 32, "GROUP_M": 8}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 2, "BLOCK_N": 128, "BLOCK_S": 32, "GROUP_M": 8}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 8, "BLOCK_N": 64, "BLOCK_S": 32, "GROUP_M": 8}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 8, "BLOCK_N": 128, "BLOCK_S": 32, "GROUP_M": 8}, num_warps=8, num_stages=2),
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_S": 32, "GROUP_M": 8}, num_warps=8, num_stages=2),
]
LARGE_M_CONFIGS = autotune_configs(LARGE_M_CONFIG_LIST)


@triton.jit
def _pq_table_kernel(
    x_ptr,  # x (M, K)
    cb_ptr,  # codebooks (B, S, C, D) contiguous
    t_ptr,  # table (M, B, S_PAD, 2^BITS) fp32 contiguous
    M,
    K,
    S,
    C,
    S_PAD,  # S rounded up to TABLE_S_ALIGN
    stride_xm,
    stride_xk,
    D: tl.constexpr,
    BITS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """T[m, b, s, c] = Σ_j x[m, s·D + j] · cb[b, s, c, j] for one (BLOCK_M, BLOCK_S, 2^BITS) block; 0 for
    the padding (s >= S or c >= C), so the gather kernel reads every code and subspace unmasked."""
    CODES: tl.constexpr = 1 << BITS
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    b = tl.program_id(2)
    blocks = tl.num_programs(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_c = tl.arange(0, CODES)
    mask_m = offs_m < M
    mask_s = offs_s < S
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    centroid = ((b * S + offs_s).to(tl.int64)[:, None] * C + offs_c[None, :]) * D  # (BLOCK_S, CODES)
    acc = tl.zeros((BLOCK_M, BLOCK_S, CODES), dtype=tl.float32)
    for j in tl.static_range(D):
        k = offs_s * D + j  # coordinate j of each sub-vector; k >= K is the zero padding
        xv = tl.load(x_rows + k[None, :] * stride_xk, mask=mask_m[:, None] & (k < K)[None, :], other=0.0)
        cv = tl.load(cb_ptr + centroid + j, mask=mask_s[:, None] & (offs_c < C)[None, :], other=0.0)
        acc += xv.to(tl.float32)[:, :, None] * cv.to(tl.float32)[None, :, :]
    rows = (offs_m.to(tl.int64) * blocks + b)[:, None, None] * S_PAD + offs_s[None, :, None]
    mask = mask_m[:, None, None] & (offs_s < S_PAD)[None, :, None]
    tl.store(t_ptr + rows * CODES + offs_c[None, None, :], acc, mask=mask)


@triton.jit
def _pq_gather_kernel(
    t_ptr,  # table (M, B, S_PAD, 2^BITS) fp32
    codes_ptr,  # codes (ceil(S / P), N) int32
    bias_ptr,
    out_ptr,  # out (M, N)
    M,
    N,
    K,
    R,  # rows per block
    B,  # row blocks
    M_BUCKET,  # core.gemm.m_bucket(M): the autotune key (not used by the body)
    stride_om,
    D: tl.constexpr,  # sub-vector length: S = ceil(K / D) subspaces
    BITS: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_S: tl.constexpr,  # divides TABLE_S_ALIGN
    GROUP_M: tl.constexpr,
):
    """out[m, n] = Σ_s T[m, n // R, s, code[n, s]] (+ bias[n]) for one (BLOCK_M, BLOCK_N) tile. The table
    loads need no mask: rows past M and columns past N read row M − 1 / column N − 1 (discarded at the
    store), subspaces past S read the zero padding with code 0, and every code < 2^BITS has an entry."""
    CODES: tl.constexpr = 1 << BITS
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    mask_n = offs_n < N
    S = tl.cdiv(K, D)
    s_pad = tl.cdiv(S, BLOCK_S) * BLOCK_S
    # the (m, b) table row of each output, b = n // R: (BLOCK_M, 1, BLOCK_N) pointers
    row = tl.minimum(offs_m, M - 1).to(tl.int64)[:, None] * B + (tl.minimum(offs_n, N - 1) // R)[None, :]
    t_rows = t_ptr + (row * s_pad * CODES)[:, None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for s0 in range(0, s_pad, BLOCK_S):
        codes = _unpack_tile(codes_ptr, s0, offs_n, mask_n, N, S, BITS, BLOCK_S)  # (BLOCK_S, BLOCK_N)
        # the subspace offset s·2^b is a per-element constant after s0: added last, it folds into the
        # load's immediate offset, leaving extract, address and load per entry
        ptrs = (t_rows + s0 * CODES) + codes[None, :, :] + (tl.arange(0, BLOCK_S) * CODES)[None, :, None]
        acc += tl.sum(tl.load(ptrs), axis=1)
    store_output(acc, offs_m, offs_n, M, N, bias_ptr, bias_ptr, out_ptr, stride_om, False, HAS_BIAS, "none")


_small_m_kernel = triton.autotune(configs=SMALL_M_CONFIGS, key=_KEY)(_pq_gather_kernel)
_large_m_kernel = triton.autotune(configs=LARGE_M_CONFIGS, key=_KEY)(_pq_gather_kernel)


# ----------------------------------------------------------------------------- checks


def pq_code_bits(centroids: int) -> int:
    """Stored bits per code for C centroids: the smallest of 1, 2, 4, 8 with 2^bits ≥ C."""
    check_positive_int(centroids, "centroids")
    if centroids > MAX_CENTROIDS:
        raise ValueError(f"centroids: expected at most {MAX_CENTROIDS} (codes fit one byte), got {centroids}")
    return packed_width(max(1, (centroids - 1).bit_length()))


def _check_pq_mm(
    x: torch.Tensor,
    codes: torch.Tensor,
    codebooks: torch.Tensor,
    rows_per_block: int,
    bias: Optional[torch.Tensor] = None,
) -> None:
    check_tensor(x, "x", ndim=2, dtype=KERNEL_DTYPES)
    check_tensor(codebooks, "codebooks", ndim=4, dtype=SCALE_DTYPES, contiguous=True)
    blocks, s, c, d = codebooks.shape
    k = x.shape[1]
    if d < 1 or -(-k // d) != s:
        raise ValueError(
            f"codebooks: expected shape (B, S, C, d) with S = ceil(K / d) sub-vectors for K = {k} (x), "
            f"got {tuple(codebooks.shape)}"
        )
    if not 1 <= c <= MAX_CENTROIDS:
        raise ValueError(f"codebooks: expected 1..{MAX_CENTROIDS} centroids (dim 2), got {c}")
    check_tensor(codes, "codes", ndim=2, dtype=torch.int32, contiguous=True)
    n = codes.shape[1]
    check_tensor(codes, "codes", shape=(words_for(s, pq_code_bits(c)), n))
    check_positive_int(rows_per_block, "rows_per_block")
    if -(-n // rows_per_block) != blocks:
        raise ValueError(
            f"codebooks: expected ceil(N / rows_per_block) = {-(-n // rows_per_block)} row blocks (dim 0) for "
            f"N = {n}, rows_per_block = {rows_per_block}, got {blocks}"
        )
    check_bias(bias, n)
    check_same_device(x=x, codes=codes, codebooks=codebooks, bias=bias)


# ----------------------------------------------------------------------------- launch


def _table_blocks(m: int, bits: int) -> tuple[int, int]:
    block_m = min(16, triton.next_power_of_2(max(m, 1)))
    block_s = max(1, min(TABLE_S_ALIGN, TABLE_ELEMENTS // (block_m * 2**bits)))
    return block_m, block_s


def pq_table(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """T (M, B, S_pad, 2^bits) fp32, S_pad = S rounded up to TABLE_S_ALIGN: every row's dot products
    with every centroid, zero past S and past C (``_pq_table_kernel``)."""
    m, k = x.shape
    blocks, s, c, d = codebooks.shape
    bits = pq_code_bits(c)
    s_pad = -(-s // TABLE_S_ALIGN) * TABLE_S_ALIGN
    table = empty_output((m, blocks, s_pad, 2**bits), dtype=torch.float32, device=x.device)
    if table.numel() == 0:
        return table
    block_m, block_s = _table_blocks(m, bits)
    grid = (triton.cdiv(m, block_m), triton.cdiv(s_pad, block_s), blocks)
    _pq_table_kernel[grid](
        x, codebooks, table, m, k, s, c, s_pad, x.stride(0), x.stride(1),
        D=d, BITS=bits, BLOCK_M=block_m, BLOCK_S=block_s, num_warps=4,
    )  # fmt: skip
    return table


def launch_pq_mm(
    x: torch.Tensor,
    codes: torch.Tensor,
    codebooks: torch.Tensor,
    rows_per_block: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Our kernels (``pq_mm.launcher``): the table, then the gather-add."""
    m, k = x.shape
    n = codes.shape[1]
    blocks, _, c, d = codebooks.shape
    out = empty_output((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    table = pq_table(x, codebooks)
    kernel = _small_m_kernel if m <= SMALL_M_MAX else _large_m_kernel

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    kernel[grid](
        table, codes, codes if bias is None else bias, out, m, n, k, rows_per_block, blocks, m_bucket(m),
        out.stride(0), D=d, BITS=pq_code_bits(c), HAS_BIAS=bias is not None,
    )  # fmt: skip
    return out


@kernel_op("slimtorch::pq_mm", reference="pq_mm_reference", check=_check_pq_mm, row_input="x")
def pq_mm(
    x: torch.Tensor,
    codes: torch.Tensor,
    codebooks: torch.Tensor,
    rows_per_block: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """x (M, K) · Wᵀ + bias → (M, N) in x's dtype, W given by product-quantization codes (N in
    ``codes.shape[1]``) and codebooks (B, S, C, d) (module doc). On CUDA, our kernels or decode +
    F.linear, whichever measured faster for this shape bucket (core.measured)."""

    candidates = {
        "triton": lambda: launch_pq_mm(x, codes, codebooks, rows_per_block, bias),
        measured.DECODE_LINEAR: measured.decode_linear(
            x, lambda dtype: pq_decode(codes, codebooks, rows_per_block, x.shape[1], dtype=dtype), bias
        ),
    }
    key = (*measured.gemm_key(x, codes.shape[1], x.shape[1]), *codebooks.shape[1:])
    return measured.run("slimtorch::pq_mm", key, candidates, x)


pq_mm.launcher = launch_pq_mm  # benchmarks and the static report time our kernels themselves


# ----------------------------------------------------------------------------- autograd (codebook fine-tuning)


def _setup_context(ctx, inputs, output) -> None:
    x, codes, codebooks, rows_per_block, _ = inputs
    ctx.save_for_backward(x, codes, codebooks)
    ctx.rows_per_block = rows_per_block


def _backward(ctx, grad_out):
    """grad_x = g · W, grad_codebooks = Σ over the sub-vectors using each centroid of gᵀ·x (module
    doc), grad_bias = Σ_m g; codes get no gradient (they are fixed)."""
    x, codes, codebooks = ctx.saved_tensors
    acc = compute_dtype(x.dtype)
    g = grad_out.to(acc)
    grad_x = grad_codebooks = grad_bias = None
    if ctx.needs_input_grad[0]:
        weight = pq_decode(codes, codebooks, ctx.rows_per_block, x.shape[1], dtype=acc)
        grad_x = (g @ weight).to(x.dtype)
    if ctx.needs_input_grad[2]:
        grad_codebooks = pq_scatter_grad(g.t() @ x.to(acc), codes, codebooks, ctx.rows_per_block)
        grad_codebooks = grad_codebooks.to(codebooks.dtype)
    if ctx.needs_input_grad[4]:
        grad_bias = g.sum(0).to(grad_out.dtype)
    return grad_x, None, grad_codebooks, None, grad_bias


pq_mm.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- reference tail


def pq_unpack_codes(codes: torch.Tensor, centroids: int, subspaces: int) -> torch.Tensor:
    """(ceil(S / P), N) int32 words → (N, S) int64 codes (formats.unpack_codes along S)."""
    return unpack_codes(codes, pq_code_bits(centroids), subspaces)


def _flat_index(codes: torch.Tensor, codebooks: torch.Tensor, rows_per_block: int) -> torch.Tensor:
    """(N, S) indices into codebooks viewed as (B·S·C, d): (n // R · S + s) · C + code[n, s]."""
    _, s, c, _ = codebooks.shape
    unpacked = pq_unpack_codes(codes, c, s)
    n = unpacked.shape[0]
    block = torch.arange(n, device=codes.device) // rows_per_block
    sub = torch.arange(s, device=codes.device)
    return (block[:, None] * s + sub[None, :]) * c + unpacked


def pq_decode(
    codes: torch.Tensor, codebooks: torch.Tensor, rows_per_block: int, k: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """W (N, K) in ``dtype``: W[n, s·d + j] = codebooks[n // R, s, code[n, s], j], the padding
    columns K..S·d dropped. Differentiable in the codebooks (a gather)."""
    d = codebooks.shape[3]
    index = _flat_index(codes, codebooks, rows_per_block)
    weight = codebooks.to(dtype).reshape(-1, d)[index.reshape(-1)]  # (N·S, d)
    return weight.reshape(index.shape[0], -1)[:, :k]


def pq_scatter_grad(
    grad_weight: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor, rows_per_block: int
) -> torch.Tensor:
    """The codebooks' gradient from the dense weight's (N, K): each centroid sums the gradients of
    the sub-vectors coded with it (the padding columns carry zero gradient)."""
    blocks, s, c, d = codebooks.shape
    n, k = grad_weight.shape
    padded = torch.nn.functional.pad(grad_weight, (0, s * d - k)).reshape(n * s, d)
    index = _flat_index(codes, codebooks, rows_per_block).reshape(-1)
    out = torch.zeros(blocks * s * c, d, dtype=grad_weight.dtype, device=grad_weight.device)
    return out.index_add_(0, index, padded).reshape(blocks, s, c, d)


def pq_mm_reference(
    x: torch.Tensor,
    codes: torch.Tensor,
    codebooks: torch.Tensor,
    rows_per_block: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Dense: decode W from the codes and codebooks, then ``x · Wᵀ + bias`` in fp32 (fp64 for fp64 x)."""
    weight = pq_decode(codes, codebooks, rows_per_block, x.shape[1], dtype=compute_dtype(x.dtype))
    return linear_reference(x, weight, bias)

"""W8A8: per-token dynamic int8 activations × per-channel int8 weights on int8 tensor cores.

Math (x (M, K) fp16/bf16/fp32, weights from :func:`slimtorch.quant.formats.quantize_int8`), all in fp32:

    s_m  = max_k |x[m, k]| / 127          (an all-zero row gets s_m = 1; IEEE division, once per row)
    r_m  = min(1 / s_m, FLT_MAX)          (the reciprocal, IEEE division, once per row)
    qx   = clamp(round(x · r_m), −127, 127)  int8, one fp32 multiply per element, round half to even
    y    = (Σ_k qx[m, k] · qw[n, k]) · s_m · s_n (+ b[n])

The activations multiply by the row's reciprocal instead of dividing every element by s_m (a
division is a multi-instruction sequence on the GPU; x · r_m can differ from x / s_m by one code
where x / s_m lies within an ulp of a rounding boundary, so this is its own rule, defined by
:func:`quantize_per_token_reference`, which both paths match bit for bit). The FLT_MAX clamp only
matters for fp32/bf16 rows whose max-abs is below ~3.7e-37 (1 / s_m would overflow). A row holding
NaN or ±Inf gets s_m = NaN and qx = 0, so its output row is NaN (NaN in, NaN out), in the kernel and
the reference alike.

The sum is exact in int32 for K ≤ MAX_K = ⌊(2^31 − 1) / 127²⌋, so kernel and reference differ
only by the fp32 epilogue and the final rounding. Two kernels (Xiao et al., SmoothQuant 2022;
``torch._int_mm`` needs the same first pass):

1. ``_quantize_per_token_kernel``: one pass over x. Rows with K ≤ QUANT_ONE_PASS_MAX_K are held in
   registers (a BLOCK_M × next_pow2(K) tile): one read of x (2 bytes/element for fp16), max-abs,
   1/s_m, multiply, round, one write of qx (1 byte) and s (M,). Longer rows (up to MAX_K) take a
   max-abs pass then a quantize pass over QUANT_BLOCK_K chunks (the second read mostly hits L2).
   Rounding: ``rint`` (one ``cvt.rni``) on the GPU; the interpreter has no libdevice and uses the
   floor-based round-half-even below, an interpreter-only switch (``INTERPRET``).
2. ``_int8_mm_kernel``: grouped (BLOCK_M × BLOCK_N) output tiles, ``tl.dot`` on int8 operands
   accumulating int32 (K-major int8 B, as Hopper's int8 wgmma wants); the fp32 tile times s_m
   goes through core's epilogue (``slimtorch.core.gemm.store_output``: · s_n, + bias, cast).
   Its loads are pipelined (cp.async, num_stages ≥ 3 for every config), but Triton (3.6 and 3.9)
   waits on the int8 wgmma inside the loop (``warp_group_dot_wait {pendings = 0}``): its wgmma
   pipeliner makes a dot properly asynchronous only for fp32 accumulators ("Rule 2.1" of
   WGMMAPipeline.cpp), and int8 wgmma accumulates int32. The same kernel with fp16 operands gets
   ``pendings = 1`` (checked with the TTGIR/SASS of ``python -m slimtorch.core.sass``).

On CUDA tensors :func:`w8a8_linear` picks per shape bucket, by measurement, between this kernel and
torch's ``torch._int_mm`` on the same quantized activations (:mod:`slimtorch.core.measured`);
``w8a8_linear.launcher`` stays this kernel (benchmarks and the static report time it).
"""

from typing import Optional

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from slimtorch.core import measured
from slimtorch.core.dispatch import empty_output, interpreter_enabled
from slimtorch.core.gemm import grouped_tile, m_bucket, store_output
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import compute_dtype, linear_reference
from slimtorch.core.tuning import autotune_configs
from slimtorch.quant.dequant_mm import check_activation
from slimtorch.quant.formats import INT8_MAX, dequantize_int8
from slimtorch.quant.int8_mm import check_int8_weight_args

MAX_K = (2**31 - 1) // (INT8_MAX * INT8_MAX)  # int32 accumulation cannot overflow up to this K
QUANT_ONE_PASS_MAX_K = 16384  # rows up to this K are quantized from registers: one read of x
QUANT_BLOCK_K = 1024  # K chunk of the quantizer for longer rows (two passes over each row)
QUANT_TILE = 4096  # elements per quantizer tile: BLOCK_M = QUANT_TILE / BLOCK_K rows per program (unmeasured)
FLT_MAX = 3.4028234663852886e38  # the reciprocal's clamp (see module doc)
_FLT_MAX = tl.constexpr(FLT_MAX)  # the same, visible inside @triton.jit

_MM_KEY = ["M_BUCKET", "N", "K"]
# First entry: the interpreter's config, valid for every shape. int8 mma needs BLOCK_K >= 32.
INT8_MM_CONFIG_LIST = [
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 128, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}, num_warps=4, num_stages=4),
]
INT8_MM_CONFIGS = autotune_configs(INT8_MM_CONFIG_LIST)


@triton.jit
def _round_half_even(v):
    """Round to nearest, ties to even, exactly (v − floor(v) is exact for |v| < 2^23). Interpreter only:
    compiled, ``x · r − floor(x · r)`` may be contracted into an FMA, which rounds differently."""
    lower = tl.floor(v)
    frac = v - lower
    lower_is_odd = (lower - 2.0 * tl.floor(lower * 0.5)) != 0.0
    round_up = (frac > 0.5) | ((frac == 0.5) & lower_is_odd)
    return tl.where(round_up, lower + 1.0, lower)


@triton.jit
def _max_nan(a, b):
    """max that propagates NaN (the GPU's plain max drops it): a row's max-abs is NaN or Inf exactly
    when the row holds a non-finite value, so one reduction gives both the scale and the NaN policy."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _row_scales(amax, finite):
    """Per row: s = amax / 127 (1 for an all-zero row; NaN where not finite) and r = min(1 / s, FLT_MAX)."""
    scale = tl.where(amax > 0.0, tl.math.div_rn(amax, 127.0), 1.0)
    inv = tl.where(finite, tl.minimum(tl.math.div_rn(tl.full(scale.shape, 1.0, tl.float32), scale), _FLT_MAX), 0.0)
    return tl.where(finite, scale, float("nan")), inv


@triton.jit
def _quantize_rows(x, inv, finite, INTERPRET: tl.constexpr):
    """x (BLOCK_M, BLOCK_K) fp32 → int8 codes round(x · r); a non-finite row: codes 0."""
    v = tl.where(finite[:, None], x, 0.0) * inv[:, None]
    # rint = cvt.rni (round half to even, one instruction); the interpreter has no libdevice
    q = _round_half_even(v) if INTERPRET else libdevice.rint(v)
    # No clamp: |x| <= amax, and s, r and x·r are each rounded once (relative error <= 2^-24 each), so
    # |x·r| <= 127·(1 + 3·2^-24) < 127.5 and round() stays in [-127, 127] (the reference clamps, a no-op).
    return q.to(tl.int8)


@triton.jit
def _quantize_per_token_kernel(
    x_ptr,
    q_ptr,
    scale_ptr,
    M,
    K,
    stride_xm,
    stride_xk,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    ONE_PASS: tl.constexpr,  # BLOCK_K >= K: the whole row in registers, x read once
    INTERPRET: tl.constexpr,
):
    """BLOCK_M rows per program: max-abs, reciprocal, quantize (module doc)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * K
    if ONE_PASS:
        offs = tl.arange(0, BLOCK_K)
        mask = row_mask[:, None] & (offs < K)[None, :]
        x = tl.load(x_rows + offs[None, :] * stride_xk, mask=mask, other=0.0).to(tl.float32)
        amax = tl.reduce(tl.abs(x), 1, _max_nan)
        finite = amax < float("inf")  # NaN < inf is false too
        scale, inv = _row_scales(amax, finite)
        tl.store(q_rows + offs[None, :], _quantize_rows(x, inv, finite, INTERPRET), mask=mask)
    else:
        amax = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs = k0 + tl.arange(0, BLOCK_K)
            mask = row_mask[:, None] & (offs < K)[None, :]
            ax = tl.abs(tl.load(x_rows + offs[None, :] * stride_xk, mask=mask, other=0.0).to(tl.float32))
            amax = _max_nan(amax, ax)
        row_max = tl.reduce(amax, 1, _max_nan)
        finite = row_max < float("inf")
        scale, inv = _row_scales(row_max, finite)
        for k0 in range(0, K, BLOCK_K):
            offs = k0 + tl.arange(0, BLOCK_K)
            mask = row_mask[:, None] & (offs < K)[None, :]
            x = tl.load(x_rows + offs[None, :] * stride_xk, mask=mask, other=0.0).to(tl.float32)
            tl.store(q_rows + offs[None, :], _quantize_rows(x, inv, finite, INTERPRET), mask=mask)
    tl.store(scale_ptr + rows, scale, mask=row_mask)


@triton.jit
def _int8_mm_kernel(
    qx_ptr,
    x_scale_ptr,
    qw_ptr,
    w_scale_ptr,
    bias_ptr,
    out_ptr,
    M,
    N,
    K,
    M_BUCKET,  # core.gemm.m_bucket(M): the autotune key
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.max_contiguous(tl.multiple_of(pid_n * BLOCK_N + tl.arange(0, BLOCK_N), BLOCK_N), BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    a_rows = qx_ptr + offs_m.to(tl.int64)[:, None] * K  # qx (M, K) and qw (N, K), both K contiguous
    b_cols = qw_ptr + offs_n.to(tl.int64)[None, :] * K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        a = tl.load(a_rows + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0)
        b = tl.load(b_cols + offs_k[:, None], mask=mask_k[:, None] & mask_n[None, :], other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)

    y = acc.to(tl.float32) * tl.load(x_scale_ptr + offs_m, mask=mask_m, other=0.0)[:, None]
    store_output(y, offs_m, offs_n, M, N, w_scale_ptr, bias_ptr, out_ptr, N, True, HAS_BIAS, "none")


_int8_mm_tuned = triton.autotune(configs=INT8_MM_CONFIGS, key=_MM_KEY)(_int8_mm_kernel)


def _check_k(k: int) -> None:
    if not 0 < k <= MAX_K:
        raise ValueError(f"x: expected 0 < K <= {MAX_K} (int32 accumulation of int8 products), got K={k}")


def _check_quantize_per_token(x: torch.Tensor) -> None:
    _check_k(check_activation(x)[1])


def _quantize_per_token_fake(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # shapes only (cheaper to trace than the reference)
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty((x.shape[0],), dtype=torch.float32)


@kernel_op(
    "slimtorch::quantize_per_token",
    reference="quantize_per_token_reference",
    check=_check_quantize_per_token,
    fake=_quantize_per_token_fake,
)
def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) → (qx (M, K) int8, scale (M,) float32), per-row symmetric (see module doc)."""
    m, k = x.shape
    q = empty_output((m, k), dtype=torch.int8, device=x.device)
    scale = empty_output((m,), dtype=torch.float32, device=x.device)
    if m:
        one_pass = k <= QUANT_ONE_PASS_MAX_K
        block_k = triton.next_power_of_2(k) if one_pass else QUANT_BLOCK_K
        block_m = min(max(1, QUANT_TILE // block_k), triton.next_power_of_2(m))
        warps = max(1, min(8, block_m * block_k // 1024))  # >= 32 values per thread: the row reductions amortised
        grid = (triton.cdiv(m, block_m),)
        _quantize_per_token_kernel[grid](
            x, q, scale, m, k, x.stride(0), x.stride(1),
            BLOCK_M=block_m, BLOCK_K=block_k, ONE_PASS=one_pass, INTERPRET=interpreter_enabled(), num_warps=warps,
        )  # fmt: skip
    return q, scale


def _check_w8a8_linear(
    x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> None:
    _check_k(check_activation(x)[1])
    check_int8_weight_args(x, qweight, weight_scale, bias, scale_name="weight_scale")


def _w8a8_linear_fake(
    x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    return x.new_empty((x.shape[0], qweight.shape[0]))


def launch_w8a8(
    x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Our path: the quantizer kernel, then the int8 GEMM kernel (``w8a8_linear.launcher``)."""
    m, k = x.shape
    n = qweight.shape[0]
    qx, x_scale = quantize_per_token.launcher(x)
    out = empty_output((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return out

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    _int8_mm_tuned[grid](
        qx,
        x_scale,
        qweight,
        weight_scale,
        qweight if bias is None else bias,
        out,
        m,
        n,
        k,
        m_bucket(m),
        HAS_BIAS=bias is not None,
    )
    return out


def _w8a8_int_mm(
    x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """torch's path: the same quantized activations through ``torch._int_mm`` (cuBLASLt int8, exact
    int32 sums; it needs M > 16 and K, N multiples of 8 and raises otherwise), the epilogue in fp32."""
    qx, x_scale = quantize_per_token.launcher(x)
    y = torch._int_mm(qx, qweight.t()).float() * x_scale[:, None] * weight_scale.float()[None, :]
    return (y if bias is None else y + bias.float()).to(x.dtype)


@kernel_op(
    "slimtorch::w8a8_linear",
    reference="w8a8_linear_reference",
    check=_check_w8a8_linear,
    fake=_w8a8_linear_fake,
    row_input="x",
)
def w8a8_linear(
    x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """x (M, K) quantized per token, times qweight (N, K) int8 with weight_scale (N,), + bias → (M, N).
    On CUDA, our kernel or ``torch._int_mm``, whichever measured faster for this shape bucket."""
    candidates = {
        "triton": lambda: launch_w8a8(x, qweight, weight_scale, bias),
        "torch._int_mm": lambda: _w8a8_int_mm(x, qweight, weight_scale, bias),
    }
    return measured.run("slimtorch::w8a8_linear", measured.gemm_key(x, qweight.shape[0], x.shape[1]), candidates, x)


w8a8_linear.launcher = launch_w8a8  # benchmarks and the static report time our kernel itself


def quantize_per_token_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The module doc's rule in fp32: s = amax / 127, r = min(1 / s, FLT_MAX), q = round(x · r)
    (torch.round: half to even); a non-finite row: codes 0, scale NaN."""
    xf = x.float()
    finite = torch.isfinite(xf).all(dim=1)
    xf = torch.where(finite[:, None], xf, 0.0)
    amax = xf.abs().amax(dim=1) if xf.shape[1] else xf.new_zeros(xf.shape[0])
    scale = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))
    inv = torch.where(finite, torch.reciprocal(scale).clamp(max=FLT_MAX), 0.0)
    q = torch.round(xf * inv[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, torch.where(finite, scale, float("nan"))


def w8a8_linear_reference(
    x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Quantize x exactly as the kernel does, dequantize both operands, matmul."""
    qx, x_scale = quantize_per_token_reference(x)
    dtype = compute_dtype(x.dtype)
    x_dequantized = dequantize_int8(qx, x_scale, dtype)
    return linear_reference(x_dequantized, dequantize_int8(qweight, weight_scale, dtype), bias).to(x.dtype)

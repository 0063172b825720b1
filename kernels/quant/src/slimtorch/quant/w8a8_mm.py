"""W8A8: per-token dynamic int8 activations × per-channel int8 weights on int8 tensor cores.

Math (x (M, K) fp16/bf16/fp32, weights from :func:`slimtorch.quant.formats.quantize_int8`):

    s_m  = max_k |x[m, k]| / 127          (an all-zero row gets s_m = 1), in fp32
    qx   = clamp(round(x / s_m), −127, 127)  int8, round half to even, IEEE division
    y    = (Σ_k qx[m, k] · qw[n, k]) · s_m · s_n (+ b[n])

i.e. :func:`slimtorch.quant.formats.quantize_int8` applied to the rows of x (one int8 rule for
weights and activations). A row holding NaN or ±Inf gets s_m = NaN and qx = 0, so its output row
is NaN (NaN in, NaN out), in the kernel and the reference alike.

The sum is exact in int32 for K ≤ MAX_K = ⌊(2^31 − 1) / 127²⌋, so kernel and reference differ
only by the fp32 epilogue and the final rounding. Two passes (Xiao et al., SmoothQuant 2022;
``torch._int_mm`` needs the same first pass):

1. ``_quantize_per_token_kernel``: a block of rows per program, a max-abs pass over K then a
   quantize pass, writing qx (M, K) int8 and s (M,) fp32. Matches :func:`quantize_per_token_reference`
   bit for bit (``div_rn`` and an explicit round-half-to-even, not the GPU's approximate division).
2. ``_int8_mm_kernel``: grouped (BLOCK_M × BLOCK_N) output tiles, ``tl.dot`` on int8 operands
   accumulating int32 (K-major int8 B, as Hopper's int8 wgmma wants); the fp32 tile times s_m
   goes through core's epilogue (``slimtorch.core.gemm.store_output``: · s_n, + bias, cast).
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from slimtorch.core.dispatch import empty_output
from slimtorch.core.gemm import grouped_tile, m_bucket, store_output
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import compute_dtype, linear_reference
from slimtorch.core.tuning import autotune_configs
from slimtorch.quant.dequant_mm import check_activation
from slimtorch.quant.formats import INT8_MAX, dequantize_int8, quantize_int8
from slimtorch.quant.int8_mm import check_int8_weight_args

MAX_K = (2**31 - 1) // (INT8_MAX * INT8_MAX)  # int32 accumulation cannot overflow up to this K
QUANT_BLOCK_K = 1024  # K chunk of the per-token quantizer (two passes over each row)
QUANT_TILE = 4096  # elements per quantizer tile: BLOCK_M = QUANT_TILE / BLOCK_K rows per program (unmeasured)

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
    """Round to nearest, ties to even, exactly (v − floor(v) is exact for |v| < 2^23)."""
    lower = tl.floor(v)
    frac = v - lower
    lower_is_odd = (lower - 2.0 * tl.floor(lower * 0.5)) != 0.0
    round_up = (frac > 0.5) | ((frac == 0.5) & lower_is_odd)
    return tl.where(round_up, lower + 1.0, lower)


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
):
    """BLOCK_M rows per program: a max-abs pass over K, then a quantize pass."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_mask = rows < M
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    amax = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    nonfinite = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.int32)  # NaN / ±Inf seen
    for k0 in range(0, K, BLOCK_K):
        offs = k0 + tl.arange(0, BLOCK_K)
        mask = row_mask[:, None] & (offs < K)[None, :]
        x = tl.abs(tl.load(x_rows + offs[None, :] * stride_xk, mask=mask, other=0.0).to(tl.float32))
        amax = tl.maximum(amax, x)
        nonfinite = nonfinite | tl.where(x < float("inf"), 0, 1)  # NaN < inf is false too
    row_max = tl.max(amax, axis=1)
    finite = tl.max(nonfinite, axis=1) == 0
    scale = tl.where(row_max > 0.0, tl.math.div_rn(row_max, 127.0), 1.0)
    tl.store(scale_ptr + rows, tl.where(finite, scale, float("nan")), mask=row_mask)
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * K
    for k0 in range(0, K, BLOCK_K):
        offs = k0 + tl.arange(0, BLOCK_K)
        mask = row_mask[:, None] & (offs < K)[None, :]
        x = tl.load(x_rows + offs[None, :] * stride_xk, mask=mask, other=0.0).to(tl.float32)
        x = tl.where(finite[:, None], x, 0.0)  # a non-finite row: codes 0 (its scale is NaN)
        q = _round_half_even(tl.math.div_rn(x, scale[:, None]))
        q = tl.minimum(tl.maximum(q, -127.0), 127.0)
        tl.store(q_rows + offs[None, :], q.to(tl.int8), mask=mask)


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
    # shapes only: the reference's finiteness check (formats.quantize_int8) cannot run on fake tensors
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
        block_k = min(QUANT_BLOCK_K, triton.next_power_of_2(k))
        block_m = min(max(1, QUANT_TILE // block_k), triton.next_power_of_2(m))
        grid = (triton.cdiv(m, block_m),)
        _quantize_per_token_kernel[grid](x, q, scale, m, k, x.stride(0), x.stride(1), BLOCK_M=block_m, BLOCK_K=block_k)
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
    """x (M, K) quantized per token, times qweight (N, K) int8 with weight_scale (N,), + bias → (M, N)."""
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


def quantize_per_token_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """formats.quantize_int8 on the rows of x; a non-finite row: codes 0, scale NaN."""
    finite = torch.isfinite(x).all(dim=1)
    q, scale = quantize_int8(torch.where(finite[:, None], x, 0).float())
    return q, torch.where(finite, scale, float("nan"))


def w8a8_linear_reference(
    x: torch.Tensor, qweight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Quantize x exactly as the kernel does, dequantize both operands, matmul."""
    qx, x_scale = quantize_per_token_reference(x)
    dtype = compute_dtype(x.dtype)
    x_dequantized = dequantize_int8(qx, x_scale, dtype)
    return linear_reference(x_dequantized, dequantize_int8(qweight, weight_scale, dtype), bias).to(x.dtype)

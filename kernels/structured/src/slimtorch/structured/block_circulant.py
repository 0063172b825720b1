"""Block-circulant matmul ``y = x · Wᵀ (+ bias)``: two Triton kernels and their references.

Layout. W (N, K) = (p·b, q·b) is a p × q grid of b × b circulant blocks; block (i, j) is defined
by its first column ``weight[i, j] ∈ R^b``:

    W[i·b + r, j·b + s] = weight[i, j, (r − s) mod b]          weight: (p, q, b), contiguous

so y_i = Σ_j C(w_ij) x_j is a sum of circular convolutions (Cheng et al. 2015, "An exploration of
parameter redundancy in deep networks with circulant projections"; Ding et al. 2017, CirCNN).
Stored: p·q·b = N·K/b numbers instead of N·K.

FFT path (:func:`block_circulant_fft_mm`), the convolution theorem per block:

    X[m, f, j] = rfft(x[m, j·b : (j+1)·b])[f]                     f < F = b//2 + 1
    Y[m, f, i] = Σ_j Wf[f, i, j] · X[m, f, j]                     (Triton: per frequency f a
                                                                  complex (M × q)·(q × p) GEMM)
    y[m, i·b : (i+1)·b] = irfft(Y[m, :, i], n=b)

With the DFT-GEMM transforms the bias is added in the frequency domain: the Triton kernel adds
rfft(bias[i·b : (i+1)·b]) (fp32, one (p, b)·(b, 2F) GEMM per call) to Y[m, :, i], and the linear
inverse DFT turns it into the bias; the (M, N) output is written once and never re-read.

The transforms: for b ≤ DFT_GEMM_MAX_BLOCK (128) one GEMM each with the real DFT matrices
(:func:`dft_matrices`, cuBLAS, in the activation dtype: x viewed as (M·q, b) times (b, 2F) gives
[Re | Im] of every block in one pass; Y as (M·p, 2F) times (2F, b) gives y, no transposes); for
larger blocks torch.fft (cuFFT, fp32, through a transposed view).

``spectrum`` (2, F, p, q) fp32 holds Re and Im of Wf = rfft(weight) (:func:`weight_spectrum`), so
a layer can cache it at inference. The Triton kernel multiplies real and imaginary planes with
four ``tl.dot``s (Yr = XrWrᵀ − XiWiᵀ, Yi = XrWiᵀ + XiWrᵀ); fp32 dots use IEEE precision for fp32
activations and tf32 for 16-bit ones (whose rounding dominates). X and Y live as
``view_as_real`` of the complex tensors, (M, F, q, 2) / (M, F, p, 2), read through strides.
For p = q = 1 (a plain circulant) of a power-of-two size up to 8192 the whole product runs in
one kernel (:mod:`slimtorch.structured.circulant_fft`: FFT, product, inverse FFT in registers);
other sizes take rfft, one elementwise complex multiply and irfft in torch.

Direct path (:func:`block_circulant_direct_mm`): a GEMM on core's tile order and epilogue whose
(BLOCK_K × BLOCK_N) tile of Wᵀ is expanded in registers from the b-vectors by a gather
(``weight[n // b, k // b, (n − k) mod b]``: N·K/b distinct values, L1/L2 resident), then
``tl.dot`` at tensor-core speed in the activation dtype, fp32 accumulation.

Direct path at M ≤ GEMV_MAX_M (``_direct_gemv_kernel``): expanding W costs N·K gathers whatever M
is; expand x instead. With k = j·b + t,

    y[m, i·b + r] = Σ_k w[i, j, t] · x[m, j·b + (r − t) mod b] = Σ_k W'[i, k] · X̃_m[k, r]

W' = weight viewed as (p, K) (read as it is stored: contiguous rows, p·q·b values) and X̃_m the
(K, b) circulant expansion of row m of x (K·b gathers from an L1-resident row). Per row m a
(p × K)·(K × b) GEMM on tensor cores whose output tile (i, r) is row-major out[m] viewed (p, b);
K is split across programs by core's single-launch split-K (per row m its own partials and
counters); the bias (per (i, r)) enters with split 0's partial.

Which path: :func:`choose_path` (a static cost model; measured once per shape bucket on a GPU).
Backward (both paths): grad_x = g · W is block-circulant with the transposed blocks
(weightᵀ[j, i, k] = weight[i, j, −k mod b], spectrum conj and transposed), so it runs the same
kernel; grad_weight[i, j] = irfft(Σ_m G[m, :, i] · conj(X[m, :, j])) (circular
cross-correlation, torch.fft); grad_bias = Σ_m g.
"""

import functools
import math
from typing import Optional

import torch
import triton
import triton.language as tl

from slimtorch.core.checks import KERNEL_DTYPES, check_choice, check_same_device, check_tensor
from slimtorch.core.dispatch import empty_output
from slimtorch.core.gemm import (
    grouped_tile,
    m_bucket,
    max_tiles,
    plan_split_k,
    sm_count,
    splitk_counters,
    splitk_partials,
    store_output,
    store_splitk,
)
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import compute_dtype, linear_reference, nonfinite_rows_to_nan
from slimtorch.core.sass import ISSUE_RATE  # warp instructions per second: the static report's H100/H200
from slimtorch.core.triton_compat import dot_acc, upcast_dot_operands
from slimtorch.core.tuning import autotune_configs
from slimtorch.structured import circulant_fft

PATHS = ("auto", "fft", "direct")
DFT_GEMM_MAX_BLOCK = 128  # blocks up to this size take their DFTs as GEMMs (cuBLAS), larger ones cuFFT

# First entry of each list: the interpreter's config, valid for every shape (masks handle tails).
SPECTRAL_CONFIG_LIST = [
    triton.Config({"BLOCK_M": 32, "BLOCK_P": 16, "BLOCK_Q": 16}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 64, "BLOCK_P": 32, "BLOCK_Q": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_P": 32, "BLOCK_Q": 32}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_P": 64, "BLOCK_Q": 32}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_P": 64, "BLOCK_Q": 16}, num_warps=8, num_stages=2),
]
SPECTRAL_CONFIGS = autotune_configs(SPECTRAL_CONFIG_LIST)
DIRECT_CONFIG_LIST = [
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=4, num_stages=4),
]
DIRECT_CONFIGS = autotune_configs(DIRECT_CONFIG_LIST)
# the x-expansion GEMV (M ≤ GEMV_MAX_M): (BLOCK_I output blocks) × (BLOCK_R positions in a block) tiles
GEMV_CONFIG_LIST = [
    triton.Config({"BLOCK_I": 16, "BLOCK_R": 16, "BLOCK_K": 32}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_I": 64, "BLOCK_R": 64, "BLOCK_K": 64}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_I": 32, "BLOCK_R": 64, "BLOCK_K": 128}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_I": 64, "BLOCK_R": 32, "BLOCK_K": 128}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_I": 16, "BLOCK_R": 64, "BLOCK_K": 128}, num_warps=4, num_stages=4),
]
GEMV_CONFIGS = autotune_configs(GEMV_CONFIG_LIST)
GEMV_MAX_M = 16  # rows at or below: the x-expansion kernel
GEMV_MIN_K_PER_SPLIT = 128
GEMV_MAX_SPLITS = 32
GEMV_GRANULE = 128  # split ranges are multiples of every config's BLOCK_K


@triton.autotune(configs=SPECTRAL_CONFIGS, key=["M_BUCKET", "P", "Q", "F"])
@triton.jit
def _spectral_mac_kernel(
    x_ptr,  # X[m, f, j] (Re; Im at + stride_xc), fp32 or the activation dtype, through strides
    w_ptr,  # spectrum: (2, F, P, Q) fp32, contiguous
    y_ptr,  # Y[m, f, i] (Re; Im at + stride_yc), fp32 or the activation dtype, through strides
    bias_ptr,  # HAS_BIAS: the bias's spectrum (P, 2, F) fp32 contiguous, added to every row's Y
    M,
    P,
    Q,
    F,
    M_BUCKET,  # next power of two of M (autotune key only)
    stride_xm,
    stride_xf,
    stride_xq,
    stride_xc,
    stride_wc,  # F·P·Q: offset of the imaginary plane of the spectrum
    stride_ym,
    stride_yf,
    stride_yp,
    stride_yc,
    PRECISION: tl.constexpr,  # "ieee" for fp32 activations, "tf32" for 16-bit ones
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_Q: tl.constexpr,
):
    """Y[m, f, i] = Σ_j W[f, i, j] · X[m, f, j] (+ B[i, f]) (complex) for one (M tile, P tile) and frequency f."""
    tiles_p = tl.cdiv(P, BLOCK_P)
    pid = tl.program_id(0)
    pid_m, pid_p = pid // tiles_p, pid % tiles_p
    f = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_m, mask_p = offs_m < M, offs_p < P
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm + f * stride_xf
    w_base = w_ptr + f * (P * Q)
    acc_r = tl.zeros((BLOCK_M, BLOCK_P), dtype=tl.float32)
    acc_i = tl.zeros((BLOCK_M, BLOCK_P), dtype=tl.float32)
    for j0 in range(0, Q, BLOCK_Q):
        offs_q = j0 + tl.arange(0, BLOCK_Q)
        mask_q = offs_q < Q
        x_mask = mask_m[:, None] & mask_q[None, :]
        x_ptrs = x_rows + offs_q[None, :] * stride_xq
        xr = tl.load(x_ptrs, mask=x_mask, other=0.0).to(tl.float32)
        xi = tl.load(x_ptrs + stride_xc, mask=x_mask, other=0.0).to(tl.float32)
        w_mask = mask_q[:, None] & mask_p[None, :]
        w_ptrs = w_base + offs_p[None, :] * Q + offs_q[:, None]  # (BLOCK_Q, BLOCK_P) tile of Wfᵀ
        wr = tl.load(w_ptrs, mask=w_mask, other=0.0)
        wi = tl.load(w_ptrs + stride_wc, mask=w_mask, other=0.0)
        acc_r = tl.dot(xr, wr, acc_r, input_precision=PRECISION)
        acc_r = tl.dot(-xi, wi, acc_r, input_precision=PRECISION)
        acc_i = tl.dot(xr, wi, acc_i, input_precision=PRECISION)
        acc_i = tl.dot(xi, wr, acc_i, input_precision=PRECISION)
    if HAS_BIAS:  # the inverse DFT is linear: adding the bias's spectrum adds the bias to every output block
        b_ptrs = bias_ptr + offs_p * (2 * F) + f
        acc_r += tl.load(b_ptrs, mask=mask_p, other=0.0)[None, :]
        acc_i += tl.load(b_ptrs + F, mask=mask_p, other=0.0)[None, :]
    y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + f * stride_yf + offs_p[None, :] * stride_yp
    out_mask = mask_m[:, None] & mask_p[None, :]
    tl.store(y_ptrs, acc_r.to(y_ptr.dtype.element_ty), mask=out_mask)
    tl.store(y_ptrs + stride_yc, acc_i.to(y_ptr.dtype.element_ty), mask=out_mask)


@triton.autotune(configs=DIRECT_CONFIGS, key=["M_BUCKET", "N", "K", "B"])
@triton.jit
def _direct_kernel(
    x_ptr,  # (M, K), unit stride along K
    w_ptr,  # weight (P, Q, B) contiguous
    bias_ptr,
    out_ptr,  # (M, N)
    M,
    N,
    K,
    M_BUCKET,  # next power of two of M (autotune key only)
    stride_xm,
    stride_om,
    B: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,  # interpreter + bf16 only: see slimtorch.core.triton_compat
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """out = x · Wᵀ + bias with every Wᵀ tile gathered from the block vectors in registers."""
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    q = K // B
    row_block = (offs_n // B) * q  # (BLOCK_N,) first block index of each output row
    n_in_block = offs_n % B
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if BLOCK_K % B == 0:
        # every K tile starts a block: the (r − s) mod b pattern and the in-tile block offsets are the same for
        # every tile, so the gather's pointer tile is built once and advances by BLOCK_K/b blocks (one add)
        dk = tl.arange(0, BLOCK_K)
        lag = (n_in_block[None, :] - (dk % B)[:, None] + B) % B  # (BLOCK_K, BLOCK_N)
        w_ptrs = w_ptr + (row_block[None, :] + (dk // B)[:, None]).to(tl.int64) * B + lag
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + dk
            mask_k = offs_k < K
            a = tl.load(x_rows + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = dot_acc(a, w.to(a.dtype), acc, UPCAST)
            w_ptrs += BLOCK_K  # BLOCK_K / b blocks of b values along q
    else:
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            a = tl.load(x_rows + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
            lag = (n_in_block[None, :] - (offs_k % B)[:, None] + B) % B  # (r − s) mod b, (BLOCK_K, BLOCK_N)
            idx = ((row_block[None, :] + (offs_k // B)[:, None]).to(tl.int64)) * B + lag
            w = tl.load(w_ptr + idx, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
            acc = dot_acc(a, w.to(a.dtype), acc, UPCAST)
    store_output(acc, offs_m, offs_n, M, N, bias_ptr, bias_ptr, out_ptr, stride_om, False, HAS_BIAS, "none")


@triton.autotune(configs=GEMV_CONFIGS, key=["M_BUCKET", "P", "K", "B", "SPLIT"])
@triton.jit
def _direct_gemv_kernel(
    x_ptr,  # (M, K), unit stride along K
    w_ptr,  # weight (P, Q, B) contiguous = W' (P, K) row-major
    bias_ptr,  # (P·B,)
    out_ptr,  # (M, P·B) row-major, row stride stride_om
    partial_ptr,  # SPLIT: fp32 (M·splits, P, B)
    counter_ptr,  # SPLIT: int32, one per (m, tile)
    P,
    K,
    k_per_split,
    M_BUCKET,  # next power of two of M (autotune key only)
    stride_xm,
    stride_om,
    B: tl.constexpr,
    ALIGNED: tl.constexpr,  # every split starts at a multiple of B
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_I: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[m] (P, B) = W' · X̃_m over one K range (module doc), program axis 0 = (m, I tile, R tile)."""
    tiles_r = tl.cdiv(B, BLOCK_R)
    tiles = tl.cdiv(P, BLOCK_I) * tiles_r
    tile, split, splits = tl.program_id(0), tl.program_id(1), tl.num_programs(1)
    m = tile // tiles
    offs_i = (tile % tiles) // tiles_r * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_r = (tile % tiles_r) * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_i, mask_r = offs_i < P, offs_r < B
    k_lo = split * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)
    x_row = x_ptr + m.to(tl.int64) * stride_xm
    w_rows = w_ptr + offs_i.to(tl.int64)[:, None] * K
    dk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_I, BLOCK_R), dtype=tl.float32)
    if ALIGNED and BLOCK_K % B == 0:  # the gather pattern of X̃ is the same for every K tile: built once
        x_offs = (dk // B * B)[:, None] + (offs_r[None, :] - (dk % B)[:, None] + B) % B
        for k0 in range(k_lo, k_hi, BLOCK_K):
            mask_k = k0 + dk < k_hi
            w = tl.load(w_rows + (k0 + dk)[None, :], mask=mask_i[:, None] & mask_k[None, :], other=0.0)
            xt = tl.load(x_row + k0 + x_offs, mask=mask_k[:, None] & mask_r[None, :], other=0.0)
            acc = dot_acc(w.to(xt.dtype), xt, acc, UPCAST)
    else:
        for k0 in range(k_lo, k_hi, BLOCK_K):
            kk = k0 + dk
            mask_k = kk < k_hi
            w = tl.load(w_rows + kk[None, :], mask=mask_i[:, None] & mask_k[None, :], other=0.0)
            x_offs = (kk // B * B)[:, None] + (offs_r[None, :] - (kk % B)[:, None] + B) % B
            xt = tl.load(x_row + x_offs, mask=mask_k[:, None] & mask_r[None, :], other=0.0)
            acc = dot_acc(w.to(xt.dtype), xt, acc, UPCAST)
    if HAS_BIAS:  # noqa: SIM102 (a constexpr test, then a runtime one: kept apart for Triton)
        if split == 0:  # bias[i·B + r], once: with the first K range
            b_mask = mask_i[:, None] & mask_r[None, :]
            acc += tl.load(bias_ptr + offs_i[:, None] * B + offs_r[None, :], mask=b_mask, other=0.0).to(tl.float32)
    partials = partial_ptr + m.to(tl.int64) * splits * P * B
    store_splitk(
        acc, offs_i, offs_r, P, B, tile, split, splits, partials, counter_ptr, bias_ptr, bias_ptr,
        out_ptr + m.to(tl.int64) * stride_om, B, SPLIT, False, False, "none",
    )  # fmt: skip


# ----------------------------------------------------------------------------- checks


def _check_common(x: torch.Tensor, k: int, n: int, bias: Optional[torch.Tensor]) -> None:
    check_tensor(x, "x", ndim=2, dtype=KERNEL_DTYPES)
    if x.shape[1] != k:
        raise ValueError(f"x: expected shape (M, {k}) (K = q·block_size of the weight), got {tuple(x.shape)}")
    if bias is not None:
        check_tensor(bias, "bias", shape=(n,), dtype=KERNEL_DTYPES)


def _check_fft_mm(
    x: torch.Tensor, spectrum: torch.Tensor, block_size: int, bias: Optional[torch.Tensor] = None
) -> None:
    check_tensor(spectrum, "spectrum", ndim=4, dtype=torch.float32, contiguous=True)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size: expected a positive int, got {block_size!r}")
    if spectrum.shape[0] != 2 or spectrum.shape[1] != block_size // 2 + 1:
        raise ValueError(
            f"spectrum: expected shape (2, block_size//2 + 1 = {block_size // 2 + 1}, p, q), "
            f"got {tuple(spectrum.shape)}"
        )
    p, q = spectrum.shape[2], spectrum.shape[3]
    _check_common(x, q * block_size, p * block_size, bias)
    check_same_device(x=x, spectrum=spectrum, bias=bias)


def _check_direct_mm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> None:
    check_tensor(weight, "weight", ndim=3, dtype=KERNEL_DTYPES)
    p, q, b = weight.shape
    _check_common(x, q * b, p * b, bias)
    check_same_device(x=x, weight=weight, bias=bias)


# ----------------------------------------------------------------------------- launchers


@kernel_op(
    "slimtorch::block_circulant_fft_mm",
    reference="block_circulant_fft_mm_reference",
    check=_check_fft_mm,
    row_input="x",
)
def block_circulant_fft_mm(
    x: torch.Tensor, spectrum: torch.Tensor, block_size: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``x · Wᵀ + bias`` for W given by its spectrum (2, F, p, q); x (M, q·b) -> (M, p·b), x's dtype."""
    m = x.shape[0]
    b, p, q, f = block_size, spectrum.shape[2], spectrum.shape[3], spectrum.shape[1]
    if p == 1 and q == 1 and circulant_fft.fused_size(b):  # a circulant: FFT, product, iFFT in one kernel
        return circulant_fft.circulant_fft_mm.launcher(x, spectrum[:, :, 0, 0].contiguous(), b, b, bias)
    if p == 1 and q == 1:  # other circulant sizes: one complex product per frequency (cuFFT both ways)
        xf = torch.fft.rfft(x.float(), dim=1)
        out = torch.fft.irfft(xf * torch.complex(spectrum[0, :, 0, 0], spectrum[1, :, 0, 0]), n=b, dim=1)
    elif b <= DFT_GEMM_MAX_BLOCK:  # small blocks: the DFTs as GEMMs with the DFT matrices (cuBLAS)
        forward, inverse = dft_matrices(b, x.dtype, x.device)
        xs = (x.reshape(m * q, b) @ forward).reshape(m, q, 2 * f)  # [Re | Im] per block, x's dtype
        y = empty_output((m, p, 2, f), dtype=x.dtype, device=x.device)  # [Re | Im] per output block
        # the bias enters as its spectrum (p, 2F), fp32: one tiny GEMM instead of a pass over the (M, N) output
        bias_spectrum = (
            None if bias is None else bias.float().reshape(p, b) @ dft_matrices(b, torch.float32, x.device)[0]
        )
        _launch_spectral(xs, spectrum, y, (q * 2 * f, 1, 2 * f, f), (p * 2 * f, 1, 2 * f, f), x.dtype, bias_spectrum)
        return (y.reshape(m * p, 2 * f) @ inverse).reshape(m, p * b)  # x's dtype
    else:  # large blocks: cuFFT
        xf = torch.view_as_real(torch.fft.rfft(x.reshape(m, q, b).transpose(1, 2).float(), dim=1))  # (M, F, q, 2)
        y = empty_output((m, f, p, 2), dtype=torch.float32, device=x.device)
        _launch_spectral(xf, spectrum, y, xf.stride(), y.stride(), x.dtype)
        out = torch.fft.irfft(torch.view_as_complex(y), n=b, dim=1).transpose(1, 2).reshape(m, p * b)
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


def _launch_spectral(
    xs: torch.Tensor,
    spectrum: torch.Tensor,
    y: torch.Tensor,
    x_strides,
    y_strides,
    dtype: torch.dtype,
    bias_spectrum: Optional[torch.Tensor] = None,
) -> None:
    """Run ``_spectral_mac_kernel``; strides are (row, frequency, block, imaginary part) in elements;
    ``bias_spectrum`` (p, 2F) fp32 [Re | Im] of rfft of each output block's bias."""
    m, f, p, q = xs.shape[0], spectrum.shape[1], spectrum.shape[2], spectrum.shape[3]
    if m == 0:
        return
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(p, meta["BLOCK_P"]), f)
    _spectral_mac_kernel[grid](
        xs,
        spectrum,
        y,
        bias_spectrum if bias_spectrum is not None else spectrum,
        m,
        p,
        q,
        f,
        m_bucket(m),
        *x_strides,
        f * p * q,
        *y_strides,
        PRECISION="ieee" if dtype == torch.float32 else "tf32",
        HAS_BIAS=bias_spectrum is not None,
    )


@functools.lru_cache(maxsize=64)
def dft_matrices(b: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The real DFT of size b as matrices in ``dtype``: ``forward`` (b, 2F) with x_blk @ forward =
    [Re X | Im X] (X = rfft(x_blk)), ``inverse`` (2F, b) with [Re Y | Im Y] @ inverse = irfft(Y, n=b)
    (weights 1 for f = 0 and f = b/2, else 2, over b; imaginary parts of those two ignored, as irfft does)."""
    f = b // 2 + 1
    angle = 2 * math.pi * torch.outer(torch.arange(b, dtype=torch.float64), torch.arange(f, dtype=torch.float64)) / b
    forward = torch.cat((torch.cos(angle), -torch.sin(angle)), dim=1)
    weight = torch.full((f,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if b % 2 == 0:
        weight[-1] = 1.0
    inverse = torch.cat((weight[:, None] * torch.cos(angle.T), -weight[:, None] * torch.sin(angle.T))) / b
    return forward.to(device=device, dtype=dtype), inverse.to(device=device, dtype=dtype)


@kernel_op(
    "slimtorch::block_circulant_direct_mm",
    reference="block_circulant_direct_mm_reference",
    check=_check_direct_mm,
    row_input="x",
)
def block_circulant_direct_mm(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``x · Wᵀ + bias`` for W given by its block vectors (p, q, b); x (M, q·b) -> (M, p·b)."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    weight = weight.contiguous()
    m, k = x.shape
    p, _, b = weight.shape
    n = p * b
    out = empty_output((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    if m <= GEMV_MAX_M:
        _launch_direct_gemv(x, weight, bias, out)
        return out
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
    _direct_kernel[grid](
        x,
        weight,
        bias if bias is not None else out,
        out,
        m,
        n,
        k,
        m_bucket(m),
        x.stride(0),
        out.stride(0),
        B=b,
        HAS_BIAS=bias is not None,
        UPCAST=upcast_dot_operands(x.dtype),
    )
    return out


def _launch_direct_gemv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], out: torch.Tensor) -> None:
    """``_direct_gemv_kernel`` for M ≤ GEMV_MAX_M: K split until (rows × tiles × splits) fills the GPU."""
    m, k = x.shape
    p, _, b = weight.shape
    plan = plan_split_k(
        m * p,
        b,
        k,
        sm_count=sm_count(x.device),
        block_m=64,
        block_n=64,
        min_k_per_split=GEMV_MIN_K_PER_SPLIT,
        max_splits=GEMV_MAX_SPLITS,
        granule=GEMV_GRANULE,
    )
    split = plan.splits > 1
    tiles = lambda meta: m * triton.cdiv(p, meta["BLOCK_I"]) * triton.cdiv(b, meta["BLOCK_R"])
    partials = splitk_partials(m * plan.splits, p, b, x.device) if split else out
    counters = splitk_counters(x.device, max_tiles(GEMV_CONFIG_LIST, tiles)) if split else out
    _direct_gemv_kernel[lambda meta: (tiles(meta), plan.splits)](
        x,
        weight,
        bias if bias is not None else out,
        out,
        partials,
        counters,
        p,
        k,
        plan.k_per_split,
        m_bucket(m),
        x.stride(0),
        out.stride(0),
        B=b,
        ALIGNED=not split or plan.k_per_split % b == 0,
        HAS_BIAS=bias is not None,
        SPLIT=split,
        UPCAST=upcast_dot_operands(x.dtype),
    )


# ----------------------------------------------------------------------------- path choice

# Static model of an H100 SXM (dense rates, not sparse): used where nothing was measured.
H100_BYTES_PER_S = 3.0e12
H100_FLOPS = {torch.float16: 7.0e14, torch.bfloat16: 7.0e14, torch.float32: 3.5e14}  # fp32 via tf32 tensor cores
H100_FP32_FLOPS = 6.0e13  # CUDA-core fp32 (the FFT kernel's IEEE dots for fp32 activations)
LAUNCH_S = 4e-6  # the host's cost to issue one kernel (Python op dispatch and the launch itself)
LAUNCH_GAP_S = 1.5e-6  # the GPU's idle time between back-to-back kernels of a stream


def call_seconds(work_s: float, launches: int) -> float:
    """One call of ``launches`` kernels doing ``work_s`` of roofline work: the host issues the
    kernels while the GPU runs them, so the call takes the GPU's time (work + a gap per kernel) or
    the host's issue time, whichever is longer (launch-bound calls: the host's)."""
    return max(work_s + launches * LAUNCH_GAP_S, launches * LAUNCH_S)


FUSED_FFT_INSTR = 7.5  # circulant_fft's thread instructions per complex element and stage (sm_90a SASS)


def estimate_seconds(path: str, m: int, p: int, q: int, b: int, dtype: torch.dtype) -> float:
    """Static time estimate of one forward on an H100: the roofline work (max(bytes / BW, FLOPs / rate))
    of its kernels, through :func:`call_seconds`."""
    n, k, elt = p * b, q * b, torch.empty((), dtype=dtype).element_size()
    f = b // 2 + 1
    if path == "direct":
        moved = m * k * elt + m * n * elt + p * q * b * elt
        return call_seconds(max(moved / H100_BYTES_PER_S, 2 * m * n * k / H100_FLOPS[dtype]), 1)
    if p == 1 and q == 1 and circulant_fft.fused_size(b):
        # the fused kernel: x read, y written once; issue-bound by its butterflies (the static SASS report,
        # d = 8192: 7.5 thread instructions per complex element and stage, two rows per transform)
        moved = m * k * elt + m * n * elt + 8 * f
        issue = FUSED_FFT_INSTR * b * 2 * math.log2(b) * math.ceil(m / 2) / 32 / ISSUE_RATE
        return call_seconds(max(moved / H100_BYTES_PER_S, issue), 1)
    rate = H100_FP32_FLOPS if dtype == torch.float32 else H100_FLOPS[torch.float32]
    mac = 8 * m * p * q * f / rate
    if b <= DFT_GEMM_MAX_BLOCK and p * q > 1:
        # DFT GEMM (read x, write X), bias spectrum (p·b, tiny), MAC (read X per P tile of 64, write Y + the
        # bias spectrum), inverse GEMM (read Y, write y)
        spectral_in, spectral_out = 2 * f * m * q * elt, 2 * f * m * p * elt
        moved = m * k * elt + spectral_in * (1 + math.ceil(p / 64)) + 2 * spectral_out + m * n * elt
        dft = 2 * (2 * m * k * 2 * f) / H100_FLOPS[dtype]
        return call_seconds(max(moved / H100_BYTES_PER_S, mac + dft), 4)
    spectral_in, spectral_out = 8 * m * q * f, 8 * m * p * f
    # fp32 cast, rfft (read x, write X), MAC (read X per P tile, write Y), irfft (read Y, write y), transpose + cast
    moved = m * k * (elt + 4) + spectral_in * (1 + math.ceil(p / 64)) + 2 * spectral_out + 4 * m * n * 3 + m * n * elt
    return call_seconds(max(moved / H100_BYTES_PER_S, mac), 5)


@functools.lru_cache(maxsize=4096)
def _measured_path(rows: int, p: int, q: int, b: int, dtype: torch.dtype, device: str) -> str:
    """Time both paths once for this shape bucket on this GPU; the faster one."""
    from triton.testing import do_bench

    x = torch.randn(rows, q * b, device=device, dtype=dtype)
    weight = torch.randn(p, q, b, device=device, dtype=dtype)
    spectrum = weight_spectrum(weight)
    fft = do_bench(lambda: block_circulant_fft_mm.launcher(x, spectrum, b, None), warmup=5, rep=20)
    direct = do_bench(lambda: block_circulant_direct_mm.launcher(x, weight, None), warmup=5, rep=20)
    return "fft" if fft < direct else "direct"


def choose_path(m: int, p: int, q: int, b: int, dtype: torch.dtype, device: torch.device, measure: bool = True) -> str:
    """ "fft" or "direct" for an (M, q·b) x and a (p, q, b) weight: measured once per (M bucket,
    shape, dtype) on a GPU when ``measure`` (not while torch.compile traces), else the static model."""
    if measure and device.type == "cuda" and not torch.compiler.is_compiling():
        return _measured_path(m_bucket(m), p, q, b, dtype, str(device))
    fft = estimate_seconds("fft", m, p, q, b, dtype)
    return "fft" if fft < estimate_seconds("direct", m, p, q, b, dtype) else "direct"


def block_circulant_mm(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    path: str = "auto",
    spectrum: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``x · Wᵀ + bias`` by the chosen path (trains through the ops' autograd); ``spectrum`` is
    ``weight_spectrum(weight)`` when the caller has it cached."""
    check_choice(path, "path", PATHS)
    p, q, b = weight.shape
    if path == "auto":
        path = choose_path(x.shape[0], p, q, b, x.dtype, x.device)
    if path == "direct":
        return block_circulant_direct_mm(x, weight.to(x.dtype), bias)
    return _FFTMatmul.apply(x, weight, weight_spectrum(weight) if spectrum is None else spectrum, bias)


# ----------------------------------------------------------------------------- autograd


def weight_spectrum(weight: torch.Tensor) -> torch.Tensor:
    """(2, F, p, q) fp32: Re and Im of rfft(weight) along b, frequencies outermost (no grad)."""
    wf = torch.fft.rfft(weight.detach().float(), dim=-1).permute(2, 0, 1)  # (F, p, q)
    return torch.stack((wf.real, wf.imag)).contiguous()


def transposed_weight(weight: torch.Tensor) -> torch.Tensor:
    """The block vectors of Wᵀ: weightᵀ[j, i, k] = weight[i, j, −k mod b]."""
    return torch.roll(torch.flip(weight, dims=(-1,)), shifts=1, dims=-1).transpose(0, 1).contiguous()


def transposed_spectrum(spectrum: torch.Tensor) -> torch.Tensor:
    """Spectrum of Wᵀ: each block's conjugate, blocks transposed."""
    return torch.stack((spectrum[0], -spectrum[1])).transpose(2, 3).contiguous()


def weight_gradient(grad_out: torch.Tensor, x: torch.Tensor, p: int, q: int, b: int) -> torch.Tensor:
    """grad_weight[i, j, k] = Σ_m Σ_r g[m, i·b + r] · x[m, j·b + (r − k) mod b], by FFT (fp32)."""
    dt = compute_dtype(x.dtype)
    g = torch.fft.rfft(grad_out.reshape(-1, p, b).to(dt), dim=-1)  # (M, p, F)
    xf = torch.fft.rfft(x.reshape(-1, q, b).to(dt), dim=-1)  # (M, q, F)
    cross = torch.einsum("mif,mjf->ijf", g, xf.conj())
    return torch.fft.irfft(cross, n=b, dim=-1)


class _FFTMatmul(torch.autograd.Function):
    """The FFT path with its backward (module docstring); the spectrum is derived, not trained."""

    @staticmethod
    def forward(x, weight, spectrum, bias):
        return block_circulant_fft_mm(x, spectrum, weight.shape[-1], bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, spectrum, bias = inputs
        ctx.save_for_backward(x, weight, spectrum)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, spectrum = ctx.saved_tensors
        p, q, b = weight.shape
        grad_x = grad_w = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = block_circulant_fft_mm(grad_out, transposed_spectrum(spectrum), b, None)
        if ctx.needs_input_grad[1]:
            grad_w = weight_gradient(grad_out, x, p, q, b).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = grad_out.sum(0)
        return grad_x, grad_w, None, grad_bias


def _direct_setup_context(ctx, inputs, output) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _direct_backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    p, q, b = weight.shape
    grad_x = grad_w = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = block_circulant_direct_mm(grad_out, transposed_weight(weight), None)
    if ctx.needs_input_grad[1]:
        grad_w = weight_gradient(grad_out, x, p, q, b).to(weight.dtype)
    if ctx.has_bias and ctx.needs_input_grad[2]:
        grad_bias = grad_out.sum(0)
    return grad_x, grad_w, grad_bias


block_circulant_direct_mm.register_autograd(_direct_backward, setup_context=_direct_setup_context)


# ----------------------------------------------------------------------------- references


def block_circulant_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The explicit (p·b, q·b) matrix W[i·b + r, j·b + s] = weight[i, j, (r − s) mod b] (differentiable)."""
    p, q, b = weight.shape
    r = torch.arange(b, device=weight.device)
    lag = (r[:, None] - r[None, :]) % b  # (b, b)
    return weight[:, :, lag].permute(0, 2, 1, 3).reshape(p * b, q * b)


def block_circulant_direct_mm_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Pure torch: the explicit matrix, then ``x · Wᵀ + bias`` in fp32 (fp64 for fp64 x)."""
    return linear_reference(x, block_circulant_matrix(weight.to(compute_dtype(x.dtype))), bias)


def block_circulant_fft_mm_reference(
    x: torch.Tensor, spectrum: torch.Tensor, block_size: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Pure torch FFT path: rfft, complex einsum over q, irfft (fp32; fp64 for fp64 x)."""
    dt = compute_dtype(x.dtype)
    m, b, p, q = x.shape[0], block_size, spectrum.shape[2], spectrum.shape[3]
    xf = torch.fft.rfft(x.reshape(m, q, b).to(dt), dim=-1)  # (M, q, F)
    wf = torch.complex(spectrum[0].to(dt), spectrum[1].to(dt))  # (F, p, q)
    y = torch.fft.irfft(torch.einsum("fij,mjf->mif", wf, xf), n=b, dim=-1).reshape(m, p * b)
    if bias is not None:
        y = y + bias.to(dt)
    return nonfinite_rows_to_nan(x, y.to(x.dtype))  # core's NaN/Inf row policy

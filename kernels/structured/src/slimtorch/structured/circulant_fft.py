"""Circulant matmul ``y = C(c) · x (+ bias)`` by one fused FFT kernel: FFT, product, inverse FFT in registers.

Math. C(c)[r, s] = c[(r − s) mod N], so y = c ⊛ x (circular convolution) = IFFT(FFT(x) · FFT(c)),
Cheng et al. 2015. The layer's ``spectrum`` holds FFT(c) as an rfft, (2, N/2 + 1) fp32 [Re; Im]
(``block_circulant.weight_spectrum`` with p = q = 1); the other half is its conjugate mirror,
FFT(c)[k] = conj(FFT(c)[N − k]) (c is real).

Two rows per FFT. c is real, so one complex transform serves two rows: z = x₁ + i·x₂ gives
IFFT(FFT(z) · FFT(c)) = c ⊛ x₁ + i·(c ⊛ x₂). A program loads rows 2·pid and 2·pid + 1, and writes
the real part to the first, the imaginary part to the second. A non-finite row is zeroed for the
transform and written as NaN (core's NaN/Inf row policy), so it does not leak into its partner.

The transform (N = 2^L ≤ MAX_N complex values in registers, fp32):
- forward, decimation in frequency, L identical stages: view z as (2, N/2), the halves a and b
  differ in the top index bit; a + b and (a − b)·ω^t (ω = e^{−2πi/N}) are joined as the new lowest
  bit. At stage s the index is (remaining input bits, k₀..k_{s−1}), the twiddle exponent is
  t = (e >> s)·2^s for the half-index e, i.e. one twiddle per 2^s consecutive elements: an
  (N / 2^{s+1}, 1) column broadcast, loaded from a table (:func:`twiddles`: stage s's
  ω^{m·2^s}, m < N/2^{s+1}, contiguous at offset N − N/2^s; N − 1 entries, 64 KiB at N = 8192,
  L1/L2-resident). Sines and cosines in the kernel cost libdevice's range reduction (8 times the
  butterflies' instructions on sm_90a).
  The result is in bit-reversed order: Z[rev(e)] at e.
- product with FFT(c)[rev(e)] (the reversal computed once per program, 4 swap steps of 16 bits);
- inverse: the forward stages undone in reverse order (split the lowest bit, multiply by the
  conjugate twiddle, sum and difference, make it the top bit again), then 1/N. Natural order.
Memory: each x row is read once and each y row written once; the spectrum (8·(N/2 + 1) bytes)
comes from L2. Rectangular layers pass ``in_features`` ≤ N (x zero-padded in registers) and
``out_features`` ≤ N (y truncated at the store).
"""

import functools
import math
from typing import Optional

import torch
import triton
import triton.language as tl

from slimtorch.core.checks import KERNEL_DTYPES, check_same_device, check_tensor
from slimtorch.core.dispatch import empty_output
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import compute_dtype, nonfinite_rows_to_nan

MAX_N = 8192  # the largest transform one program holds in registers (16 warps, 32 fp32 per thread per plane)
MIN_N = 16


def fused_size(n: int) -> bool:
    """Whether a circulant of size n runs the fused kernel (a power of two in [MIN_N, MAX_N])."""
    return MIN_N <= n <= MAX_N and n & (n - 1) == 0


def launch_meta(n: int) -> dict[str, int]:
    return {"num_warps": max(4, min(8, n // 1024))}  # 16 warps cap registers at 128: N = 8192 spilled


@functools.lru_cache(maxsize=16)
def twiddles(n: int, device: torch.device) -> torch.Tensor:
    """(2, n) fp32 [Re; Im]: for each stage s < log2 n, ω^{m·2^s} (ω = e^{−2πi/n}, m < n/2^{s+1}) at
    offset n − n/2^s (computed in float64)."""
    parts = []
    for s in range(n.bit_length() - 1):
        m = torch.arange(n >> (s + 1), dtype=torch.float64)
        parts.append(-2 * math.pi * m * (1 << s) / n)
    angle = torch.cat([*parts, torch.zeros(1, dtype=torch.float64)])  # n − 1 entries, padded to n
    return torch.stack((torch.cos(angle), torch.sin(angle))).to(device=device, dtype=torch.float32).contiguous()


@triton.jit
def _bit_reverse(e, LOG_N: tl.constexpr):
    """The LOG_N-bit reversal of e (int32, LOG_N ≤ 16): swap bits, pairs, nibbles, bytes of 16 bits."""
    e = ((e >> 1) & 0x5555) | ((e & 0x5555) << 1)
    e = ((e >> 2) & 0x3333) | ((e & 0x3333) << 2)
    e = ((e >> 4) & 0x0F0F) | ((e & 0x0F0F) << 4)
    e = ((e >> 8) & 0x00FF) | ((e & 0x00FF) << 8)
    return e >> (16 - LOG_N)


@triton.jit
def _circulant_fft_kernel(
    x_ptr,  # (R, K) rows, unit stride along K
    spec_ptr,  # (2, N/2 + 1) fp32 contiguous: Re and Im of rfft(c)
    tw_ptr,  # (2, N) fp32 contiguous: the twiddle tables (module doc), Re then Im
    bias_ptr,  # (OUT,)
    out_ptr,  # (R, OUT) rows, unit stride
    R,
    K,  # in_features ≤ N
    OUT,  # out_features ≤ N
    stride_xm,
    stride_om,
    N: tl.constexpr,
    LOG_N: tl.constexpr,
    HAS_BIAS: tl.constexpr,
):
    row = 2 * tl.program_id(0)
    offs = tl.arange(0, N)
    in_mask = offs < K
    has_second = (offs * 0 + row + 1) < R  # (N,): whether row 2·pid + 1 exists (R odd: the last program has one)
    x1 = tl.load(x_ptr + row.to(tl.int64) * stride_xm + offs, mask=in_mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + (row + 1).to(tl.int64) * stride_xm + offs, mask=in_mask & has_second, other=0.0)
    x2 = x2.to(tl.float32)
    # NaN/Inf rows: transform zeros, store NaN (x − x is 0 for finite x, NaN otherwise)
    bad1 = tl.max((x1 - x1 != 0).to(tl.int32), axis=0) > 0
    bad2 = tl.max((x2 - x2 != 0).to(tl.int32), axis=0) > 0
    zr = tl.where(x1 - x1 == 0, x1, 0.0)
    zi = tl.where(x2 - x2 == 0, x2, 0.0)
    # forward FFT (decimation in frequency), bit-reversed output
    for s in tl.static_range(LOG_N):
        ar, br = tl.split(tl.permute(tl.reshape(zr, (2, N // 2)), (1, 0)))
        ai, bi = tl.split(tl.permute(tl.reshape(zi, (2, N // 2)), (1, 0)))
        tw = tw_ptr + (N - (N >> s)) + tl.arange(0, tl.constexpr(N >> (s + 1)))
        c = tl.load(tw)[:, None]
        sn = tl.load(tw + N)[:, None]
        dr = tl.reshape(ar - br, (N >> (s + 1), 1 << s))
        di = tl.reshape(ai - bi, (N >> (s + 1), 1 << s))
        tr = tl.reshape(dr * c - di * sn, (N // 2,))
        ti = tl.reshape(dr * sn + di * c, (N // 2,))
        zr = tl.reshape(tl.join(ar + br, tr), (N,))
        zi = tl.reshape(tl.join(ai + bi, ti), (N,))
    # product with FFT(c)[rev(e)]; FFT(c)[k] = conj(rfft(c)[N − k]) above N/2
    k = _bit_reverse(offs, LOG_N)
    upper = k > N // 2
    kk = tl.where(upper, N - k, k)
    wr = tl.load(spec_ptr + kk)
    wi = tl.load(spec_ptr + (N // 2 + 1) + kk)
    wi = tl.where(upper, -wi, wi)
    pr = zr * wr - zi * wi
    zi = zr * wi + zi * wr
    zr = pr
    # inverse: undo the stages in reverse order (conjugate twiddles), natural order out
    for s in tl.static_range(LOG_N - 1, -1, -1):
        ar, br = tl.split(tl.reshape(zr, (N // 2, 2)))
        ai, bi = tl.split(tl.reshape(zi, (N // 2, 2)))
        tw = tw_ptr + (N - (N >> s)) + tl.arange(0, tl.constexpr(N >> (s + 1)))
        c = tl.load(tw)[:, None]
        sn = -tl.load(tw + N)[:, None]  # the conjugate
        br2 = tl.reshape(br, (N >> (s + 1), 1 << s))
        bi2 = tl.reshape(bi, (N >> (s + 1), 1 << s))
        tr = tl.reshape(br2 * c - bi2 * sn, (N // 2,))
        ti = tl.reshape(br2 * sn + bi2 * c, (N // 2,))
        zr = tl.reshape(tl.permute(tl.join(ar + tr, ar - tr), (1, 0)), (N,))
        zi = tl.reshape(tl.permute(tl.join(ai + ti, ai - ti), (1, 0)), (N,))
    y1 = zr * (1.0 / N)
    y2 = zi * (1.0 / N)
    out_mask = offs < OUT
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs, mask=out_mask, other=0.0).to(tl.float32)
        y1 += bias
        y2 += bias
    y1 = tl.where(bad1, float("nan"), y1)
    y2 = tl.where(bad2, float("nan"), y2)
    out_dtype = out_ptr.dtype.element_ty
    tl.store(out_ptr + row.to(tl.int64) * stride_om + offs, y1.to(out_dtype), mask=out_mask)
    tl.store(out_ptr + (row + 1).to(tl.int64) * stride_om + offs, y2.to(out_dtype), mask=out_mask & has_second)


# ----------------------------------------------------------------------------- launcher


def _check_circulant_fft_mm(
    x: torch.Tensor, spectrum: torch.Tensor, n: int, out_features: int, bias: Optional[torch.Tensor] = None
) -> None:
    if not isinstance(n, int) or not fused_size(n):
        raise ValueError(f"n: expected a power of two in [{MIN_N}, {MAX_N}] (the fused FFT's sizes), got {n!r}")
    check_tensor(x, "x", ndim=2, dtype=KERNEL_DTYPES)
    if x.shape[1] > n:
        raise ValueError(f"x: expected at most n = {n} columns (in_features), got {tuple(x.shape)}")
    check_tensor(spectrum, "spectrum", shape=(2, n // 2 + 1), dtype=torch.float32, contiguous=True)
    if not isinstance(out_features, int) or not 0 < out_features <= n:
        raise ValueError(f"out_features: expected an int in [1, n = {n}], got {out_features!r}")
    if bias is not None:
        check_tensor(bias, "bias", shape=(out_features,), dtype=KERNEL_DTYPES)
    check_same_device(x=x, spectrum=spectrum, bias=bias)


@kernel_op(
    "slimtorch::circulant_fft_mm", reference="circulant_fft_mm_reference", check=_check_circulant_fft_mm, row_input="x"
)
def circulant_fft_mm(
    x: torch.Tensor, spectrum: torch.Tensor, n: int, out_features: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """C(c)[:out_features, :K] applied to x (M, K ≤ n) -> (M, out_features), x's dtype; ``spectrum`` = rfft(c)
    as (2, n/2 + 1) fp32."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    m, k = x.shape
    out = empty_output((m, out_features), dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    _circulant_fft_kernel[(triton.cdiv(m, 2),)](
        x,
        spectrum,
        twiddles(n, x.device),
        bias if bias is not None else out,
        out,
        m,
        k,
        out_features,
        x.stride(0),
        out.stride(0),
        N=n,
        LOG_N=n.bit_length() - 1,
        HAS_BIAS=bias is not None,
        **launch_meta(n),
    )
    return out


def circulant_fft_mm_reference(
    x: torch.Tensor, spectrum: torch.Tensor, n: int, out_features: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Pure torch: zero-pad x to n, rfft, product, irfft, truncate (fp32; fp64 for fp64 x)."""
    dt = compute_dtype(x.dtype)
    xf = torch.fft.rfft(x.to(dt), n=n, dim=1)
    wf = torch.complex(spectrum[0].to(dt), spectrum[1].to(dt))
    y = torch.fft.irfft(xf * wf, n=n, dim=1)[:, :out_features]
    if bias is not None:
        y = y + bias.to(dt)
    return nonfinite_rows_to_nan(x, y.to(x.dtype))

"""XNOR-Net / BNN kernels: binary activations × binary weights by XOR + popcount.

Math (Rastegari et al. 2016, "XNOR-Net"; Courbariaux, Hubara et al. 2016, "Binarized Neural
Networks"). With a, w ∈ {−1, +1}^K stored as sign bits (bit = 1 ⇔ −1),

    a · w = (#equal) − (#different) = K − 2 · popcount(bits(a) XOR bits(w))

so one 32-bit XOR + one POPC replace 32 multiply-accumulates. The ops here:

- :func:`pack_signs`: x (*, K) float → (*, KW = ceil(K / 32)) int32; bit j of word w is 1 iff
  x[..., 32w + j] < 0 (sign(0) = +1, also for −0.0); padding bits past K are 0. NaN: ``NaN < 0``
  is false, so a NaN packs as +1 (exact and deterministic, the bits cannot hold a NaN). The layers
  keep NaN in → NaN out through the activation scale β = mean |x| (NaN where the row has a NaN),
  or, without β, by setting non-finite rows of their output to NaN themselves.
- :func:`xnor_mm`: a_bits (M, KW), w_bits (N, KW) (both row-major: one row of words per row of
  the ±1 matrix, exactly what :func:`pack_signs` gives for acts (M, K) and weight (N, K)),

      out[m, n] = (K − 2 · popcount(a[m] XOR w[n])) · α[n] · β[m] + bias[n]      (β, bias optional)

  in α's dtype. Padding bits are 0 in both operands, so they XOR to 0 and K stays the true K.
- :func:`xnor_conv2d`: the same as an implicit GEMM over packed channels: a_bits (B, H, W, CW)
  (NHWC, channels packed 32 per word), w_bits (O, kh, kw, CW); rows = output pixels, columns = O,
  reduction over the kh·kw taps × CW words. A tap that falls into the zero padding contributes 0
  (the reference is ``F.conv2d`` of the ±1 tensors with zero padding), so per output pixel

      out[b, o, y, x] = (C · taps_in(y, x) − 2 · Σ_valid taps popcount(a XOR w)) · α[o] · β[b, y, x] + bias[o]

  taps_in = the taps of the window inside the image. The kernel does not mask words in its loop: a
  tap outside the image loads a = 0, which adds popcount(w[o, tap, :]) (``popcount_words``,
  precomputed per launch), and one exact (BLOCK_M × 16) · (16 × BLOCK_N) fp16 ``tl.dot`` of the
  rows' outside-tap bits with those popcounts takes it back out after the loop. The output is
  (B, O, Ho, Wo) in channels_last memory (what the kernel writes coalesced, and what the next
  binary layer packs).

Kernels. The popcount: ``tl`` has none, so on a GPU it is inline PTX ``popc.b32`` (SASS ``POPC``);
the interpreter runs the pure-Triton SWAR twin (``_popc_swar``: the classic 5-step bit trick,
same result for every word). Both GEMMs accumulate per-lane popcounts in an int32 tile
(BLOCK_M, BLOCK_N, BLOCK_KW) across K and reduce over the word axis once after the loop (the int4
GEMV's scheme: no cross-lane traffic in the K loop), then ``K − 2·pop`` (exact integers in fp32
for K ≤ 2^24) goes through core's epilogue (α as the per-channel scale, bias, cast, store).

- M ≤ GEMV_MAX_M (= 16): GEMV configs, BLOCK_M = next power of two of M, tiles along N and the
  words of K (LDG.128 of 4 words per lane); every weight word is read once.
- M > 16: tile configs (BLOCK_M × BLOCK_N output tiles in core's grouped order).

Cost model (Hopper, CUDA C++ Programming Guide, "Throughput of native arithmetic instructions",
results per clock per SM for cc 9.0): 32-bit POPC 16, LOP3 (XOR) 64, IADD 64, issue 4 warp
instructions (128 lanes). The XOR/POPC/IADD inner loop is therefore POPC-bound at 16 words
(512 binary MACs) per SM per clock = 2 · 512 · 132 · 1.755e9 ≈ 237 T binary op/s on an H200,
a quarter of fp16 dense tensor cores (989 TFLOP/s): for M ≥ 256 cuBLAS fp16 out-runs the XNOR GEMM
on CUDA cores; XNOR wins where weight bytes rule (M ≤ 16, 16x fewer bytes than fp16).
The static SASS report (benchmarks/static/sm_90a-xnor.md) measures the loop against that ceiling.
"""

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from slimtorch.core.checks import KERNEL_DTYPES, check_same_device, check_tensor
from slimtorch.core.dispatch import empty_output
from slimtorch.core.gemm import grouped_tile, m_bucket, store_output
from slimtorch.core.library import kernel_op
from slimtorch.core.packing import pack_bits, unpack_bits
from slimtorch.core.tuning import autotune_configs

WORD_BITS = 32
GEMV_MAX_M = 16  # rows at or below: the GEMV configs (no M tiling)
MAX_K = 2**24  # K − 2·pop stays an exact integer in the fp32 epilogue
MAX_TAPS = 31  # conv kernel taps kh·kw: one bit each in an int32 mask (7x7 = 49 is refused)

# ----------------------------------------------------------------------------- autotune configs
# First entry of each list: the interpreter's config (correct for every shape: all are masked).

# pack_signs: one fixed tile (a single memory-bound pass; not autotuned, so a layer's launches list
# the XNOR GEMM as their first tuned kernel): BLOCK_R rows x BLOCK_W words x 32 signs.
PACK_BLOCK_R, PACK_BLOCK_W = 8, 4
# GEMV: BLOCK_M is set by the launcher (next power of two of M <= 16); acc = BLOCK_M·BLOCK_N·BLOCK_KW int32
GEMV_CONFIG_LIST = [
    triton.Config({"BLOCK_N": 16, "BLOCK_KW": 32, "GROUP_M": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 32, "BLOCK_KW": 16, "GROUP_M": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 8, "BLOCK_KW": 64, "GROUP_M": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 64, "BLOCK_KW": 8, "GROUP_M": 1}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_N": 32, "BLOCK_KW": 32, "GROUP_M": 1}, num_warps=8, num_stages=3),
]
# sm_90a (benchmarks/static/sm_90a-xnor.md): 64x64 tiles issue 0.85 of their loop as XOR/POPC/add; 32x32x4
# reached 0.78 and 128x64 / 64x128 (8 warps) 0.41 at 255 registers, so they are not listed.
GEMM_CONFIG_LIST = [
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_KW": 2, "GROUP_M": 8}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_KW": 4, "GROUP_M": 8}, num_warps=8, num_stages=3),
]
CONV_CONFIG_LIST = [
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_CW": 2, "GROUP_M": 8}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_CW": 2, "GROUP_M": 8}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_CW": 4, "GROUP_M": 8}, num_warps=4, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_CW": 4, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_CW": 8, "GROUP_M": 8}, num_warps=8, num_stages=3),
]
_MM_KEY = ["M_BUCKET", "N", "KW"]
_CONV_KEY = ["M_BUCKET", "N", "CW"]  # KH, KW_TAPS are constexprs


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _or(a, b):
    return a | b


@triton.jit
def _pack_signs_kernel(
    x_ptr,  # (R, K) float, any strides
    out_ptr,  # (R, KW) int32 contiguous
    R,
    K,
    KW,
    stride_r,
    stride_k,
    BLOCK_R: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    """One pass over x: a (BLOCK_R, BLOCK_W, 32) block of signs → (BLOCK_R, BLOCK_W) words."""
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    bit = tl.arange(0, 32)
    r3 = offs_r[:, None, None]
    k3 = offs_w[None, :, None] * 32 + bit[None, None, :]
    mask = (r3 < R) & (k3 < K)
    x = tl.load(x_ptr + r3.to(tl.int64) * stride_r + k3 * stride_k, mask=mask, other=0.0)
    bits = tl.where(x < 0, 1 << bit[None, None, :], 0)  # past K: 0.0 -> bit 0 (the padding)
    words = tl.reduce(bits, 2, _or)
    r2 = offs_r[:, None]
    w2 = offs_w[None, :]
    tl.store(out_ptr + r2.to(tl.int64) * KW + w2, words, mask=(r2 < R) & (w2 < KW))


@triton.jit
def _popc_swar(x):
    """Population count of int32 words, pure Triton (the interpreter's twin of ``popc.b32``)."""
    v = x.to(tl.uint32, bitcast=True)
    v = v - ((v >> 1) & 0x55555555)
    v = (v & 0x33333333) + ((v >> 2) & 0x33333333)
    v = (v + (v >> 4)) & 0x0F0F0F0F
    v = v + (v >> 8)
    v = v + (v >> 16)
    return (v & 0x3F).to(tl.int32)


@triton.jit
def _popc(x, ASM: tl.constexpr):
    """popcount(x) per int32 element: PTX ``popc.b32`` (one SASS POPC) on a GPU, else the twin."""
    if ASM:
        return tl.inline_asm_elementwise("popc.b32 $0, $1;", "=r,r", [x], dtype=tl.int32, is_pure=True, pack=1)
    else:
        return _popc_swar(x)


@triton.jit
def _xnor_mm_kernel(
    a_ptr,  # (M, KW) int32
    w_ptr,  # (N, KW) int32
    alpha_ptr,  # (N,)
    beta_ptr,  # (M,) or a dummy
    bias_ptr,  # (N,) or a dummy
    out_ptr,  # (M, N) in alpha's dtype
    M,
    N,
    K,
    KW,
    M_BUCKET,  # autotune key only
    HAS_BETA: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_KW: tl.constexpr,
    GROUP_M: tl.constexpr,
    ASM: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = tl.arange(0, BLOCK_KW)
    m3 = offs_m[:, None, None]
    n3 = offs_n[None, :, None]
    a_rows = a_ptr + m3.to(tl.int64) * KW
    w_rows = w_ptr + n3.to(tl.int64) * KW
    acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_KW), dtype=tl.int32)  # per-lane popcounts
    for kw0 in range(0, KW, BLOCK_KW):
        w3 = kw0 + offs_w[None, None, :]
        a = tl.load(a_rows + w3, mask=(m3 < M) & (w3 < KW), other=0)  # (BLOCK_M, 1, BLOCK_KW)
        w = tl.load(w_rows + w3, mask=(n3 < N) & (w3 < KW), other=0)  # (1, BLOCK_N, BLOCK_KW)
        acc += _popc(a ^ w, ASM)  # masked words are 0 in both: popcount 0
    pop = tl.sum(acc, axis=2)  # (BLOCK_M, BLOCK_N): the one reduction over words
    dot = (K - 2 * pop).to(tl.float32)  # the ±1 dot product, exact
    if HAS_BETA:
        dot = dot * tl.load(beta_ptr + offs_m, mask=offs_m < M, other=0.0).to(tl.float32)[:, None]
    store_output(dot, offs_m, offs_n, M, N, alpha_ptr, bias_ptr, out_ptr, N, True, HAS_BIAS, "none")


@triton.jit
def _xnor_conv2d_kernel(
    a_ptr,  # (B, H, W, CW) int32 contiguous
    w_ptr,  # (O, KH, KW_TAPS, CW) int32 contiguous
    alpha_ptr,  # (O,)
    beta_ptr,  # (B, Ho, Wo) or a dummy
    bias_ptr,
    wpop_ptr,  # (TAPS_PAD, O) fp16: popcount(w[o, tap, :]) per tap, 0 past KH·KW
    out_ptr,  # (B, Ho, Wo, O) contiguous (channels_last memory of (B, O, Ho, Wo))
    M,  # B · Ho · Wo
    N,  # O
    C,  # true channel count
    CW,
    H,
    W,
    HO,
    WO,
    STRIDE_H,
    STRIDE_W,
    PAD_H,
    PAD_W,
    M_BUCKET,  # autotune key only
    KH: tl.constexpr,
    KW_TAPS: tl.constexpr,
    TAPS_PAD: tl.constexpr,  # KH·KW rounded up to a power of two >= 16 (the tl.dot's K)
    HAS_BETA: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_CW: tl.constexpr,
    GROUP_M: tl.constexpr,
    ASM: tl.constexpr,
):
    """Rows = output pixels, columns = O; K loop: taps (outer), channel words (inner), xnor_mm's
    (BLOCK_M, BLOCK_N, BLOCK_CW) popcount tile. The window origin's word offset is computed once per
    program (a tap adds a scalar). No per-word padding mask: taps outside the image load a = 0 and
    their popcount(w) is subtracted once per tap after the loop (masking every word cost ~10x)."""
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    ox = offs_m % WO
    oy = (offs_m // WO) % HO
    b = offs_m // (WO * HO)
    iy0 = oy * STRIDE_H - PAD_H  # window origin
    ix0 = ox * STRIDE_W - PAD_W
    pix0 = ((b.to(tl.int64) * H + iy0) * W + ix0) * CW  # word offset of the window origin (may be < 0)
    a_rows = a_ptr + pix0
    n_ok = offs_n < N
    offs_c = tl.arange(0, BLOCK_CW)
    n3 = offs_n[None, :, None]
    w_rows3 = w_ptr + n3.to(tl.int64) * (KH * KW_TAPS * CW)
    # Per row: bit t of `outside` set when tap t of the window lies in the zero padding (1-D, once per program)
    outside = tl.zeros((BLOCK_M,), dtype=tl.int32)
    for t in tl.static_range(KH * KW_TAPS):
        iy = iy0 + t // KW_TAPS
        ix = ix0 + t % KW_TAPS
        out_t = (iy < 0) | (iy >= H) | (ix < 0) | (ix >= W)
        outside |= out_t.to(tl.int32) << t
    outside = tl.where(m_ok, outside, (1 << (KH * KW_TAPS)) - 1)  # rows past M: no loads
    acc = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_CW), dtype=tl.int32)  # per-lane popcounts, as in xnor_mm
    for t in range(0, KH * KW_TAPS):  # KW_TAPS constexpr: the tap's (dy, dx) is a multiply-shift
        inside3 = (((outside >> t) & 1) == 0)[:, None, None]
        a_tap = a_rows[:, None, None] + ((t // KW_TAPS) * W + t % KW_TAPS) * CW  # + the tap's scalar offset
        w_tap = w_rows3 + t * CW
        for cw0 in range(0, CW, BLOCK_CW):
            c3 = cw0 + offs_c[None, None, :]
            # outside the image a loads as 0: popcount(0 ^ w) = popcount(w), taken back out below
            a = tl.load(a_tap + c3, mask=inside3 & (c3 < CW), other=0)
            w = tl.load(w_tap + c3, mask=(n3 < N) & (c3 < CW), other=0)
            acc += _popc(a ^ w, ASM)
    pop = tl.sum(acc, axis=2)
    taps_in = KH * KW_TAPS - _popc(outside, ASM)
    # Zero padding contributes 0: rows whose tap t lies outside took popcount(w[n, t, :]) into acc. Remove it
    # with one small exact product on the tensor cores: outside bits (BLOCK_M, TAPS_PAD) x w_pop (TAPS_PAD, N)
    # (fp16 holds popcounts <= 2048 exactly; fp32 accumulation of <= 9·C stays exact).
    tap_ids = tl.arange(0, TAPS_PAD)
    bits = ((outside[:, None] >> tap_ids[None, :]) & 1).to(tl.float16)
    w_pop = tl.load(wpop_ptr + tap_ids[:, None] * N + offs_n[None, :], mask=n_ok[None, :], other=0.0)
    pop -= tl.dot(bits, w_pop, out_dtype=tl.float32).to(tl.int32)
    dot = (C * taps_in[:, None] - 2 * pop).to(tl.float32)
    if HAS_BETA:
        dot = dot * tl.load(beta_ptr + offs_m, mask=m_ok, other=0.0).to(tl.float32)[:, None]
    store_output(dot, offs_m, offs_n, M, N, alpha_ptr, bias_ptr, out_ptr, N, True, HAS_BIAS, "none")


_xnor_gemv = triton.autotune(configs=autotune_configs(GEMV_CONFIG_LIST), key=_MM_KEY)(_xnor_mm_kernel)
_xnor_gemm = triton.autotune(configs=autotune_configs(GEMM_CONFIG_LIST), key=_MM_KEY)(_xnor_mm_kernel)
_xnor_conv = triton.autotune(configs=autotune_configs(CONV_CONFIG_LIST), key=_CONV_KEY)(_xnor_conv2d_kernel)


# ----------------------------------------------------------------------------- checks


def words_for(k: int) -> int:
    """int32 words holding K sign bits."""
    return -(-k // WORD_BITS)


def _check_k(k: object, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{name}: expected an int (the unpacked length), got {type(k).__name__} {k!r}")
    if not 1 <= k <= MAX_K:
        raise ValueError(f"{name}: expected 1 <= {name} <= {MAX_K} (exact in the fp32 epilogue), got {k}")
    return k


def _check_words(t: torch.Tensor, name: str, ndim: int) -> torch.Tensor:
    return check_tensor(t, name, ndim=ndim, dtype=torch.int32, contiguous=True)


def _check_kw(words: int, k: int, name: str, what: str = "k") -> None:
    if words != words_for(k):
        raise ValueError(
            f"{name}: expected ceil({what} / 32) = {words_for(k)} packed words for {what} = {k}, got {words}"
        )


def _check_epilogue(alpha, beta, bias, n: int, beta_shape: tuple) -> None:
    check_tensor(alpha, "alpha", shape=(n,), dtype=KERNEL_DTYPES, contiguous=True)
    if beta is not None:
        check_tensor(beta, "beta", shape=beta_shape, dtype=KERNEL_DTYPES, contiguous=True)
    if bias is not None:
        check_tensor(bias, "bias", shape=(n,), dtype=KERNEL_DTYPES, contiguous=True)


def _check_pack_signs(x: torch.Tensor) -> None:
    check_tensor(x, "x", dtype=(*KERNEL_DTYPES, torch.float64))
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"x: expected a (*, K) tensor with K >= 1 to pack, got shape {tuple(x.shape)}")


def _check_xnor_mm(
    a_bits: torch.Tensor,
    w_bits: torch.Tensor,
    k: int,
    alpha: torch.Tensor,
    beta: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
) -> None:
    _check_words(a_bits, "a_bits", 2)
    _check_words(w_bits, "w_bits", 2)
    k = _check_k(k)
    _check_kw(a_bits.shape[1], k, "a_bits")
    _check_kw(w_bits.shape[1], k, "w_bits")
    _check_epilogue(alpha, beta, bias, w_bits.shape[0], (a_bits.shape[0],))
    check_same_device(a_bits=a_bits, w_bits=w_bits, alpha=alpha, beta=beta, bias=bias)


def _conv_geometry(a_bits, w_bits, stride, padding) -> tuple[int, int]:
    """(Ho, Wo) of the convolution; checks stride / padding."""
    for value, name, low in ((stride, "stride", 1), (padding, "padding", 0)):
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value)):
            raise TypeError(f"{name}: expected a list of 2 ints (height, width), got {value!r}")
        if min(value) < low:
            raise ValueError(f"{name}: expected values >= {low}, got {list(value)}")
    _, h, w, _ = a_bits.shape
    _, kh, kw, _ = w_bits.shape
    ho = (h + 2 * padding[0] - kh) // stride[0] + 1
    wo = (w + 2 * padding[1] - kw) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(
            f"w_bits: expected a {kh}x{kw} kernel that fits the padded {h}x{w} input (padding {list(padding)}), "
            f"got an empty output {ho}x{wo}"
        )
    return ho, wo


def _check_xnor_conv2d(
    a_bits: torch.Tensor,
    w_bits: torch.Tensor,
    channels: int,
    stride: list[int],
    padding: list[int],
    alpha: torch.Tensor,
    beta: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
) -> None:
    _check_words(a_bits, "a_bits", 4)
    _check_words(w_bits, "w_bits", 4)
    channels = _check_k(channels, "channels")
    _check_kw(a_bits.shape[3], channels, "a_bits", "channels")
    _check_kw(w_bits.shape[3], channels, "w_bits", "channels")
    if w_bits.shape[1] * w_bits.shape[2] > MAX_TAPS:
        raise ValueError(
            f"w_bits: expected kh * kw <= {MAX_TAPS} taps (one bit per tap in the kernel's padding mask), "
            f"got shape {tuple(w_bits.shape)}"
        )
    if channels * w_bits.shape[1] * w_bits.shape[2] > MAX_K:
        raise ValueError(f"w_bits: expected channels * kh * kw <= {MAX_K}, got shape {tuple(w_bits.shape)}")
    ho, wo = _conv_geometry(a_bits, w_bits, stride, padding)
    _check_epilogue(alpha, beta, bias, w_bits.shape[0], (a_bits.shape[0], ho, wo))
    check_same_device(a_bits=a_bits, w_bits=w_bits, alpha=alpha, beta=beta, bias=bias)


# ----------------------------------------------------------------------------- launchers


@kernel_op("slimtorch::pack_signs", reference="pack_signs_reference", check=_check_pack_signs)
def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """x (*, K) float → (*, ceil(K / 32)) int32 sign bits (module doc: bit 1 ⇔ x < 0, padding 0)."""
    k = x.shape[-1]
    kw = words_for(k)
    rows = x.reshape(-1, k)
    r = rows.shape[0]
    out = empty_output((r, kw), dtype=torch.int32, device=x.device)
    if r:
        grid = (triton.cdiv(r, PACK_BLOCK_R), triton.cdiv(kw, PACK_BLOCK_W))
        _pack_signs_kernel[grid](
            rows, out, r, k, kw, rows.stride(0), rows.stride(1), BLOCK_R=PACK_BLOCK_R, BLOCK_W=PACK_BLOCK_W, num_warps=4
        )
    return out.reshape(*x.shape[:-1], kw)


_BYTE_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int32)


def popcount_words(words: torch.Tensor) -> torch.Tensor:
    """popcount of every int32 word, in torch (a byte table): (*) int32 → (*) int32."""
    table = _BYTE_POPCOUNT.to(words.device)
    return table[words.contiguous().view(torch.uint8).long()].reshape(*words.shape, 4).sum(-1, dtype=torch.int32)


def unpack_signs(words: torch.Tensor, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inverse of :func:`pack_signs`: (*, KW) int32 → (*, k) ±1 in ``dtype`` (exact)."""
    check_tensor(words, "words", ndim=tuple(range(1, 9)), dtype=torch.int32)
    k = _check_k(k)
    _check_kw(words.shape[-1], k, "words")
    codes = unpack_bits(words.reshape(-1, words.shape[-1]), 1, k)
    return (1 - 2 * codes).to(dtype).reshape(*words.shape[:-1], k)


def pack_weight_signs(weight: torch.Tensor) -> torch.Tensor:
    """A Linear weight (N, K) → w_bits (N, KW); a Conv2d weight (O, C, kh, kw) → (O, kh, kw, CW),
    the layouts :func:`xnor_mm` / :func:`xnor_conv2d` read."""
    check_tensor(weight, "weight", ndim=(2, 4))
    if weight.dim() == 4:
        return pack_signs(weight.permute(0, 2, 3, 1).contiguous())
    return pack_signs(weight.contiguous())


@kernel_op("slimtorch::xnor_mm", reference="xnor_mm_reference", check=_check_xnor_mm)
def xnor_mm(
    a_bits: torch.Tensor,
    w_bits: torch.Tensor,
    k: int,
    alpha: torch.Tensor,
    beta: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """(K − 2·popcount(a[m] XOR w[n])) · α[n] (· β[m]) (+ bias[n]) → (M, N) in α's dtype."""
    m, kw = a_bits.shape
    n = w_bits.shape[0]
    out = empty_output((m, n), dtype=alpha.dtype, device=a_bits.device)
    if m == 0 or n == 0:
        return out
    kernel = _xnor_gemv if m <= GEMV_MAX_M else _xnor_gemm
    extra = {"BLOCK_M": triton.next_power_of_2(m)} if m <= GEMV_MAX_M else {}

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    dummy = alpha
    kernel[grid](
        a_bits, w_bits, alpha, dummy if beta is None else beta, dummy if bias is None else bias, out,
        m, n, k, kw, m_bucket(m), HAS_BETA=beta is not None, HAS_BIAS=bias is not None,
        ASM=a_bits.device.type == "cuda", **extra,
    )  # fmt: skip
    return out


@kernel_op("slimtorch::xnor_conv2d", reference="xnor_conv2d_reference", check=_check_xnor_conv2d)
def xnor_conv2d(
    a_bits: torch.Tensor,
    w_bits: torch.Tensor,
    channels: int,
    stride: list[int],
    padding: list[int],
    alpha: torch.Tensor,
    beta: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Binary conv2d on packed NHWC signs → (B, O, Ho, Wo) in α's dtype, channels_last memory."""
    bsz, h, w, cw = a_bits.shape
    o, kh, kw, _ = w_bits.shape
    ho, wo = _conv_geometry(a_bits, w_bits, stride, padding)
    out = empty_output((bsz, ho, wo, o), dtype=alpha.dtype, device=a_bits.device)
    m = bsz * ho * wo
    if m and o:

        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(o, meta["BLOCK_N"]),)

        taps_pad = max(16, triton.next_power_of_2(kh * kw))
        wpop = torch.zeros(taps_pad, o, dtype=torch.float16, device=a_bits.device)
        wpop[: kh * kw] = popcount_words(w_bits).sum(-1).reshape(o, kh * kw).t()
        _xnor_conv[grid](
            a_bits, w_bits, alpha, alpha if beta is None else beta, alpha if bias is None else bias, wpop, out,
            m, o, channels, cw, h, w, ho, wo, stride[0], stride[1], padding[0], padding[1], m_bucket(m),
            KH=kh, KW_TAPS=kw, TAPS_PAD=taps_pad,
            HAS_BETA=beta is not None, HAS_BIAS=bias is not None, ASM=a_bits.device.type == "cuda",
        )  # fmt: skip
    return out.permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- references


def pack_signs_reference(x: torch.Tensor) -> torch.Tensor:
    k = x.shape[-1]
    words = pack_bits((x.reshape(-1, k) < 0).to(torch.int64), 1)
    return words.reshape(*x.shape[:-1], words.shape[-1])


def _epilogue_reference(dot, alpha, beta, bias, beta_shape):
    """dot · α (· β) (+ bias) in float64 (dot holds exact integers), cast to α's dtype."""
    y = dot * alpha.double()
    if beta is not None:
        y = y * beta.double().reshape(beta_shape)
    if bias is not None:
        y = y + bias.double()
    return y.to(alpha.dtype)


def xnor_mm_reference(
    a_bits: torch.Tensor,
    w_bits: torch.Tensor,
    k: int,
    alpha: torch.Tensor,
    beta: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The float ±1 matmul: unpack both operands, multiply in float64 (exact integers)."""
    a = unpack_signs(a_bits, k, torch.float64)
    w = unpack_signs(w_bits, k, torch.float64)
    return _epilogue_reference(a @ w.T, alpha, beta, bias, (-1, 1))


def xnor_conv2d_reference(
    a_bits: torch.Tensor,
    w_bits: torch.Tensor,
    channels: int,
    stride: list[int],
    padding: list[int],
    alpha: torch.Tensor,
    beta: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``F.conv2d`` of the unpacked ±1 tensors with zero padding, in float64 (exact integers)."""
    a = unpack_signs(a_bits, channels, torch.float64).permute(0, 3, 1, 2)
    w = unpack_signs(w_bits, channels, torch.float64).permute(0, 3, 1, 2)
    dot = F.conv2d(a, w, stride=tuple(stride), padding=tuple(padding))
    bsz, _, ho, wo = dot.shape
    y = _epilogue_reference(
        dot, alpha[:, None, None], beta, None if bias is None else bias[:, None, None], (bsz, 1, ho, wo)
    )
    return y.contiguous(memory_format=torch.channels_last)

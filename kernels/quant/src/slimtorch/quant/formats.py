"""Quantized weight formats: quantizers, bit packing, dequantization, GPTQ import/export.

Pure torch and exact: every ``dequantize_*`` inverts its packing bit for bit, and the kernels
(``*_mm.py``) are tested against "dequantize exactly, then matmul". Notation: a weight ``W``
``(N, K)`` as ``nn.Linear`` stores it (N outputs, K inputs), activations ``x (M, K)``,
``y = x Wᵀ``. Quantizers compute their statistics in float32 (binary/ternary/codebook in
float64), reject NaN/Inf weights (``ValueError`` naming the tensor) and round half to even.

int8 (weight-only and W8A8): ``qweight (N, K) int8`` in [-127, 127], ``scale (N,) float32``.
    s_n = max_k |W[n, k]| / 127 (an all-zero row gets s_n = 1), q = clamp(round(W / s_n), -127, 127),
    W ≈ q · s_n. The same layout as ``torch._weight_int8pack_mm`` and K-major for int8 tensor cores.

Packed codes (int4, binary, ternary, codebook): ``qweight (ceil(K / P), N) int32``, P = 32 / bits.
    The code of W[n, k] sits in word ``qweight[k // P, n]`` at bits ``[(k % P)·bits, (k % P + 1)·bits)``
    (lowest bits first): rows along K, N contiguous, so a kernel's (BLOCK_K, BLOCK_N) tile of Wᵀ is
    (BLOCK_K / P, BLOCK_N) words loaded coalesced along N. With bits = 4 this is exactly GPTQ's
    ``qweight``. When K % P != 0 the last row is padded with code 0 (kernels multiply the padding by
    zero-masked activations; ``unpack_codes`` drops it).

int4, group-wise asymmetric (G ∈ {32, 64, 128} along K): ``qweight (K/8, N) int32``,
    ``scale (K/G, N)`` (float16 by default, like GPTQ), ``zero (K/G, N) uint8``. Per group g and
    column n: lo = min(min w, 0), hi = max(max w, 0) (the range always holds 0, so 0 is exact),
    scale = (hi − lo) / 15 rounded to the stored dtype (an all-zero group gets scale 1; a scale
    below the dtype's smallest normal is raised to it), zero = round(−lo / scale) ∈ [0, 15],
    q = clamp(round(w / scale) + zero, 0, 15), W ≈ (q − zero) · scale. ``zero`` may be 16 after a
    GPTQ v1 import (see below).
    K padding: when G does not divide K, W is padded with zero columns to K_pad = ceil(K / G) · G
    (:func:`padded_k`), so every layout above uses K_pad: ``qweight (K_pad/8, N)``, ``scale, zero
    (K_pad/G, N)``. The padded columns hold exact zeros (the range holds 0, so q = zero there) and x
    keeps its true K: the kernel masks k ≥ K (x loads as 0 there) and the reference drops the padded
    columns (``dequantize_int4(..., k=K)``). ShuffleNetV2's K = 58, 116, 232 convert this way.

GPTQ (AutoGPTQ/GPTQModel 4-bit checkpoints): ``qweight (K/8, N) int32`` (the layout above),
    ``qzeros (K/G, N/8) int32`` packing 8 consecutive columns per word (column 8c+j at bits 4j),
    ``scales (K/G, N) float16``, ``g_idx (K,) int32``. ``version="v1"`` (``checkpoint_format="gptq"``,
    what most published checkpoints use) stores zero − 1 in the 4 bits, so zero = stored + 1 ∈ [1, 16]
    and zero = 0 cannot be exported; ``version="v2"`` stores zero itself. ``g_idx`` must be the
    identity grouping ``k // G``: act-order (desc_act) checkpoints raise ``ValueError``. Only 4-bit.

Binary (BWN / XNOR-Net weights): 1 bit per weight, bit 1 ↔ +1, bit 0 ↔ −1 (sign(0) = +1),
    α_n = mean_k |W[n, k]|, W ≈ α_n · sign(W). Stored as ``pos_scale = neg_scale = α``.

Ternary, 2 bits per weight, two's complement codes (0 ↔ 0, 1 ↔ +1, 3 ↔ −1; 2 unused), value
    t·pos_scale_n for t = +1 and t·neg_scale_n for t = −1:
    TWN (symmetric): Δ_n = 0.7 · mean|W_n|, t = sign(w)·[|w| > Δ_n], α_n = mean of |w| over |w| > Δ_n
    (0 if none), pos = neg = α. Asymmetric (TTQ-style values {−a_n, 0, +a_p}): the same codes,
    pos_n = mean of w over w > Δ_n, neg_n = mean of −w over w < −Δ_n.

Codebook (Deep Compression weight sharing): 2^b centroids per layer (b = 2..8) by 1-D k-means
    with linear initialisation (evenly spaced between min and max), a fixed iteration count, no
    randomness; an empty cluster keeps its previous centroid. Indices are packed with
    ``storage_bits(b)``: the next power of two (3 → 4; 5, 6, 7 → 8), so no code straddles a word.
    ``codebook (2^b,) float32``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from slimtorch.core.checks import check_choice, check_finite, check_tensor
from slimtorch.core.packing import pack_bits, unpack_bits, words_for

INT8_MAX = 127
INT4_MAX = 15
INT4_GROUP_SIZES: tuple[int, ...] = (32, 64, 128)
CODEBOOK_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
TWN_THRESHOLD = 0.7  # Δ = 0.7 · mean|w| (Li & Liu, Ternary Weight Networks, 2016)
KMEANS_ITERATIONS = 100  # Lloyd from linear init converges slowly at 4+ bits; each step is O(2^b log n)
GPTQ_VERSIONS: tuple[str, ...] = ("v1", "v2")


class Int8Weight(NamedTuple):
    qweight: torch.Tensor  # (N, K) int8
    scale: torch.Tensor  # (N,) float32


class Int4Weight(NamedTuple):
    qweight: torch.Tensor  # (K/8, N) int32
    scale: torch.Tensor  # (K/G, N) float
    zero: torch.Tensor  # (K/G, N) uint8
    group_size: int


class LowBitWeight(NamedTuple):
    """Binary (bits = 1) or ternary (bits = 2) codes with per-channel positive/negative values."""

    qweight: torch.Tensor  # (ceil(K/P), N) int32
    pos_scale: torch.Tensor  # (N,) float32
    neg_scale: torch.Tensor  # (N,) float32
    bits: int


class CodebookWeight(NamedTuple):
    qweight: torch.Tensor  # (ceil(K/P), N) int32, P = 32 / storage_bits(bits)
    codebook: torch.Tensor  # (2^bits,) float32
    bits: int


FLOAT32_MAX = torch.finfo(torch.float32).max


def _check_weight(weight: torch.Tensor, name: str = "weight") -> torch.Tensor:
    """2-d float, finite, and (float64) inside float32's range: the statistics, scales and codebooks
    are float32, so a larger magnitude would quantize to inf/NaN instead of failing."""
    check_tensor(weight, name, ndim=2, dtype=(torch.float16, torch.bfloat16, torch.float32, torch.float64))
    check_finite(weight, name)
    if weight.dtype == torch.float64 and weight.numel():
        amax = float(weight.abs().max())
        if amax > FLOAT32_MAX:
            raise ValueError(
                f"{name}: expected magnitudes within float32's range (|w| <= {FLOAT32_MAX:.4e}, the dtype of the "
                f"scales), got max |w| = {amax:.4e}"
            )
    return weight


# ----------------------------------------------------------------------------- rounding, packing


def round_half_even(x: torch.Tensor) -> torch.Tensor:
    """torch.round rounds half to even; named so the convention is explicit where it matters."""
    return torch.round(x)


def words_per_column(k: int, bits: int) -> int:
    """Rows of int32 words holding K codes of ``bits`` bits."""
    return words_for(k, bits)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(N, K) integer codes in [0, 2^bits) → (ceil(K / P), N) int32 words, P = 32 / bits: the
    packing of :mod:`slimtorch.core.packing`, words along columns (see module doc)."""
    return pack_bits(codes, bits).t().contiguous()


def unpack_codes(qweight: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: (ceil(K / P), N) int32 → (N, K) int64 codes."""
    return unpack_bits(qweight.t(), bits, k)


# ----------------------------------------------------------------------------- int8


def quantize_int8(weight: torch.Tensor) -> Int8Weight:
    """Symmetric per-output-channel int8 (see module doc)."""
    w = _check_weight(weight).float()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))
    q = round_half_even(w / scale[:, None]).clamp(-INT8_MAX, INT8_MAX)
    return Int8Weight(q.to(torch.int8), scale)


def dequantize_int8(qweight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q · s_n as (N, K) ``dtype`` (exact in float32/float64 for float32 scales)."""
    return qweight.to(dtype) * scale.to(dtype)[:, None]


# ----------------------------------------------------------------------------- int4


def check_group_size(k: int, group_size: int, name: str = "group_size") -> None:
    """G must be a positive multiple of 8 (whole packed words per group); K a positive count (G need
    not divide it: the layout pads K to :func:`padded_k`)."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0 or group_size % 8:
        raise ValueError(f"{name}: expected a positive multiple of 8, got {group_size!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"in_features (K): expected a positive int, got {k!r}")


def padded_k(k: int, group_size: int) -> int:
    """K_pad = ceil(K / G) · G: the K of the packed int4 layout (zero weights in columns K..K_pad)."""
    return -(-k // group_size) * group_size


def check_padded_k(k: int, k_pad: int, group_size: int, name: str = "qweight") -> None:
    """``k_pad`` (K_pad of a stored layout) must be x's K rounded up to the group size."""
    if padded_k(k, group_size) != k_pad:
        raise ValueError(
            f"{name}: expected K_pad = ceil(K / group_size) · group_size = {padded_k(k, group_size)} packed "
            f"columns for K = {k} (in_features) and group_size = {group_size}, got {k_pad}"
        )


def quantize_int4(weight: torch.Tensor, group_size: int = 128, scale_dtype: torch.dtype = torch.float16) -> Int4Weight:
    """Group-wise asymmetric int4 with the range forced to contain zero (see module doc)."""
    w = _check_weight(weight).float()
    check_choice(group_size, "group_size", INT4_GROUP_SIZES)
    n, k = w.shape
    check_group_size(k, group_size)
    check_choice(scale_dtype, "scale_dtype", (torch.float16, torch.bfloat16, torch.float32))
    k = padded_k(k, group_size)
    w = torch.nn.functional.pad(w, (0, k - w.shape[1]))  # zero columns K..K_pad (exact: q = zero there)
    groups = w.reshape(n, k // group_size, group_size)
    lo = groups.amin(-1).clamp(max=0.0)
    hi = groups.amax(-1).clamp(min=0.0)
    scale = (hi - lo) / INT4_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all-zero group: any scale is exact
    scale = scale.clamp(min=torch.finfo(scale_dtype).tiny).to(scale_dtype)
    if not bool(torch.isfinite(scale).all()):
        raise ValueError(f"weight: a group's range overflows {scale_dtype} scales; use scale_dtype=torch.float32")
    s = scale.float()
    zero = round_half_even(-lo / s).clamp(0, INT4_MAX)
    q = (round_half_even(groups / s[..., None]) + zero[..., None]).clamp(0, INT4_MAX)
    qweight = pack_codes(q.reshape(n, k).to(torch.int64), 4)
    return Int4Weight(qweight, scale.t().contiguous(), zero.to(torch.uint8).t().contiguous(), group_size)


def dequantize_int4(
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    dtype: torch.dtype = torch.float32,
    *,
    k: int | None = None,
) -> torch.Tensor:
    """(q − zero) · scale as (N, K) ``dtype`` (exact in float32 for float16/bfloat16 scales).
    ``k``: the true K of a padded layout (the columns past it are dropped); default K_pad."""
    k_pad = qweight.shape[0] * 8
    if k is not None:
        check_padded_k(k, k_pad, group_size)
    codes = unpack_codes(qweight, 4, k_pad)  # (N, K_pad)
    zero_nk = zero.t().to(torch.int64).repeat_interleave(group_size, dim=1)
    scale_nk = scale.t().to(dtype).repeat_interleave(group_size, dim=1)
    return ((codes - zero_nk).to(dtype) * scale_nk)[:, : k_pad if k is None else k]


def to_gptq(packed: Int4Weight, version: str = "v1") -> dict[str, torch.Tensor]:
    """Our int4 → GPTQ tensors ``qweight, qzeros, scales (float16), g_idx`` (see module doc)."""
    check_choice(version, "version", GPTQ_VERSIONS)
    qweight, scale, zero, group_size = packed
    n = qweight.shape[1]
    if n % 8:
        raise ValueError(f"out_features (N): GPTQ packs 8 zero points per int32, expected a multiple of 8, got {n}")
    stored = zero.to(torch.int64) - (1 if version == "v1" else 0)
    if bool((stored < 0).any()):
        raise ValueError("zero: the GPTQ v1 format stores zero − 1 and cannot hold a zero point of 0; use version='v2'")
    if bool((stored > INT4_MAX).any()):
        raise ValueError(f"zero: a zero point of 16 does not fit GPTQ {version}'s 4 bits; use version='v1'")
    k = qweight.shape[0] * 8
    return {
        "qweight": qweight.clone(),
        "qzeros": pack_codes(stored, 4).t().contiguous(),  # pack along N, then back to (K/G, N/8)
        "scales": scale.to(torch.float16).contiguous(),
        "g_idx": torch.arange(k, dtype=torch.int32, device=qweight.device) // group_size,
    }


def from_gptq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor | None = None,
    version: str = "v1",
) -> Int4Weight:
    """GPTQ 4-bit tensors → our int4 (exact; ``qweight`` is shared layout, zeros are unpacked)."""
    check_choice(version, "version", GPTQ_VERSIONS)
    check_tensor(qweight, "qweight", ndim=2, dtype=torch.int32)
    rows, n = qweight.shape
    k = rows * 8
    check_tensor(scales, "scales", ndim=2, dtype=(torch.float16, torch.bfloat16, torch.float32))
    num_groups = scales.shape[0]
    if num_groups == 0 or k % num_groups:
        raise ValueError(
            f"scales: expected (K/G, N) with K={k} a multiple of the group count, got {tuple(scales.shape)}"
        )
    group_size = k // num_groups
    check_group_size(k, group_size)
    dims = {"N": n}
    check_tensor(scales, "scales", shape=(num_groups, "N"), dims=dims)
    check_tensor(qzeros, "qzeros", shape=(num_groups, math.ceil(n / 8)), dtype=torch.int32)
    if g_idx is not None:
        check_tensor(g_idx, "g_idx", shape=(k,))
        identity = torch.arange(k, device=g_idx.device) // group_size
        if not torch.equal(g_idx.to(torch.int64), identity):
            raise ValueError(
                "g_idx: act-order (desc_act) grouping is not supported; expected g_idx[k] = k // group_size"
            )
    zero = unpack_codes(qzeros.t(), 4, n) + (1 if version == "v1" else 0)  # (K/G, N)
    return Int4Weight(qweight.clone(), scales.clone(), zero.to(torch.uint8).contiguous(), group_size)


# ----------------------------------------------------------------------------- binary / ternary


def _lowbit_values(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes → t ∈ {−1, 0, +1}: 1-bit 2c − 1; 2-bit two's complement sign extension (c ^ 2) − 2."""
    return 2 * codes - 1 if bits == 1 else (codes ^ 2) - 2


def quantize_binary(weight: torch.Tensor) -> LowBitWeight:
    """BWN: sign bits (sign(0) = +1) and α_n = mean|W_n| (see module doc)."""
    w = _check_weight(weight).double()
    alpha = w.abs().mean(dim=1).float()
    qweight = pack_codes((w >= 0).to(torch.int64), 1)
    return LowBitWeight(qweight, alpha, alpha.clone(), 1)


def ternary_codes(weight: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """t = sign(w) · [|w| > threshold] as int64 (N, K); ``threshold`` broadcasts against ``weight``."""
    return torch.sign(weight).to(torch.int64) * (weight.abs() > threshold)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def ternary_scales(weight: torch.Tensor, t: torch.Tensor, asymmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The least-squares values for fixed codes t: mean |w| over t ≠ 0 (symmetric) or the means of w
    over t = +1 and of −w over t = −1 (asymmetric); 0 where a set is empty. float32 (N,) each."""
    w = weight.double()
    if asymmetric:
        return _masked_mean(w, t > 0).float(), _masked_mean(-w, t < 0).float()
    alpha = _masked_mean(w.abs(), t != 0).float()
    return alpha, alpha.clone()


def quantize_ternary(
    weight: torch.Tensor, asymmetric: bool = False, threshold_ratio: float = TWN_THRESHOLD
) -> LowBitWeight:
    """TWN ternary codes (Δ_n = ratio · mean|W_n|) with symmetric or asymmetric values."""
    w = _check_weight(weight).double()
    delta = threshold_ratio * w.abs().mean(dim=1, keepdim=True)
    t = ternary_codes(w, delta)
    pos, neg = ternary_scales(w, t, asymmetric)
    return LowBitWeight(pack_ternary(t), pos, neg, 2)


def pack_ternary(t: torch.Tensor) -> torch.Tensor:
    """t ∈ {−1, 0, +1} (N, K) → 2-bit two's complement codes packed (ceil(K/16), N) int32."""
    if t.numel() and not bool(((t >= -1) & (t <= 1)).all()):
        raise ValueError("t: expected ternary values in {-1, 0, 1}")
    return pack_codes(t.to(torch.int64) & 3, 2)


def dequantize_lowbit(
    qweight: torch.Tensor,
    pos_scale: torch.Tensor,
    neg_scale: torch.Tensor,
    bits: int,
    k: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """t · pos_n for t = +1, t · neg_n for t = −1, 0 for t = 0, as (N, K) ``dtype``."""
    t = _lowbit_values(unpack_codes(qweight, bits, k), bits)
    pos, neg = pos_scale.to(dtype)[:, None], neg_scale.to(dtype)[:, None]
    return torch.where(t > 0, pos, torch.where(t < 0, -neg, torch.zeros((), dtype=dtype, device=qweight.device)))


# ----------------------------------------------------------------------------- codebook


def packed_width(bits: int) -> int:
    """Bits a ``bits``-bit code occupies in the packed int32 words: the next power of two (1, 2, 4,
    8, ...), so that no code straddles a word (every packed format of this package)."""
    return 1 << (bits - 1).bit_length()


def storage_bits(bits: int) -> int:
    """Bits each codebook index occupies in the packed words: 2, 4 or 8."""
    check_choice(bits, "bits", CODEBOOK_BITS)
    return packed_width(bits)


def _midpoints(centroids: torch.Tensor) -> torch.Tensor:
    return (centroids[1:] + centroids[:-1]) / 2


def kmeans_1d(
    values: torch.Tensor, bits: int, iterations: int = KMEANS_ITERATIONS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on scalars, 2^bits centroids, linear initialisation, deterministic.

    The values are sorted once; clusters of sorted centroids are then contiguous ranges found by
    ``searchsorted`` on the midpoints, and their sums come from a float64 prefix sum (no atomics,
    the same answer on any device). A value on a midpoint joins the upper cluster. Returns
    (centroids (2^bits,) float64 ascending, codes (same shape as ``values``) int64).
    """
    if iterations < 0:
        raise ValueError(f"iterations: expected a non-negative count, got {iterations}")
    flat = values.reshape(-1).double()
    ordered = flat.sort().values
    prefix = torch.cat([ordered.new_zeros(1), ordered.cumsum(0)])
    size = torch.tensor([ordered.numel()], device=ordered.device)
    centroids = torch.linspace(float(ordered[0]), float(ordered[-1]), 2**bits, dtype=torch.float64, device=flat.device)
    for _ in range(iterations):
        bounds = torch.searchsorted(ordered, _midpoints(centroids))
        starts, ends = torch.cat([bounds.new_zeros(1), bounds]), torch.cat([bounds, size])
        counts = ends - starts
        means = (prefix[ends] - prefix[starts]) / counts.clamp(min=1)
        centroids = torch.where(counts > 0, means, centroids).sort().values
    codes = torch.bucketize(flat, _midpoints(centroids), right=True)
    return centroids, codes.reshape(values.shape)


def quantize_codebook(weight: torch.Tensor, bits: int = 4, iterations: int = KMEANS_ITERATIONS) -> CodebookWeight:
    """Deep Compression weight sharing: one 2^bits-entry codebook per layer (see module doc)."""
    w = _check_weight(weight)
    packing = storage_bits(bits)
    centroids, codes = kmeans_1d(w, bits, iterations)
    return CodebookWeight(pack_codes(codes, packing), centroids.float(), bits)


def dequantize_codebook(
    qweight: torch.Tensor, codebook: torch.Tensor, bits: int, k: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """codebook[code] as (N, K) ``dtype``."""
    return codebook.to(dtype)[unpack_codes(qweight, storage_bits(bits), k)]

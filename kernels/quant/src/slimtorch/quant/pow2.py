"""Power-of-two weights (INQ: Zhou, Yao, Guo, Xu, Chen, "Incremental Network Quantization: Towards
Lossless CNNs with Low-Precision Weights", ICLR 2017): the format, its layer and its config.

The weight set of one layer, for b bits (b ∈ {3, 4, 5}; 5 is the paper's main result):

    P = {0, ±2^n2, ..., ±2^n1},  n1 = floor(log2(4s / 3)),  s = max |W|,  n2 = n1 + 1 − 2^(b−1) / 2

so L = n1 − n2 + 1 = 2^(b−2) magnitudes (2 at 3 bits, 8 at 5 bits): one bit of the b says "zero"
and b − 1 bits hold the 2^(b−1) signed powers. Rounding is the paper's Eq. 4: with α < β adjacent
non-negative members of P, a weight w becomes sign(w)·β when (α + β) / 2 ≤ |w| < 3β / 2, else 0.
For β = 2^n (n > n2) that is |w| ∈ [3·2^(n−2), 3·2^(n−1)): round to the nearest power, ties to the
larger one; the smallest power 2^n2 (α = 0) also takes [2^(n2−1), 3·2^(n2−2)); below 2^(n2−1) is 0.
n1's choice makes max |W| < 3·2^(n1−1), so nothing rounds above 2^n1. Both n1 and every rounding
decision are computed exactly from frexp (mantissa ≥ 3/4 ⟺ the upper half of the binade), never
from a floating-point log. An all-zero layer gets n1 = 0 (every code 0). The set must lie in
float32's normal range: n2 ≥ −126 and n1 ≤ 127, else ``ValueError`` (|w| below ~2^−118 or above 2^127).

Codes (S storage bits: 4 for b = 3, 4; 8 for b = 5 — packable widths, one code never straddles a
word): ``code = sign << (S − 1) | e`` with e = 0 for a zero weight and e = n1 + 1 − n ∈ [1, L] for
±2^n (e = 1 is the largest power). Packed along K like every quant format
(:func:`slimtorch.quant.formats.pack_codes`): ``qweight (ceil(K / P), N) int32``, P = 32 / S, the last
row padded with code 0, plus ``exponent (1,) int32`` = n1. W[n, k] = (−1)^sign · 2^(n1 + 1 − e).

The dequant GEMM (``pow2_mm``, FORMAT "pow2" of ``dequant_mm``) decodes 2^(1 − e) by writing
``bias + 1 − e`` into the exponent field of the activation dtype's bit pattern (one integer add),
ORs in the sign and bitcasts — no multiply, no int→float convert — and scales the fp32 accumulator
by 2^n1 (exact) in the epilogue. 2^(1 − e) ∈ [2^−7, 1] is a normal fp16 for every layer, whatever n1.

Unused codes (e > L, or sign with e = 0) are rejected when a state_dict is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from slimtorch.core.checks import check_choice
from slimtorch.quant import formats, pow2_mm
from slimtorch.quant.api import WeightConfig
from slimtorch.quant.layers import QuantizedLinear, Stored, register_linear_class

POW2_BITS: tuple[int, ...] = (3, 4, 5)
MIN_EXPONENT = -126  # float32's smallest normal exponent: n2 may not go below it
MAX_EXPONENT = 127  # float32's largest exponent: n1 may not go above it


class Pow2Weight(NamedTuple):
    qweight: torch.Tensor  # (ceil(K/P), N) int32, P = 32 / storage_bits(bits)
    exponent: torch.Tensor  # (1,) int32: n1, the largest exponent of the layer's set
    bits: int


def levels(bits: int) -> int:
    """L = n1 − n2 + 1 = 2^(b−2): how many powers of two the b-bit set holds (of each sign)."""
    check_choice(bits, "bits", POW2_BITS)
    return 2 ** (bits - 2)


def storage_bits(bits: int) -> int:
    """Bits each code occupies in the packed words: 4 for b = 3 and 4, 8 for b = 5."""
    check_choice(bits, "bits", POW2_BITS)
    return formats.packed_width(bits)


def _binade(a: torch.Tensor) -> torch.Tensor:
    """For |w| > 0: the n with 3·2^(n−2) ≤ |w| < 3·2^(n−1), i.e. floor(log2(4|w| / 3)), exactly:
    |w| = m·2^E with m ∈ [1/2, 1) gives n = E − 1 + [m ≥ 3/4]."""
    mantissa, exponent = torch.frexp(a.double())
    return exponent.to(torch.int64) - 1 + (mantissa >= 0.75).to(torch.int64)


def largest_exponent(weight: torch.Tensor) -> int:
    """n1 = floor(log2(4·max|W| / 3)) (exact; 0 for an all-zero weight)."""
    s = weight.detach().abs().max() if weight.numel() else weight.new_zeros(())
    return int(_binade(s)) if float(s) > 0 else 0


def check_exponent(n1: int, bits: int, name: str = "exponent") -> None:
    """The set {2^n2 .. 2^n1} must be normal float32 values (module doc)."""
    n2 = n1 + 1 - levels(bits)
    if isinstance(n1, bool) or not isinstance(n1, int) or n2 < MIN_EXPONENT or n1 > MAX_EXPONENT:
        raise ValueError(
            f"{name}: expected n1 in [{MIN_EXPONENT + levels(bits) - 1}, {MAX_EXPONENT}] for bits={bits} (the powers "
            f"2^n2..2^n1 must be normal float32 values), got {n1!r}"
        )


def pow2_codes(weight: torch.Tensor, n1: int, bits: int) -> torch.Tensor:
    """Eq. 4's rounding of W to the set with largest exponent ``n1``, as (N, K) int64 codes."""
    check_exponent(n1, bits, "n1")
    a = weight.detach().abs().double()
    n = _binade(torch.where(a > 0, a, torch.ones_like(a)))
    n2 = n1 + 1 - levels(bits)
    # the smallest power (α = 0) also takes [2^(n2−1), 3·2^(n2−2)), whose binade is n2 − 1
    n = torch.where((n == n2 - 1) & (a >= 2.0 ** (n2 - 1)), torch.full_like(n, n2), n)
    n = n.clamp(max=n1)  # only with a given n1 (INQ keeps the pretrained one): larger weights take 2^n1
    e = torch.where((a > 0) & (n >= n2), n1 + 1 - n, torch.zeros_like(n))
    sign = ((weight < 0) & (e > 0)).to(torch.int64)
    return sign << (storage_bits(bits) - 1) | e


def values_from_codes(codes: torch.Tensor, n1: int | torch.Tensor, bits: int, dtype=torch.float32) -> torch.Tensor:
    """(−1)^sign · 2^(n1 + 1 − e) (0 for e = 0) as ``dtype`` (exact in float32/float64)."""
    top = storage_bits(bits) - 1
    e = codes & ((1 << top) - 1)
    negative = (codes >> top) & 1
    n1 = torch.as_tensor(n1, device=codes.device).to(torch.int64).reshape(())
    magnitude = torch.ldexp(torch.ones_like(e, dtype=torch.float64), n1 + 1 - e)
    value = torch.where(e > 0, torch.where(negative > 0, -magnitude, magnitude), torch.zeros_like(magnitude))
    return value.to(dtype)


def pow2_round(weight: torch.Tensor, n1: int, bits: int) -> torch.Tensor:
    """W rounded to the b-bit set with largest exponent ``n1`` (Eq. 4), in W's dtype (exact: the
    set's members are powers of two within float32's normal range)."""
    return values_from_codes(pow2_codes(weight, n1, bits), n1, bits, weight.dtype)


def quantize_pow2(weight: torch.Tensor, bits: int = 5, n1: int | None = None) -> Pow2Weight:
    """INQ's b-bit power-of-two weights of an (N, K) weight: n1 from max|W| (or given), Eq. 4's rounding."""
    check_choice(bits, "bits", POW2_BITS)
    w = formats._check_weight(weight)
    if n1 is None:
        n1 = largest_exponent(w)
    check_exponent(n1, bits, "n1")
    codes = pow2_codes(w, n1, bits)
    exponent = torch.tensor([n1], dtype=torch.int32, device=w.device)
    return Pow2Weight(formats.pack_codes(codes, storage_bits(bits)), exponent, bits)


def dequantize_pow2(
    qweight: torch.Tensor, exponent: torch.Tensor, bits: int, k: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The (N, K) weight of packed codes and n1, as ``dtype`` (bit-exact in float32 and float64)."""
    codes = formats.unpack_codes(qweight, storage_bits(bits), k)
    return values_from_codes(codes, exponent, bits, dtype)


def unused_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Mask of codes no weight has: e > L, or the sign bit with e = 0."""
    top = storage_bits(bits) - 1
    e = codes & ((1 << top) - 1)
    return (e > levels(bits)) | ((e == 0) & ((codes >> top) & 1).bool())


# ----------------------------------------------------------------------------- layer


@register_linear_class
class Pow2Linear(QuantizedLinear):
    """INQ weights: every W[n, k] in {0, ±2^n2, ..., ±2^n1} (module doc), b bits of information,
    ``storage_bits(b)`` bits stored; x · Wᵀ by the exponent-decoding GEMM (``pow2_mm``)."""

    options_keys = ("bits",)

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, bits: int = 5, device=None, dtype=None
    ):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        check_choice(bits, "bits", POW2_BITS)
        self.bits = bits
        rows = formats.words_per_column(in_features, storage_bits(bits))
        self.register_buffer("qweight", torch.zeros(rows, out_features, dtype=torch.int32, device=device))
        self.register_buffer("exponent", torch.zeros(1, dtype=torch.int32, device=device))

    @staticmethod
    def quantize(weight: torch.Tensor, bits: int = 5) -> Pow2Weight:
        return quantize_pow2(weight, bits)

    def load_packed(self, packed: Pow2Weight) -> None:
        if packed.bits != self.bits:
            raise ValueError(f"packed: expected {self.bits}-bit power-of-two codes, got bits={packed.bits}")
        self.register_buffer("qweight", packed.qweight.contiguous())
        self.register_buffer("exponent", packed.exponent.contiguous())

    def dequantize(self) -> torch.Tensor:
        return dequantize_pow2(self.qweight, self.exponent, self.bits, self.in_features)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return pow2_mm.pow2_weight_mm(x, self.qweight, self.exponent, self.bits, self.bias)

    def stored(self) -> dict[str, Stored]:
        n, rows = self.out_features, formats.words_per_column(self.in_features, storage_bits(self.bits))
        low = MIN_EXPONENT + levels(self.bits) - 1
        return {"qweight": Stored(torch.int32, (rows, n)), "exponent": Stored(torch.int32, (1,), low, MAX_EXPONENT)}

    def _check_codes(self, state_dict: dict, prefix: str) -> None:
        qweight = state_dict.get(prefix + "qweight")
        if qweight is None:
            return
        codes = formats.unpack_codes(qweight, storage_bits(self.bits), self.in_features)
        bad = unused_codes(codes, self.bits)
        if bool(bad.any()):
            raise ValueError(
                f"{prefix}qweight: expected {self.bits}-bit power-of-two codes (sign << {storage_bits(self.bits) - 1} "
                f"| e, e <= {levels(self.bits)}, no signed zero), found the unused code {int(codes[bad][0])}"
            )


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Pow2WeightConfig(WeightConfig):
    """INQ power-of-two weights, b ∈ {3, 4, 5} bits per layer (``quantize_`` rounds each layer by
    Eq. 4; :mod:`slimtorch.quant.inq` trains a model into the set first)."""

    linear_class = Pow2Linear
    bits: int = 5

    def __post_init__(self):
        check_choice(self.bits, "bits", POW2_BITS)

    def options(self) -> dict[str, Any]:
        return {"bits": self.bits}


__all__ = [
    "POW2_BITS",
    "Pow2Linear",
    "Pow2Weight",
    "Pow2WeightConfig",
    "dequantize_pow2",
    "largest_exponent",
    "levels",
    "pow2_codes",
    "pow2_round",
    "quantize_pow2",
    "storage_bits",
]

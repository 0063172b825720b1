"""Bit packing shared by the compressed formats (2:4 metadata, int4/2-bit/1-bit/codebook codes).

A row of K integer codes of ``bits`` bits (1, 2, 4 or 8) becomes ceil(K / P) int32 words,
P = 32 / bits: code j of the row sits in word j // P at bits ``bits·(j mod P)`` (low bits
first), the last word zero-padded; words hold the 32-bit pattern as two's complement int32.
Formats that want words along columns transpose the result (slimtorch.quant's (K/P, N) layout).
"""

from __future__ import annotations

import math

import torch

from slimtorch.core.checks import check_choice, check_tensor

PACKABLE_BITS = (1, 2, 4, 8)


def words_for(k: int, bits: int) -> int:
    """int32 words holding K codes of ``bits`` bits."""
    return math.ceil(k / (32 // bits))


def to_int32_bits(words: torch.Tensor) -> torch.Tensor:
    """int64 holding 32-bit patterns -> int32 with the same bits (two's complement)."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(N, K) integer codes in [0, 2^bits) -> (N, ceil(K / P)) int32 words (module doc)."""
    check_choice(bits, "bits", PACKABLE_BITS)
    check_tensor(codes, "codes", ndim=2)
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise TypeError(f"codes: expected an integer dtype, got {str(codes.dtype).replace('torch.', '')}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 2**bits):
        raise ValueError(
            f"codes: expected values in [0, {2**bits - 1}] for bits={bits}, got [{codes.min()}, {codes.max()}]"
        )
    n, k = codes.shape
    per_word, words = 32 // bits, words_for(k, bits)
    padded = torch.zeros(n, words * per_word, dtype=torch.int64, device=codes.device)
    padded[:, :k] = codes
    shifts = torch.arange(per_word, device=codes.device, dtype=torch.int64) * bits
    packed = (padded.view(n, words, per_word) << shifts).sum(-1)  # disjoint bits: sum == or, < 2^32
    return to_int32_bits(packed)


def unpack_bits(words: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: (N, W) int32 words -> (N, k) int64 codes."""
    check_choice(bits, "bits", PACKABLE_BITS)
    n = words.shape[0]
    per_word = 32 // bits
    shifts = torch.arange(per_word, device=words.device, dtype=torch.int64) * bits
    codes = ((words.to(torch.int64) & 0xFFFFFFFF).unsqueeze(-1) >> shifts) & (2**bits - 1)
    return codes.reshape(n, -1)[:, :k]

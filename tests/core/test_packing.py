"""slimtorch.core.packing: exact round trips and the documented bit layout."""

import pytest
import torch

from slimtorch.core.packing import pack_bits, to_int32_bits, unpack_bits, words_for
from slimtorch.core.testing import assert_exact


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_round_trip_and_layout(bits):
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (5, 37), generator=gen)
    words = pack_bits(codes, bits)
    assert words.dtype == torch.int32 and words.shape == (5, words_for(37, bits))
    assert_exact(unpack_bits(words, bits, 37), codes)
    per_word = 32 // bits
    for n, j in [(0, 0), (3, 36), (4, per_word - 1)]:  # code j of row n at bits bits·(j mod P) of word j // P
        word = int(words[n, j // per_word]) & 0xFFFFFFFF
        assert (word >> (bits * (j % per_word))) & (2**bits - 1) == int(codes[n, j])


def test_high_bit_words_are_two_complement():
    assert_exact(
        to_int32_bits(torch.tensor([0, 2**31 - 1, 2**31, 2**32 - 1])),
        torch.tensor([0, 2**31 - 1, -(2**31), -1], dtype=torch.int32),
    )


def test_errors():
    with pytest.raises(ValueError, match=r"codes: expected values in \[0, 3\] for bits=2, got \[0, 4\]"):
        pack_bits(torch.tensor([[0, 4]]), 2)
    with pytest.raises(TypeError, match="codes: expected an integer dtype, got float32"):
        pack_bits(torch.zeros(1, 2), 2)
    with pytest.raises(ValueError, match=r"bits: expected one of \(1, 2, 4, 8\), got 3"):
        pack_bits(torch.zeros(1, 2, dtype=torch.int64), 3)

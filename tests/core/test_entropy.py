"""Entropy coding: exact round trips, and sizes against the entropy bound."""

import math

import numpy as np
import pytest

from slimtorch.core import entropy


def _streams():
    rng = np.random.default_rng(1234)
    skew = np.r_[0.93, np.full(31, 0.07 / 31)]  # a pruned layer's codebook indices: mostly the zero centroid
    return {
        "uniform": (rng.integers(0, 13, 50_021), 13),
        "skewed": (rng.choice(32, 70_003, p=skew), 32),
        "geometric": (np.minimum(rng.geometric(0.4, 40_009) - 1, 255), 256),
        "single": (np.full(101, 5), 7),
        "empty": (np.zeros(0, np.int64), 4),
        "short": (np.array([3, 0, 3, 1]), 4),
    }


@pytest.mark.parametrize("method", entropy.METHODS)
@pytest.mark.parametrize("name", sorted(_streams()))
def test_round_trip_is_exact(method, name):
    symbols, alphabet = _streams()[name]
    if method in ("zstd", "raw") and alphabet > 256:
        pytest.skip("byte coders take alphabets up to 256")
    enc = entropy.encode(symbols, alphabet, method)
    assert enc.payload.dtype == np.uint8 and enc.num_symbols == len(symbols)
    out = entropy.decode(enc)
    assert out.dtype == np.int32 and np.array_equal(out, symbols)


@pytest.mark.parametrize("name", ["uniform", "skewed", "geometric"])
def test_ans_is_within_one_percent_of_the_entropy_bound(name):
    symbols, alphabet = _streams()[name]
    bound = entropy.entropy_bits(symbols, alphabet) / 8
    enc = entropy.encode(symbols, alphabet, "ans")
    assert bound <= enc.payload.nbytes <= 1.01 * bound + 8  # + the final 32-bit word's slack
    huff = entropy.encode(symbols, alphabet, "huffman")
    # Huffman: at least the bound, at most one bit per symbol above it
    assert bound <= huff.payload.nbytes <= bound + len(symbols) / 8 + 8


def test_entropy_bits_by_hand():
    # counts 2, 1, 1 of 4: H = 1.5 bits/symbol
    assert math.isclose(entropy.entropy_bits(np.array([0, 0, 1, 2]), 3), 6.0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="symbols"):
        entropy.encode(np.array([0, 4]), 4)
    with pytest.raises(TypeError, match="symbols"):
        entropy.encode(np.array([0.5]), 4)
    with pytest.raises(ValueError, match="method"):
        entropy.encode(np.array([0]), 4, "lzma")
    enc = entropy.encode(np.arange(64) % 5, 5, "ans")
    with pytest.raises(ValueError, match="counts"):
        entropy.decode(entropy.Encoded("ans", enc.payload, enc.counts[:-1], enc.num_symbols, 5))
    with pytest.raises(ValueError, match="payload"):
        entropy.decode(entropy.Encoded("ans", enc.payload[:-1], enc.counts, enc.num_symbols, 5))
    z = entropy.encode(np.arange(64) % 5, 5, "zstd")
    with pytest.raises(ValueError, match="payload"):  # a frame that claims more than n symbols
        entropy.decode(entropy.Encoded("zstd", z.payload, z.counts, 10, 5))

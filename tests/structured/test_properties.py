"""Property-based checks for slimtorch.structured (hypothesis, the suite's derandomized "ci"
profile): the block-circulant (direct and FFT-domain) and hashed GEMM kernels against their
references on random small odd shapes, dtypes, strided (non-contiguous) inputs and NaN/±Inf rows
(core's policy: a non-finite x row gives an all-NaN output row on every path), with bounds derived
from K and the dtype (core.testing.rel_bound)."""

import torch
from hypothesis import event, given
from hypothesis import strategies as st

from slimtorch.core.testing import assert_rows_match, linear_map, rel_bound
from slimtorch.structured import block_circulant as bc
from slimtorch.structured.hashing import hashed_mm

DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])


def _x(m, k, dtype, seed, strided, poison):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, 2 * k, generator=g)[:, ::2] if strided else torch.randn(m, k, generator=g)
    x = x.to(dtype)
    for i, row in enumerate(poison):
        if row < m:
            x[row, (3 * row + 1) % k] = (float("nan"), float("inf"), -float("inf"))[i % 3]
    return x


def _check(out, ref, x, k, dtype, reference):
    """NaN rows, and the finite rows by the forward-error bound ‖out − ref‖ ≤ rel_bound(dtype, k) ·
    ‖|x|·|W|ᵀ‖ (robust where outputs cancel), W the reference's own matrix (``reference``: x ↦ x·Wᵀ)."""
    assert out.dtype == dtype
    weight = linear_map(reference, x.shape[1])
    event(f"{assert_rows_match(out, ref, x, rel_bound(dtype, k), weight=weight)} non-finite rows")


@given(
    m=st.integers(1, 9),
    p=st.integers(1, 3),
    q=st.integers(1, 3),
    b=st.integers(1, 13),
    path=st.sampled_from(["direct", "fft"]),
    dtype=DTYPES,
    strided=st.booleans(),
    poison=st.lists(st.integers(0, 8), max_size=2),
    seed=st.integers(0, 2**16),
)
def test_block_circulant_kernels_match_reference(m, p, q, b, path, dtype, strided, poison, seed):
    weight = torch.randn(p, q, b, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    x = _x(m, q * b, dtype, seed, strided, poison)
    if path == "direct":
        out = bc.block_circulant_direct_mm(x, weight)
        reference = lambda e: bc.block_circulant_direct_mm.get_reference()(e, weight.double())
    else:
        spectrum = bc.weight_spectrum(weight)
        out = bc.block_circulant_fft_mm(x, spectrum, b)
        reference = lambda e: bc.block_circulant_fft_mm.get_reference()(e, spectrum, b)
    ref = reference(x.double())
    # the FFT path multiplies by b-point DFT matrices: its reduction is q·b long twice over
    _check(out, ref, x, q * b * (1 if path == "direct" else 4), dtype, reference)


@given(
    m=st.integers(1, 9),
    k=st.integers(1, 40),
    n=st.integers(1, 40),
    buckets=st.integers(1, 30),
    transposed=st.booleans(),
    dtype=DTYPES,
    strided=st.booleans(),
    poison=st.lists(st.integers(0, 8), max_size=2),
    seed=st.integers(0, 2**16),
)
def test_hashed_mm_matches_reference(m, k, n, buckets, transposed, dtype, strided, poison, seed):
    weight = torch.randn(buckets, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    x = _x(m, k, dtype, seed, strided, poison)
    out = hashed_mm(x, weight, n, 5, None, transposed)
    reference = lambda e: hashed_mm.get_reference()(e, weight.double(), n, 5, None, transposed)
    _check(out, reference(x.double()), x, k, dtype, reference)


def test_ops_take_an_empty_batch():
    weight = torch.randn(2, 3, 5)
    assert bc.block_circulant_direct_mm(torch.randn(0, 15), weight).shape == (0, 10)
    assert bc.block_circulant_fft_mm(torch.randn(0, 15), bc.weight_spectrum(weight), 5).shape == (0, 10)
    assert hashed_mm(torch.randn(0, 7), torch.randn(5), 4, 5).shape == (0, 4)

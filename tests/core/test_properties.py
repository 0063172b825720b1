"""Property-based checks for slimtorch.core (hypothesis, the suite's derandomized "ci" profile):
the NaN/Inf row policy on random shapes and poison patterns, bit packing round trips, the derived
bounds (an fp32 product passes rel_bound, the same product with an fp16-rounded operand fails it),
and check_range against a direct comparison."""

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from slimtorch.core.checks import check_range
from slimtorch.core.packing import pack_bits, unpack_bits
from slimtorch.core.reference import linear_reference, nonfinite_rows_to_nan
from slimtorch.core.testing import rel_bound, rel_error

POISON = st.sampled_from([float("nan"), float("inf"), -float("inf")])


@given(
    lead=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    k=st.integers(1, 17),
    n=st.integers(1, 9),
    cells=st.lists(st.tuples(st.integers(0, 10**6), POISON), max_size=4),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
)
def test_nonfinite_rows_to_nan(lead, k, n, cells, dtype):
    x = torch.randn(*lead, k).to(dtype)
    flat = x.view(-1, k)
    for index, value in cells:
        if flat.numel():
            flat.view(-1)[index % flat.numel()] = value
    out = torch.randn(*lead, n).to(dtype)
    expected_bad = ~torch.isfinite(x).all(-1)
    before = out.clone()
    nonfinite_rows_to_nan(x, out)
    assert bool(out[expected_bad].isnan().all())
    assert torch.equal(out[~expected_bad], before[~expected_bad])


@given(m=st.integers(1, 7), k=st.integers(1, 40), n=st.integers(1, 9), cells=st.lists(st.integers(0, 400), max_size=3))
def test_linear_reference_gives_nan_rows_exactly_for_nonfinite_x_rows(m, k, n, cells):
    x, w = torch.randn(m, k), torch.randn(n, k)
    for i, cell in enumerate(cells):
        x.view(-1)[cell % x.numel()] = (float("nan"), float("inf"), -float("inf"))[i % 3]
    y = linear_reference(x, w, None)
    bad = ~torch.isfinite(x).all(-1)
    assert torch.equal(y.isnan().all(-1), bad) and bool(torch.isfinite(y[~bad]).all())


@given(
    bits=st.sampled_from([1, 2, 4, 8]),
    n=st.integers(1, 9),
    k=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_pack_bits_round_trip(bits, n, k, seed):
    codes = torch.randint(0, 2**bits, (n, k), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(unpack_bits(pack_bits(codes, bits), bits, k), codes)


@given(m=st.integers(1, 9), k=st.integers(1, 40), n=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_rel_bound_passes_fp32_and_fails_fp16_rounding(m, k, n, seed):
    assume(m * n >= 4)  # a norm over a few elements: a single value may sit on an fp16 grid point
    g = torch.Generator().manual_seed(seed)
    x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    ref = x.double() @ w.double().T
    assume(float(ref.norm()) > 1e-3)
    bound = rel_bound(torch.float32, k)
    assert rel_error(x @ w.T, ref) <= bound
    assert rel_error(x @ w.half().float().T, ref) > bound


@given(
    values=st.lists(st.integers(-300, 300), min_size=1, max_size=20),
    low=st.one_of(st.none(), st.integers(-200, 0)),
    high=st.one_of(st.none(), st.integers(0, 200)),
)
def test_check_range_agrees_with_a_direct_comparison(values, low, high):
    t = torch.tensor(values)
    inside = all((low is None or v >= low) and (high is None or v <= high) for v in values)
    if inside:
        check_range(t, "t", low=low, high=high)
    else:
        with pytest.raises(ValueError, match=r"t: expected values in \["):
            check_range(t, "t", low=low, high=high)

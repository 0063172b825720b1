"""Property-based checks for slimtorch.quant (hypothesis, the suite's derandomized "ci" profile):

- every kernel against its reference on random small odd shapes, dtypes, strided (non-contiguous)
  inputs and values, with bounds derived from K and the dtype (core.testing.rel_bound), and the
  NaN/Inf row policy on randomly poisoned rows;
- the quantizers on random magnitudes (float64 beyond float32's range included): a ValueError
  naming the weight, or finite packed tensors;
(Corrupted files of the compressed format, quantized layers in them: tests/quant/test_container.py.)
"""

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from slimtorch.core.testing import assert_gemm_close, linear_map, rel_bound
from slimtorch.quant import formats
from slimtorch.quant.codebook_mm import codebook_mm
from slimtorch.quant.int4_mm import int4_weight_mm
from slimtorch.quant.int8_mm import int8_weight_mm
from slimtorch.quant.lowbit_mm import lowbit_weight_mm
from slimtorch.quant.w8a8_mm import w8a8_linear

DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])
KERNEL_EXAMPLES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x(m: int, k: int, dtype: torch.dtype, seed: int, layout: str, poison: list[int], scale: float) -> torch.Tensor:
    """(M, K) activations in ``layout``: contiguous, every other column of a wider tensor (stride 2),
    or column-major; rows in ``poison`` get a NaN or ±Inf."""
    g = _gen(seed)
    if layout == "strided":
        x = torch.randn(m, 2 * k, generator=g)[:, ::2]
    elif layout == "column-major":
        x = torch.randn(k, m, generator=g).t()
    else:
        x = torch.randn(m, k, generator=g)
    x = (x * scale).to(dtype)
    for i, row in enumerate(poison):
        if row < m:
            x[row, (7 * row) % k] = (float("nan"), float("inf"), -float("inf"))[i % 3]
    return x


# Per format: (quantize (N, K) fp32 weight -> op arguments, op).
FORMATS = {
    "int8": (lambda w: formats.quantize_int8(w), int8_weight_mm),
    "w8a8": (lambda w: formats.quantize_int8(w), w8a8_linear),
    "int4": (lambda w: (*formats.quantize_int4(w, 32, torch.float16)[:3], 32), int4_weight_mm),
    "binary": (lambda w: (*formats.quantize_binary(w)[:3], 1), lowbit_weight_mm),
    "ternary": (lambda w: (*formats.quantize_ternary(w, asymmetric=True)[:3], 2), lowbit_weight_mm),
    "codebook": (lambda w: (*formats.quantize_codebook(w, 3, iterations=5)[:2], 3), codebook_mm),
}


@KERNEL_EXAMPLES
@given(
    kind=st.sampled_from(list(FORMATS)),
    m=st.integers(1, 9),
    k_units=st.integers(1, 40),
    n=st.integers(1, 40),
    dtype=DTYPES,
    layout=st.sampled_from(["contiguous", "strided", "column-major"]),
    poison=st.lists(st.integers(0, 8), max_size=2),
    scale=st.sampled_from([1e-3, 1.0, 30.0]),
    seed=st.integers(0, 2**16),
)
def test_kernel_matches_reference(kind, m, k_units, n, dtype, layout, poison, scale, seed):
    quantize, op = FORMATS[kind]
    # int4 (groups of 32) pads K to the group size: K in 1..72, one or two groups, mostly padded
    k = k_units + 32 * (k_units % 2) if kind == "int4" else k_units
    weight = torch.randn(n, k, generator=_gen(seed + 1)) * 0.1
    args = quantize(weight)
    x = _x(m, k, dtype, seed, layout, poison, scale)
    out = op(x, *args)
    # w8a8 quantises x: its reference must see x in x's own dtype (the same codes); others in float64.
    ref = op.get_reference()(x if kind == "w8a8" else x.double(), *args)
    bad = ~torch.isfinite(x).all(dim=1)
    event(f"{int(bad.sum())} non-finite rows")
    assert out.shape == (m, n) and out.dtype == dtype
    assert bool(out[bad].isnan().all()) and bool(ref[bad].isnan().all()), "non-finite rows give NaN rows"
    assert bool(torch.isfinite(out[~bad]).all())
    if bool((~bad).any()):  # the forward-error bound against the decoded weight: robust where outputs cancel
        decoded = linear_map(lambda e: op.get_reference()(e, *args), k)
        expected = ref[~bad].to(out.dtype if kind == "w8a8" else ref.dtype)
        assert_gemm_close(out[~bad], expected, x[~bad], decoded, rel_bound(dtype, k))


@given(
    kind=st.sampled_from(["int8", "int4", "binary", "ternary", "codebook"]),
    exponent=st.integers(-40, 45),
    n=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_quantizers_raise_or_give_finite_tensors(kind, exponent, n, seed):
    weight = torch.randn(n, 32, generator=_gen(seed), dtype=torch.float64) * 10.0**exponent
    quantize = {
        "int8": formats.quantize_int8,
        "int4": lambda w: formats.quantize_int4(w, 32, torch.float32),
        "binary": formats.quantize_binary,
        "ternary": formats.quantize_ternary,
        "codebook": lambda w: formats.quantize_codebook(w, 2, iterations=3),
    }[kind]
    try:
        packed = quantize(weight)
    except ValueError as error:
        event("ValueError naming the weight")
        assert str(error).startswith("weight: "), error
        assert "float32's range" in str(error) or "overflows" in str(error), error
        return
    event("finite packed tensors")
    for t in packed:
        if isinstance(t, torch.Tensor) and t.dtype.is_floating_point:
            assert bool(torch.isfinite(t).all()), f"{kind}: non-finite packed values for max |w| {weight.abs().max()}"

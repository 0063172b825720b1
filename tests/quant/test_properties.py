"""Property-based checks for slimtorch.quant (hypothesis, the suite's derandomized "ci" profile):

- every kernel against its reference on random small odd shapes, dtypes, strided (non-contiguous)
  inputs and values, with bounds derived from K and the dtype (core.testing.rel_bound), and the
  NaN/Inf row policy on randomly poisoned rows;
- the quantizers on random magnitudes (float64 beyond float32's range included): a ValueError
  naming the weight, or finite packed tensors;
- load_quantized on random corruptions of a valid file (truncation, byte flips, a tensor stored in
  another dtype, a missing or an extra key): a ValueError/TypeError naming the path, or a load that
  holds exactly what the file holds. Never another exception, never a crash.
"""

import json

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

from slimtorch.core.testing import assert_exact, assert_rel_close, rel_bound
from slimtorch.quant import Int4WeightOnlyConfig, TernaryWeightConfig, formats, quantize_
from slimtorch.quant.api import METADATA_KEY, load_quantized, to_safetensors
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


# Per format: (K multiple, quantize (N, K) fp32 weight -> op arguments, op).
FORMATS = {
    "int8": (1, lambda w: formats.quantize_int8(w), int8_weight_mm),
    "w8a8": (1, lambda w: formats.quantize_int8(w), w8a8_linear),
    "int4": (32, lambda w: (*formats.quantize_int4(w, 32, torch.float16)[:3], 32), int4_weight_mm),
    "binary": (1, lambda w: (*formats.quantize_binary(w)[:3], 1), lowbit_weight_mm),
    "ternary": (1, lambda w: (*formats.quantize_ternary(w, asymmetric=True)[:3], 2), lowbit_weight_mm),
    "codebook": (1, lambda w: (*formats.quantize_codebook(w, 3, iterations=5)[:2], 3), codebook_mm),
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
    multiple, quantize, op = FORMATS[kind]
    k = multiple * (k_units if multiple == 1 else 1 + k_units % 2)  # int4: K = 32 or 64
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
    if bool((~bad).any()):
        assert_rel_close(out[~bad], ref[~bad].to(out.dtype if kind == "w8a8" else ref.dtype), rel_bound(dtype, k))


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


# ----------------------------------------------------------------------------- file corruption


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 5))


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    model = quantize_(_model(), Int4WeightOnlyConfig(group_size=32), filter_fn=lambda m, fqn: fqn == "0").model
    model = quantize_(model, TernaryWeightConfig(), filter_fn=lambda m, fqn: fqn == "2").model
    path = tmp_path_factory.mktemp("quant") / "valid.safetensors"
    to_safetensors(model, path)
    return path.read_bytes(), safetensors.torch.load_file(str(path)), path


def _edit_tensors(tensors: dict, how: str, key: str, dtype: torch.dtype) -> dict:
    edited = dict(tensors)
    if how == "drop":
        edited.pop(key)
    elif how == "extra":
        edited["extra.tensor"] = torch.zeros(3)
    elif how == "dtype":
        edited[key] = edited[key].to(dtype)
    return edited


@pytest.mark.parametrize("how", ["truncate", "flip", "drop", "extra", "dtype"])
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    where=st.integers(0, 2**20),
    in_data=st.booleans(),
    bit=st.integers(0, 7),
    key_index=st.integers(0, 20),
    dtype=st.sampled_from([torch.float32, torch.int32, torch.uint8, torch.int64, torch.float16]),
)
def test_corrupted_files_raise_clearly_or_load_what_they_hold(
    valid_file, tmp_path_factory, how, where, in_data, bit, key_index, dtype
):
    data, tensors, valid_path = valid_file
    path = tmp_path_factory.mktemp("corrupt") / "file.safetensors"
    keys = sorted(tensors)
    key = keys[key_index % len(keys)]
    if how == "truncate":
        path.write_bytes(data[: where % len(data)])
    elif how == "flip":
        flipped = bytearray(data)
        header = 8 + int.from_bytes(data[:8], "little")  # u64 header length, the JSON header, then the data
        flipped[header + where % (len(data) - header) if in_data else where % header] ^= 1 << bit
        path.write_bytes(bytes(flipped))
    else:
        metadata = {METADATA_KEY: safetensors.safe_open(str(valid_path), "pt").metadata()[METADATA_KEY]}
        safetensors.torch.save_file(_edit_tensors(tensors, how, key, dtype), str(path), metadata=metadata)
    try:
        model = load_quantized(path, _model())
    except (ValueError, TypeError) as error:
        assert str(error).startswith("path: ") and str(path) in str(error), error
        event(f"{how}{' (data)' if how == 'flip' and in_data else ''}: {type(error).__name__}")
        return
    event(f"{how}{' (data)' if how == 'flip' and in_data else ''}: loaded what the file holds")
    held = safetensors.torch.load_file(str(path))  # loaded: it must hold exactly the file's tensors
    state = model.state_dict()
    assert set(state) == set(held)
    for name, value in held.items():  # a float stored in another float dtype is cast, as torch loads it
        cast = (
            value.to(state[name].dtype)
            if value.dtype.is_floating_point and state[name].dtype.is_floating_point
            else value
        )
        assert_exact(state[name], cast, name=name)
    json.loads(safetensors.safe_open(str(path), "pt").metadata()[METADATA_KEY])

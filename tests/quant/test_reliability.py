"""Issue 11 for slimtorch.quant: every entry point validates what it is given, NaN/Inf follow the
one policy (a non-finite x row gives an all-NaN output row, on every path), zero-size batches work.
Each test failed on the code before the fix it names."""

import pytest
import torch

from slimtorch.core import reference_only
from slimtorch.core.testing import assert_exact, randn
from slimtorch.quant import Int8WeightOnlyConfig, formats, layers, quantize_

LAYERS = {
    "int8": (layers.Int8WeightOnlyLinear, {}),
    "w8a8": (layers.Int8DynamicActivationInt8WeightLinear, {}),
    "int4": (layers.Int4WeightOnlyLinear, {"group_size": 32}),
    "binary": (layers.BinaryLinear, {}),
    "ternary": (layers.TernaryLinear, {"asymmetric": True}),
    "codebook": (layers.CodebookLinear, {"bits": 3}),
}
K, N = 64, 13


def _layer(kind: str, seed: int = 0) -> layers.QuantizedLinear:
    cls, options = LAYERS[kind]
    return cls.from_weight(randn((N, K), seed=seed, scale=0.2), randn((N,), seed=seed + 1), **options)


# ----------------------------------------------------------------------------- NaN / Inf policy


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_row_gives_nan_row_on_every_path(kind, bad):
    layer = _layer(kind)
    x = randn((5, K), seed=3)
    x[2, 7] = bad
    out = layer(x)  # the Triton kernel (interpreter on CPU)
    with reference_only():
        ref = layer(x)
    for y in (out, ref):
        assert bool(y[2].isnan().all()), f"row 2 of x holds {bad}: expected an all-NaN row, got {y[2]}"
        assert bool(torch.isfinite(y[[0, 1, 3, 4]]).all()), "finite rows must stay finite"
    torch.testing.assert_close(out[[0, 1, 3, 4]], ref[[0, 1, 3, 4]], rtol=1e-5, atol=1e-5)


def test_w8a8_nan_row_quantises_to_nan_and_leaves_other_rows_alone():
    """(a): a NaN row used to quantise to finite codes (and differently in the kernel and on CPU)."""
    layer = _layer("w8a8")
    x = randn((4, K), seed=5)
    clean = layer(x.clone())
    x[1, 0] = float("nan")
    out = layer(x)
    assert bool(out[1].isnan().all())
    assert_exact(out[[0, 2, 3]], clean[[0, 2, 3]])


# ----------------------------------------------------------------------------- quantizers


QUANTIZERS = {
    "int8": formats.quantize_int8,
    "int4": lambda w: formats.quantize_int4(w, 32, torch.float32),
    "binary": formats.quantize_binary,
    "ternary": formats.quantize_ternary,
    "codebook": lambda w: formats.quantize_codebook(w, 2, iterations=3),
}


@pytest.mark.parametrize("kind", QUANTIZERS)
def test_float64_weight_beyond_float32_range_raises_naming_weight(kind):
    """(d): 1e39 is finite in float64 but inf as a float32 scale; only int4 used to raise."""
    w = torch.randn(3, 32, dtype=torch.float64)
    w[1, 4] = 1e39
    with pytest.raises(ValueError, match=r"weight: expected magnitudes within float32's range.*1\.0000e\+39"):
        QUANTIZERS[kind](w)


@pytest.mark.parametrize("kind", QUANTIZERS)
def test_float64_weight_inside_float32_range_quantizes_finite(kind):
    w = torch.randn(3, 32, dtype=torch.float64) * 1e30
    packed = QUANTIZERS[kind](w)
    for t in packed:
        if isinstance(t, torch.Tensor) and t.dtype.is_floating_point:
            assert bool(torch.isfinite(t).all())


# ----------------------------------------------------------------------------- construction and forward


@pytest.mark.parametrize("kind", LAYERS)
def test_wrong_k_names_x_and_in_features(kind):
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 64\) \(in_features\), got \(5, 63\)"):
        _layer(kind)(torch.randn(5, 63))


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("shape", [(0, K), (2, 0, K)])
def test_empty_batch_gives_empty_output(kind, shape):
    layer = _layer(kind)
    out = layer(torch.randn(shape))
    with reference_only():
        ref = layer(torch.randn(shape))
    assert out.shape == ref.shape == (*shape[:-1], N)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize(("k", "n", "bad"), [(0, 8, "in_features"), (64, 0, "out_features")])
def test_zero_size_layer_refused_at_construction(kind, k, n, bad):
    cls, options = LAYERS[kind]
    with pytest.raises(ValueError, match=rf"{bad}: expected a positive int, got 0"):
        cls(k, n, **options)


def test_non_module_arguments_raise_type_error():
    with pytest.raises(TypeError, match=r"model: expected a torch.nn.Module, got int"):
        quantize_(3, Int8WeightOnlyConfig())


# ----------------------------------------------------------------------------- state_dict loading

# (kind, key, corruption, error type, message): each used to be cast or copied silently.
CORRUPTIONS = [
    ("int4", "qweight", lambda t: t.float(), TypeError, "qweight: expected dtype int32, got float32"),
    ("int8", "qweight", lambda t: t.to(torch.int32) + 100, TypeError, "qweight: expected dtype int8, got int32"),
    ("int8", "qweight", lambda t: t.fill_(-128), ValueError, r"qweight: expected values in \[-127, 127\]"),
    ("int8", "scale", lambda t: t.index_fill(0, torch.tensor([3]), float("nan")), ValueError, "scale: expected finite"),
    ("int8", "scale", lambda t: -t, ValueError, "scale: expected positive values"),
    ("int4", "zero", lambda t: t.fill_(17), ValueError, r"zero: expected values in \[0, 16\]"),
    ("int4", "scale", lambda t: t.fill_(float("inf")), ValueError, "scale: expected finite"),
    ("int4", "zero", lambda t: t.to(torch.int64), TypeError, "zero: expected dtype uint8, got int64"),
    ("int4", "qweight", lambda t: t[:-1], ValueError, r"qweight: expected shape \(8, 13\)"),
    ("binary", "scale", lambda t: t.fill_(-1.0), ValueError, r"scale: expected values in \[0.0, inf\]"),
    ("ternary", "qweight", lambda t: t.fill_(0x22222222), ValueError, "qweight: expected ternary codes 0, 1 or 3"),
    ("codebook", "qweight", lambda t: t.fill_(0x0F0F0F0F), ValueError, "qweight: expected codebook indices below"),
    ("codebook", "codebook", lambda t: t.to(torch.int32), TypeError, "codebook: expected dtype one of"),
    ("w8a8", "bias", lambda t: t.fill_(float("nan")), ValueError, "bias: expected finite"),
]


@pytest.mark.parametrize(("kind", "key", "corrupt", "error", "message"), CORRUPTIONS)
def test_load_state_dict_checks_every_stored_tensor(kind, key, corrupt, error, message):
    layer = _layer(kind)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    state = {k: v.clone() for k, v in before.items()}
    state[key] = corrupt(state[key])
    with pytest.raises(error, match=message):
        layer.load_state_dict(state)
    for k, v in layer.state_dict().items():  # refused before anything was copied
        assert_exact(v, before[k], name=k)


@pytest.mark.parametrize("kind", LAYERS)
def test_valid_state_dict_round_trips(kind):
    src, dst = _layer(kind, seed=0), _layer(kind, seed=7)
    dst.load_state_dict(src.state_dict())
    for k, v in dst.state_dict().items():
        assert_exact(v, src.state_dict()[k], name=k)

"""W8A8: the per-token quantizer kernel is bit-exact; the int8 GEMM matches its reference."""

import pytest
import torch

from slimtorch.core.testing import assert_exact, randn
from slimtorch.core.tuning import autotune_key
from slimtorch.quant import w8a8_mm
from slimtorch.quant.formats import quantize_int8
from slimtorch.quant.w8a8_mm import MAX_K, QUANT_BLOCK_K, quantize_per_token, w8a8_linear

from .helpers import activations, assert_matches_reference


@pytest.mark.parametrize(
    ("m", "k", "dtype"),
    [(3, 37, torch.float16), (5, QUANT_BLOCK_K + 77, torch.bfloat16), (2, 129, torch.float32)],
)
def test_quantize_per_token_is_exact(device, m, k, dtype):
    x = activations(m, k, dtype, device, seed=k) * 3
    x[1] = 0  # an all-zero row: scale 1, codes 0
    q, scale = quantize_per_token(x)
    ref_q, ref_scale = quantize_per_token.get_reference()(x)
    assert_exact(q, ref_q, name="q")
    assert_exact(scale, ref_scale, name="scale")
    assert scale[1].item() == 1.0 and int(q[1].abs().max()) == 0


def test_quantize_per_token_rounds_half_to_even(device):
    x = torch.tensor([[127.0, 0.5, 1.5, 2.5, -2.5, -0.5, 126.5]], dtype=torch.float16, device=device)
    q, scale = quantize_per_token(x)
    assert scale.item() == 1.0
    assert q.tolist() == [[127, 0, 2, 2, -2, 0, 126]]


@pytest.mark.parametrize(
    ("m", "k", "n", "dtype", "with_bias"),
    [(1, 100, 37, torch.float16, True), (17, 70, 45, torch.bfloat16, False), (40, 33, 29, torch.float32, True)],
)
def test_w8a8_linear_matches_reference(device, m, k, n, dtype, with_bias):
    packed = quantize_int8(randn((n, k), seed=n))
    bias = randn((n,), device=device, seed=1) if with_bias else None
    x = activations(m, k, dtype, device, seed=m)
    assert_matches_reference(w8a8_linear, x, packed.qweight.to(device), packed.scale.to(device), bias=bias)


def test_nonfinite_rows_give_nan_rows(device):
    """NaN in, NaN out: a row of x holding NaN or Inf gets codes 0 and scale NaN (kernel = reference)."""
    packed = quantize_int8(randn((23, 37), seed=3))
    x = activations(5, 37, torch.float16, device, seed=4)
    x[1, 30], x[3, 2] = float("nan"), float("inf")
    q, scale = quantize_per_token(x)
    ref_q, ref_scale = quantize_per_token.get_reference()(x)
    assert_exact(q, ref_q, name="q")
    assert_exact(scale, ref_scale, name="scale")
    out = w8a8_linear(x, packed.qweight.to(device), packed.scale.to(device))
    bad = torch.tensor([False, True, False, True, False], device=device)
    assert bool(out[bad].isnan().all()) and not bool(out[~bad].isnan().any())


def test_autotune_key_buckets_m(monkeypatch):
    keys = []
    kernel = w8a8_mm._int8_mm_tuned
    monkeypatch.setattr(kernel, "run", lambda *a, **kw: keys.append(autotune_key(kernel, a, kw)))
    packed = quantize_int8(randn((6, 8), seed=0))
    for m in (9, 15, 17):
        w8a8_linear(torch.ones(m, 8), packed.qweight, packed.scale)
    assert keys[0] == keys[1] != keys[2]


def test_w8a8_errors():
    packed = quantize_int8(randn((6, 8), seed=0))
    with pytest.raises(ValueError, match=rf"x: expected 0 < K <= {MAX_K} \(int32 accumulation"):
        w8a8_linear(
            torch.empty(1, MAX_K + 1, device="meta"),
            torch.empty(6, MAX_K + 1, dtype=torch.int8, device="meta"),
            packed.scale.to("meta"),
        )
    with pytest.raises(ValueError, match=r"x: expected 0 < K"):
        quantize_per_token(torch.zeros(2, 0))
    with pytest.raises(ValueError, match=r"weight_scale: expected shape \(6\), got \(5,\)"):
        w8a8_linear(torch.zeros(2, 8), packed.qweight, packed.scale[:5])
    with pytest.raises(TypeError, match="qweight: expected dtype int8, got uint8"):
        w8a8_linear(torch.zeros(2, 8), packed.qweight.to(torch.uint8), packed.scale)


def test_w8a8_opcheck(device):
    packed = quantize_int8(randn((9, 40), seed=0))
    x = randn((3, 40), device=device, seed=1)
    utils = ("test_schema", "test_faketensor")
    torch.library.opcheck(quantize_per_token, (x,), test_utils=utils)
    torch.library.opcheck(w8a8_linear, (x, packed.qweight.to(device), packed.scale.to(device), None), test_utils=utils)

"""int8 weight-only GEMM: kernel (GEMV split-K, GEMV, tiles) vs "dequantise then matmul"."""

import pytest
import torch

from slimtorch.core.testing import randn
from slimtorch.quant import dequant_mm
from slimtorch.quant.formats import quantize_int8
from slimtorch.quant.int8_mm import int8_weight_mm

from .helpers import activations, assert_matches_reference

# (M, K, N, dtype, bias): split-K GEMV, GEMV, tile path; every activation dtype once.
CASES = [
    (1, 777, 45, torch.float16, True),
    (5, 63, 37, torch.bfloat16, False),
    (17, 97, 67, torch.float32, True),
    (33, 130, 29, torch.float16, False),
]


@pytest.mark.parametrize(("m", "k", "n", "dtype", "with_bias"), CASES)
def test_int8_weight_mm_matches_reference(device, m, k, n, dtype, with_bias):
    packed = quantize_int8(randn((n, k), seed=k))
    qweight, scale = packed.qweight.to(device), packed.scale.to(device)
    bias = randn((n,), device=device, seed=n) if with_bias else None
    x = activations(m, k, dtype, device, seed=m)
    assert_matches_reference(int8_weight_mm, x, qweight, scale, bias=bias)
    if m == 1:  # the split-K path is reached (on CPU: the interpreter's small SM count)
        assert dequant_mm.split_plan(m, n, k, torch.device(device)).splits > 1 or device == "cuda"


def test_int8_weight_mm_strided_activations(device):
    packed = quantize_int8(randn((21, 40), seed=0))
    x = randn((7, 80), dtype=torch.float16, device=device, seed=1)[:, ::2]  # stride (80, 2)
    assert_matches_reference(int8_weight_mm, x, packed.qweight.to(device), packed.scale.to(device))


def test_int8_weight_mm_errors():
    q, s, x = torch.zeros(6, 8, dtype=torch.int8), torch.ones(6), torch.zeros(2, 8)
    with pytest.raises(ValueError, match=r"qweight: expected shape \(6, 9\), got \(6, 8\)"):
        int8_weight_mm(torch.zeros(2, 9), q, s)
    with pytest.raises(TypeError, match="qweight: expected dtype int8, got int32"):
        int8_weight_mm(x, q.int(), s)
    with pytest.raises(ValueError, match=r"scale: expected shape \(6\), got \(5,\)"):
        int8_weight_mm(x, q, torch.ones(5))
    with pytest.raises(TypeError, match=r"x: expected dtype one of \(float16, bfloat16, float32\), got float64"):
        int8_weight_mm(x.double(), q, s)
    with pytest.raises(ValueError, match=r"bias: expected shape \(6\), got \(7,\)"):
        int8_weight_mm(x, q, s, torch.ones(7))
    with pytest.raises(ValueError, match="qweight: expected a contiguous tensor"):
        int8_weight_mm(torch.zeros(2, 6), torch.zeros(6, 6, dtype=torch.int8).t(), s)
    with pytest.raises(ValueError, match=r"scale: expected a tensor on cpu .* got one on meta"):
        int8_weight_mm(x, q, s.to("meta"))


def test_int8_weight_mm_fake_and_opcheck(device):
    packed = quantize_int8(randn((11, 24), seed=0))
    meta = int8_weight_mm(
        torch.empty(3, 24, device="meta", dtype=torch.float16), packed.qweight.to("meta"), packed.scale.to("meta")
    )
    assert meta.shape == (3, 11) and meta.dtype == torch.float16
    args = (randn((3, 24), device=device, seed=2), packed.qweight.to(device), packed.scale.to(device), None)
    torch.library.opcheck(int8_weight_mm, args, test_utils=("test_schema", "test_faketensor"))

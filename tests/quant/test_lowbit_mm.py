"""1-bit and 2-bit weight GEMM: binary, ternary (TWN) and asymmetric ternary against the reference."""

import pytest
import torch

from slimtorch.core.testing import randn
from slimtorch.quant import formats
from slimtorch.quant.lowbit_mm import lowbit_weight_mm

from .helpers import activations, assert_matches_reference


def _packed(kind, n, k, seed=0):
    w = randn((n, k), seed=seed)
    if kind == "binary":
        return formats.quantize_binary(w)
    return formats.quantize_ternary(w, asymmetric=kind == "ternary-asymmetric")


# (kind, M, K, N, dtype, bias): split-K GEMV, GEMV, tile path; K tails inside the last word.
CASES = [
    ("binary", 1, 600, 37, torch.float16, True),
    ("binary", 19, 97, 40, torch.float32, False),
    ("ternary", 5, 45, 29, torch.bfloat16, False),
    ("ternary", 33, 70, 21, torch.float16, True),
    ("ternary-asymmetric", 2, 301, 23, torch.float32, True),
    ("ternary-asymmetric", 18, 40, 50, torch.bfloat16, False),
]


@pytest.mark.parametrize(("kind", "m", "k", "n", "dtype", "with_bias"), CASES)
def test_lowbit_weight_mm_matches_reference(device, kind, m, k, n, dtype, with_bias):
    p = _packed(kind, n, k, seed=k)
    bias = randn((n,), device=device, seed=n) if with_bias else None
    x = activations(m, k, dtype, device, seed=m)
    weights = (p.qweight.to(device), p.pos_scale.to(device), p.neg_scale.to(device), p.bits)
    assert_matches_reference(lowbit_weight_mm, x, *weights, bias=bias)


def test_lowbit_weight_mm_errors():
    p = _packed("ternary", 6, 40)
    x = torch.zeros(2, 40)
    with pytest.raises(ValueError, match=r"bits: expected one of \(1, 2\), got 4"):
        lowbit_weight_mm(x, p.qweight, p.pos_scale, p.neg_scale, 4)
    with pytest.raises(ValueError, match=r"qweight: expected shape \(2, 6\), got \(3, 6\)"):
        lowbit_weight_mm(x, p.qweight, p.pos_scale, p.neg_scale, 1)  # 1 bit: ceil(40 / 32) = 2 rows
    with pytest.raises(ValueError, match=r"neg_scale: expected shape \(6\), got \(5,\)"):
        lowbit_weight_mm(x, p.qweight, p.pos_scale, p.neg_scale[:5], 2)
    with pytest.raises(TypeError, match="qweight: expected dtype int32, got int64"):
        lowbit_weight_mm(x, p.qweight.long(), p.pos_scale, p.neg_scale, 2)


def test_lowbit_weight_mm_opcheck(device):
    p = _packed("binary", 11, 50)
    args = (randn((3, 50), device=device, seed=1), p.qweight.to(device), p.pos_scale.to(device))
    args = (*args, p.neg_scale.to(device), 1, None)
    torch.library.opcheck(lowbit_weight_mm, args, test_utils=("test_schema", "test_faketensor"))

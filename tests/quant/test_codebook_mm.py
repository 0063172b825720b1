"""Codebook (LUT) GEMM for 2..8-bit indices against the reference."""

import pytest
import torch

from slimtorch.core.testing import randn
from slimtorch.quant import formats
from slimtorch.quant.codebook_mm import codebook_mm

from .helpers import activations, assert_matches_reference

# (bits, M, K, N, dtype, bias): storage 2, 4 (3 and 4 bits) and 8 bits; split-K GEMV, GEMV, tiles.
CASES = [
    (4, 1, 520, 37, torch.float16, True),
    (3, 3, 45, 20, torch.bfloat16, False),
    (8, 21, 70, 33, torch.float32, True),
    (2, 2, 33, 17, torch.float16, False),
    (6, 40, 29, 26, torch.bfloat16, True),
]


@pytest.mark.parametrize(("bits", "m", "k", "n", "dtype", "with_bias"), CASES)
def test_codebook_mm_matches_reference(device, bits, m, k, n, dtype, with_bias):
    cb = formats.quantize_codebook(randn((n, k), seed=bits), bits)
    bias = randn((n,), device=device, seed=n) if with_bias else None
    x = activations(m, k, dtype, device, seed=m)
    assert_matches_reference(codebook_mm, x, cb.qweight.to(device), cb.codebook.to(device), bits, bias=bias)


def test_codebook_mm_errors():
    cb = formats.quantize_codebook(randn((6, 40), seed=0), 4)
    x = torch.zeros(2, 40)
    with pytest.raises(ValueError, match=r"codebook: expected shape \(16\), got \(8,\)"):
        codebook_mm(x, cb.qweight, cb.codebook[:8], 4)
    with pytest.raises(ValueError, match=r"bits: expected one of \(2, 3, 4, 5, 6, 7, 8\), got 1"):
        codebook_mm(x, cb.qweight, cb.codebook, 1)
    with pytest.raises(ValueError, match=r"qweight: expected shape \(10, 6\), got \(5, 6\)"):
        codebook_mm(x, cb.qweight, torch.zeros(32), 5)  # 5 bits are stored in 8: 10 rows for K = 40


def test_codebook_mm_opcheck(device):
    cb = formats.quantize_codebook(randn((9, 30), seed=1), 3)
    args = (randn((2, 30), device=device, seed=2), cb.qweight.to(device), cb.codebook.to(device), 3, None)
    torch.library.opcheck(codebook_mm, args, test_utils=("test_schema", "test_faketensor"))

"""int4 group-wise GEMM: kernel vs "dequantise then matmul", GPTQ checkpoints, errors."""

import pytest
import torch

from slimtorch.core.testing import randn
from slimtorch.quant import formats
from slimtorch.quant.int4_mm import int4_weight_mm

from .helpers import activations, assert_matches_reference

# (M, K, N, group, dtype, bias): split-K GEMV, GEMV, tile path; every group size and dtype once.
CASES = [
    (1, 768, 37, 128, torch.float16, True),
    (3, 96, 45, 32, torch.bfloat16, False),
    (17, 192, 67, 64, torch.float32, True),
    (40, 160, 29, 32, torch.bfloat16, True),
]


def _packed(n, k, group_size, device, seed=0, scale_dtype=torch.float16):
    p = formats.quantize_int4(randn((n, k), seed=seed), group_size, scale_dtype=scale_dtype)
    return p.qweight.to(device), p.scale.to(device), p.zero.to(device)


@pytest.mark.parametrize(("m", "k", "n", "group_size", "dtype", "with_bias"), CASES)
def test_int4_weight_mm_matches_reference(device, m, k, n, group_size, dtype, with_bias):
    bias = randn((n,), device=device, seed=n) if with_bias else None
    x = activations(m, k, dtype, device, seed=m)
    assert_matches_reference(int4_weight_mm, x, *_packed(n, k, group_size, device), group_size, bias=bias)


def test_int4_weight_mm_float32_scales(device):
    x = activations(2, 64, torch.float16, device, seed=3)
    assert_matches_reference(int4_weight_mm, x, *_packed(19, 64, 32, device, scale_dtype=torch.float32), 32)


def test_int4_weight_mm_runs_a_gptq_checkpoint(device):
    k, n, g = 128, 24, 64
    gen = torch.Generator().manual_seed(0)
    qweight = torch.randint(-(2**31), 2**31 - 1, (k // 8, n), dtype=torch.int32, generator=gen)
    qzeros = torch.randint(-(2**31), 2**31 - 1, (k // g, n // 8), dtype=torch.int32, generator=gen)
    scales = (torch.rand(k // g, n, generator=gen) * 0.05 + 0.01).half()
    p = formats.from_gptq(qweight, qzeros, scales)  # zero points 1..16 (v1)
    x = activations(3, k, torch.float16, device, seed=4)
    weights = (p.qweight.to(device), p.scale.to(device), p.zero.to(device), g)
    assert_matches_reference(int4_weight_mm, x, *weights)


def test_int4_weight_mm_errors():
    q, s, z = _packed(8, 64, 32, "cpu")
    x = torch.zeros(2, 64)
    with pytest.raises(ValueError, match=r"qweight: expected shape \(16, 8\), got \(8, 8\)"):
        int4_weight_mm(torch.zeros(2, 96), q, s, z, 64)  # K = 96 pads to 128 packed columns
    with pytest.raises(ValueError, match=r"in_features \(K\): expected a positive int, got 0"):
        int4_weight_mm(torch.zeros(2, 0), q, s, z, 32)
    with pytest.raises(ValueError, match="group_size: expected a positive multiple of 8, got 12"):
        int4_weight_mm(x, q, s, z, 12)
    with pytest.raises(ValueError, match=r"qweight: expected shape \(8, 8\), got \(4, 8\)"):
        int4_weight_mm(x, q[:4], s, z, 32)
    with pytest.raises(ValueError, match=r"scale: expected shape \(1, 8\)"):
        int4_weight_mm(x, q, s, z, 64)
    with pytest.raises(TypeError, match="zero: expected dtype uint8, got int32"):
        int4_weight_mm(x, q, s, z.int(), 32)
    with pytest.raises(TypeError, match=r"scale: expected dtype one of \(float16, bfloat16, float32\), got int32"):
        int4_weight_mm(x, q, s.int(), z, 32)


def test_int4_weight_mm_fake_and_opcheck(device):
    q, s, z = _packed(11, 64, 32, device)
    meta = int4_weight_mm(torch.empty(5, 64, device="meta"), q.to("meta"), s.to("meta"), z.to("meta"), 32)
    assert meta.shape == (5, 11)
    args = (randn((3, 64), device=device, seed=2), q, s, z, 32, None)
    torch.library.opcheck(int4_weight_mm, args, test_utils=("test_schema", "test_faketensor"))

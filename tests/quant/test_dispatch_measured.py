"""The int4 and PQ ops dispatch by measurement (core.measured) between our kernels and torch's paths
(tinygemm ``torch._weight_int4pack_mm``, dequantize + F.linear): the chosen path matches the reference,
a path that does not run here is recorded and never chosen, torch's packed operand is not kept after a
trial it lost, and ``op.launcher`` stays our kernels. Fake timers, no GPU needed (GPU checks marked)."""

import importlib

import pytest
import torch

from slimtorch.core import measured
from slimtorch.core.testing import order_measurer, randn
from slimtorch.quant import formats, int4_mm
from slimtorch.quant.int4_mm import int4_weight_mm, launch_int4_weight_mm

from .helpers import activations, assert_matches_reference


def test_launcher_stays_our_kernels():
    assert int4_weight_mm.launcher is launch_int4_weight_mm


@pytest.mark.parametrize(
    ("rows", "times", "expected"), [(1, (2.0, 1.0), "torch dequant+F.linear"), (19, (1.0, 2.0), "triton")]
)
def test_each_choice_matches_the_reference(device, rows, times, expected):
    n, k, g = 24, 96, 32
    p = formats.quantize_int4(randn((n, k), seed=n), g)
    bias = randn((n,), device=device, seed=2)
    x = activations(rows, k, torch.float32, device, seed=5)
    m = order_measurer(*times)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        assert_matches_reference(
            int4_weight_mm, x, p.qweight.to(device), p.scale.to(device), p.zero.to(device), g, bias=bias
        )
        ((slot, choice),) = m.choices.items()
    assert choice.choice == expected
    assert int4_mm.TINYGEMM in choice.errors  # fp32 x (and no CPU kernel): never a candidate here
    assert slot[0] == "slimtorch::int4_weight_mm" and slot[2].endswith(",float32,32")  # the group size in the key
    assert len(int4_mm._TINYGEMM) == 0


def test_tinygemm_operands_layout():
    """torch's int4 operand: two codes per byte, the even k in the high nibble; scale-and-zero such that
    (q − 8) · s + zero_t = (q − z) · s. (The packing into torch's tiles needs a GPU; checked there.)"""
    n, k, g = 16, 128, 64
    p = formats.quantize_int4(randn((n, k), seed=4), g)
    codes = formats.unpack_codes(p.qweight, 4, k)
    w_uint8 = ((codes[:, ::2] << 4) | codes[:, 1::2]).to(torch.uint8)
    assert torch.equal((w_uint8 >> 4).long(), codes[:, ::2]) and torch.equal((w_uint8 & 15).long(), codes[:, 1::2])
    s = p.scale.float()
    zero_t = (8.0 - p.zero.float()) * s
    q = torch.arange(16.0)[:, None, None]
    assert torch.allclose((q - 8) * s + zero_t, (q - p.zero.float()) * s, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="K % 64 == 0 and N % 8 == 0"):
        int4_mm.tinygemm_operands(p.qweight[:, :13].contiguous(), p.scale[:, :13], p.zero[:, :13])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_measured_on_cuda_matches_the_reference(dtype):
    n, k, g = 4096, 4096, 128
    p = formats.quantize_int4(randn((n, k), seed=3, scale=0.02), g)
    m = measured.Measurer(cache_path=None)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        for rows in (1, 33, 257):
            x = activations(rows, k, dtype, "cuda", seed=rows)
            assert_matches_reference(int4_weight_mm, x, p.qweight.cuda(), p.scale.cuda(), p.zero.cuda(), g)
    assert len(m.choices) == 3
    for choice in m.choices.values():
        assert choice.choice in choice.times_ms and choice.times_ms[choice.choice] == min(
            t for t in choice.times_ms.values() if t is not None
        )
        if dtype == torch.bfloat16:  # torch's tinygemm ran and agreed with our kernel (else it would be in errors)
            assert int4_mm.TINYGEMM not in choice.errors, choice.errors


@pytest.mark.parametrize(("times", "expected"), [((2.0, 1.0), measured.DECODE_LINEAR), ((1.0, 2.0), "triton")])
def test_pq_mm_dispatches_by_measurement(device, times, expected):
    """Product quantization: our table + gather-add, or decode + F.linear; the choice matches the reference."""
    pq = importlib.import_module("slimtorch.quant.pq_mm")
    from slimtorch.quant.product import quantize_product

    n, k = 24, 32
    packed = quantize_product(randn((n, k), seed=7), sub_dim=4, centroids=16, iterations=3)
    x = activations(5, k, torch.float32, device, seed=8)
    m = order_measurer(*times)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        assert_matches_reference(
            pq.pq_mm, x, packed.codes.to(device), packed.codebooks.to(device), packed.rows_per_block
        )
        ((_, choice),) = m.choices.items()
    assert choice.choice == expected and not choice.errors
    assert pq.pq_mm.launcher is pq.launch_pq_mm

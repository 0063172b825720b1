"""The int4 CUDA-core GEMV (``slimtorch.quant.int4_mm._int4_gemv_kernel``, M <= GEMV_MAX_M): exponent-trick
decode of the GPTQ words, fp32 accumulation, single-launch split-K; against the pure-torch reference
(``int4_weight_mm_reference``) by rel_bound(dtype, K), full and masked tiles, every autotune config."""

import pytest
import torch

from slimtorch.core.testing import assert_rel_close, randn, rel_bound
from slimtorch.core.tuning import all_configs, use_config
from slimtorch.quant import formats, int4_mm
from slimtorch.quant.int4_mm import int4_weight_mm

from .helpers import activations, assert_matches_reference

# (M, K, N, group, dtype, bias). The interpreter's config is BLOCK_N = 64, BLOCK_KW = 16: N % 64 == 0 and
# K % 128 == 0 run the mask-free (EVEN) tiles; K = 512 on the interpreter's 4 SMs plans 2 splits.
CASES = [
    (1, 512, 64, 128, torch.float32, False),  # EVEN, split-K
    (1, 256, 128, 32, torch.float16, True),  # EVEN, a group per 4 word rows
    (2, 200, 45, 32, torch.bfloat16, False),  # K pads to 224: masked x, words and channels
    (2, 96, 70, 64, torch.float16, True),  # K pads to 128
    (2, 768, 33, 128, torch.float32, True),  # masked, split-K
]


def _packed(n, k, group_size, device, seed=0):
    p = formats.quantize_int4(randn((n, k), seed=seed), group_size)
    return p.qweight.to(device), p.scale.to(device), p.zero.to(device)


@pytest.mark.parametrize(("m", "k", "n", "group_size", "dtype", "with_bias"), CASES)
def test_int4_gemv_matches_reference(device, m, k, n, group_size, dtype, with_bias):
    assert m <= int4_mm.GEMV_MAX_M  # int4_weight_mm takes the GEMV path
    bias = randn((n,), device=device, seed=n) if with_bias else None
    x = activations(m, k, dtype, device, seed=m + k)
    assert_matches_reference(int4_weight_mm, x, *_packed(n, k, group_size, device, seed=k), group_size, bias=bias)


def test_int4_gemv_decodes_every_code_of_a_gptq_checkpoint(device):
    """Random 32-bit words: every nibble value in every position, the sign bit set in half of them
    (the arithmetic shift by 8 must not leak into the codes), zero points 1..16 (GPTQ v1)."""
    k, n, g = 256, 64, 32
    gen = torch.Generator().manual_seed(1)
    qweight = torch.randint(-(2**31), 2**31 - 1, (k // 8, n), dtype=torch.int32, generator=gen)
    qzeros = torch.randint(-(2**31), 2**31 - 1, (k // g, n // 8), dtype=torch.int32, generator=gen)
    scales = (torch.rand(k // g, n, generator=gen) * 0.05 + 0.01).half()
    p = formats.from_gptq(qweight, qzeros, scales)
    x = activations(1, k, torch.float32, device, seed=5)
    assert_matches_reference(int4_weight_mm, x, p.qweight.to(device), p.scale.to(device), p.zero.to(device), g)


def test_int4_gemv_nan_rows(device):
    q, s, z = _packed(45, 64, 32, device)
    for bad in (float("nan"), float("inf")):
        x = activations(2, 64, torch.float16, device, seed=2)
        x[1, 7] = bad
        out = int4_weight_mm(x, q, s, z, 32)
        ref = int4_weight_mm.get_reference()(x.double(), q, s, z, 32)
        assert out[1:].isnan().all() and ref[1:].isnan().all()
    assert_rel_close(out[:1], ref[:1], rel_bound(torch.float16, 64))


def test_int4_gemv_rejects_more_rows():
    q, s, z = _packed(8, 64, 32, "cpu")
    m = int4_mm.GEMV_MAX_M + 1
    expected = rf"x: expected at most GEMV_MAX_M = {int4_mm.GEMV_MAX_M} rows for the int4 GEMV, got {m}"
    with pytest.raises(ValueError, match=expected):
        int4_mm.launch_int4_gemv(torch.zeros(m, 64), q, s, z, 32)


CONFIGS = range(len(all_configs(int4_mm._int4_gemv)))


@pytest.mark.parametrize("index", CONFIGS)
def test_int4_gemv_every_config(index):
    """Each autotune config (the interpreter keeps only the first) on a masked and an EVEN shape."""
    config = all_configs(int4_mm._int4_gemv)[index]
    k, n = (256, 256) if index % 2 else (160, 37)
    q, s, z = _packed(n, k, 32, "cpu", seed=index)
    x = randn((2, k), seed=index)
    with use_config(int4_mm._int4_gemv, config):
        out = int4_weight_mm(x, q, s, z, 32)
        assert int4_mm._int4_gemv.best_config == config
    ref = int4_weight_mm.get_reference()(x.double(), q, s, z, 32)
    assert_rel_close(out, ref, rel_bound(torch.float32, k), name=f"config {config}")


@pytest.mark.gpu
def test_int4_gemv_inline_ptx_matches_the_pure_triton_twin():
    """On a GPU the decode runs as inline PTX (ASM=True); the twin is what the interpreter tests."""
    q, s, z = _packed(4096 + 64, 4096, 128, "cuda")
    x = activations(1, 4096, torch.float16, "cuda", seed=9)
    assert_matches_reference(int4_weight_mm, x, q, s, z, 128)

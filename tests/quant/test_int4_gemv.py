"""The int4 CUDA-core GEMV (``slimtorch.quant.int4_mm._int4_gemv_kernel``, M <= GEMV_MAX_M): exponent-trick
decode of the GPTQ words, fp32 accumulation, single-launch split-K; against the pure-torch reference
(``int4_weight_mm_reference``) by rel_bound(dtype, K), full and masked tiles, every autotune config."""

import os
import re
import subprocess
import sys

import pytest
import torch
import triton

from slimtorch.core.metrics import rel_error
from slimtorch.core.testing import assert_rel_close, randn, rel_bound, unit_roundoff
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


# --- fp16 x at M = 1: _int4_gemv_f16_kernel (fp16x2 products, 8-term fp16 sums, p = 2^e per program) ---
# (K, N, group, bias). The interpreter's config is BLOCK_N = 128 (BLOCK_KW = 16 word rows).
F16_CASES = [
    (1, 512, 128, 128, False),  # EVEN, split-K on the interpreter's 4 SMs
    (1, 256, 45, 128, True),  # masked channels
    (2, 200, 70, 32, True),  # K pads to 224: masked x and word rows; a group per 4 word rows
    (1, 96, 131, 64, False),  # K pads to 128; a group per 8 word rows
    (2, 1030, 33, 32, True),  # K % 8 != 0 (pads to 1056), split-K
    (3, 256, 128, 128, True),  # BLOCK_M = 4 > M: masked x rows; half-height tiles (BLOCK_KW = 8)
    (4, 320, 37, 64, False),
]


@pytest.mark.parametrize(("m", "k", "n", "group_size", "with_bias"), F16_CASES)
def test_int4_gemv_f16_matches_reference(device, m, k, n, group_size, with_bias):
    x = activations(m, k, torch.float16, device, seed=k + n)
    assert int4_mm.uses_f16_gemv(x, group_size)
    bias = randn((n,), device=device, seed=n) if with_bias else None
    assert_matches_reference(int4_weight_mm, x, *_packed(n, k, group_size, device, seed=k), group_size, bias=bias)


@pytest.mark.parametrize("magnitude", [6e4, 3e2, 1.0, 2e-2, 1e-3])  # (smaller: y itself is an fp16 subnormal)
def test_int4_gemv_f16_any_activation_scale(device, magnitude):
    """p = 2^e keeps every 8-term fp16 half sum finite up to fp16's largest x (an outlier of 6e4 times a
    code of 15 overflows fp16 without it) and scales small activations up: the same relative error at
    every magnitude. Large magnitudes as a few outliers ("massive activations"), so y itself fits fp16."""
    k, n = 384, 64
    p = formats.quantize_int4(randn((n, k), seed=3) * 0.02, 128)  # LLM-sized weights
    q, s, z = p.qweight.to(device), p.scale.to(device), p.zero.to(device)
    x = torch.rand(1, k, generator=torch.Generator().manual_seed(4)) * 2 - 1
    if magnitude > 1:
        x[0, [5, 77, 300]] = torch.tensor([magnitude, -magnitude, magnitude / 3])
    else:
        x = x * magnitude
    x = x.half().to(device)
    out = int4_weight_mm(x, q, s, z, 128)
    ref = int4_weight_mm.get_reference()(x.double(), q, s, z, 128)
    assert out.isfinite().all()
    assert_rel_close(out, ref, rel_bound(torch.float16, k), name=f"|x| <= {magnitude}")


def test_int4_gemv_f16_error_is_that_of_fp16_sums():
    """The fp16x2 products cost accuracy against the fp32-product kernel (same weights and x), but stay
    within a few fp16 roundings: measured ~5e-4 against ~1.5e-4 (the output's own fp16 rounding)."""
    k, n = 1024, 128
    q, s, z = _packed(n, k, 128, "cpu", seed=6)
    x = activations(1, k, torch.float16, "cpu", seed=7)
    ref = int4_weight_mm.get_reference()(x.double(), q, s, z, 128)
    f16 = rel_error(int4_weight_mm(x, q, s, z, 128), ref)
    fp32_products = rel_error(int4_weight_mm(x.float(), q, s, z, 128).half(), ref)
    assert fp32_products < f16 < 8 * unit_roundoff(torch.float16)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_int4_gemv_f16_a_non_finite_row_leaves_the_others_exact(device, bad):
    """p is shared by the program's rows and chosen from their finite values only: the row with NaN/Inf is
    NaN out, the others keep the accuracy of a clean call."""
    k, n = 256, 64
    q, s, z = _packed(n, k, 128, device, seed=8)
    x = activations(4, k, torch.float16, device, seed=9)
    x[2, 11] = 0.0  # (so that the clean call's p cannot come from the entry replaced below)
    clean = int4_weight_mm(x, q, s, z, 128)
    x[2, 11] = bad
    out = int4_weight_mm(x, q, s, z, 128)
    assert out[2].isnan().all() and torch.equal(out[[0, 1, 3]], clean[[0, 1, 3]])


def test_int4_gemv_f16_is_chosen_only_where_it_applies():
    x = torch.zeros(1, 64, dtype=torch.float16)
    assert int4_mm.uses_f16_gemv(x, 32)
    assert not int4_mm.uses_f16_gemv(x.bfloat16(), 32)  # bf16 / fp32: fp32 products
    assert int4_mm.uses_f16_gemv(torch.zeros(int4_mm.F16_GEMV_MAX_M, 64, dtype=torch.float16), 32)
    assert not int4_mm.uses_f16_gemv(torch.zeros(int4_mm.F16_GEMV_MAX_M + 1, 64, dtype=torch.float16), 32)
    assert not int4_mm.uses_f16_gemv(torch.zeros(2, 65, dtype=torch.float16)[:, :64], 32)  # odd row stride
    assert not int4_mm.uses_f16_gemv(torch.zeros(1, 63, dtype=torch.float16), 32)  # read as int32 pairs
    assert not int4_mm.uses_f16_gemv(torch.zeros(1, 65, dtype=torch.float16)[:, 1:], 32)  # 2-byte aligned
    assert not int4_mm.uses_f16_gemv(x, 8)  # rows r, r + 1 must share a group


@pytest.mark.parametrize("index", range(len(all_configs(int4_mm._int4_gemv_f16))))
def test_int4_gemv_f16_every_config(index):
    """Each autotune config of the fp16 GEMV (the interpreter keeps only the first), masked channels."""
    config = all_configs(int4_mm._int4_gemv_f16)[index]
    k, n = 256, config.kwargs["BLOCK_N"] + 3
    q, s, z = _packed(n, k, 128, "cpu", seed=index)
    x = activations(1, k, torch.float16, "cpu", seed=index)
    with use_config(int4_mm._int4_gemv_f16, config):
        out = int4_weight_mm(x, q, s, z, 128)
        assert int4_mm._int4_gemv_f16.best_config == config
    ref = int4_weight_mm.get_reference()(x.double(), q, s, z, 128)
    assert_rel_close(out, ref, rel_bound(torch.float16, k), name=f"config {config}")


_TTGIR_OF_THE_F16_GEMV = """
import sys
import torch
from slimtorch.core.capture import capture
from slimtorch.quant import int4_mm
k, n = 4096, 4096
for m in map(int, sys.argv[1:]):
    with capture() as launches:  # fake CUDA tensors: the launcher's real specialisation, compiled for sm_90a
        x = torch.empty(m, k, dtype=torch.float16, device="cuda")
        q = torch.empty(k // 8, n, dtype=torch.int32, device="cuda")
        s = torch.empty(k // 128, n, dtype=torch.float16, device="cuda")
        z = torch.empty(k // 128, n, dtype=torch.uint8, device="cuda")
        int4_mm.launch_int4_weight_mm(x, q, s, z, 128)
    launch = next(x for x in launches if x.name == "_int4_gemv_f16_kernel" and x.config_index == 0)
    print(f"=== M={m}")
    print(launch.compile().asm["ttgir"])
"""
TTGIR_M = (1, int4_mm.F16_GEMV_MAX_M)


@pytest.fixture(scope="module")
def f16_gemv_ttgir() -> dict[int, list[str]]:
    """The sm_90a TTGIR of the fp16 GEMV per M, compiled in one subprocess outside the interpreter."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SLIMTORCH_BACKEND")}
    cmd = [sys.executable, "-c", _TTGIR_OF_THE_F16_GEMV, *map(str, TTGIR_M)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    parts = run.stdout.split("=== M=")[1:]
    return {int(part.split("\n", 1)[0]): part.splitlines()[1:] for part in parts}


@pytest.mark.parametrize("m", TTGIR_M)
def test_int4_gemv_f16_inline_ptx_gets_four_adjacent_channels(f16_gemv_ttgir, m):
    """The PTX takes 4 elements per call (pack = 4) and re-pairs x once for them, so it relies on each
    call's 4 elements being 4 adjacent channels of one row: the blocked layout of the operands must hold
    4 contiguous columns per thread, N fastest. Read from the TTGIR of the sm_90a build (no GPU needed)."""
    ttgir = f16_gemv_ttgir[m]
    asm = [line for line in ttgir if "elementwise_inline_asm" in line]
    assert len(asm) == 1, asm  # (the printer elides the asm text and its attributes)
    layout = re.search(r"tensor<[\dx]+xf32, (#\w+)>", asm[0].split("->")[-1]).group(1)
    definition = next(line for line in ttgir if line.startswith(f"{layout} = "))
    size = [int(v) for v in re.search(r"sizePerThread = \[([\d, ]+)\]", definition).group(1).split(",")]
    order = [int(v) for v in re.search(r"order = \[([\d, ]+)\]", definition).group(1).split(",")]
    assert size[-1] == 4 and all(v == 1 for v in size[:-1]) and order[0] == len(size) - 1, definition


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 2, 4])
def test_int4_gemv_f16_inline_ptx_matches_the_pure_triton_twin(m):
    """On a GPU the kernel runs its inline PTX (ASM=True); the interpreter tests the pure-Triton twin. Both
    run here on the same inputs (one split) and must agree to a few fp16 roundings, and match the reference."""
    q, s, z = _packed(4096 + 64, 4096, 128, "cuda")
    x = activations(m, 4096, torch.float16, "cuda", seed=9)
    assert_matches_reference(int4_weight_mm, x, q, s, z, 128)
    n, kw = q.shape[1], q.shape[0]
    outs = []
    for asm in (True, False):
        out = torch.full((m, n), float("nan"), dtype=torch.float16, device="cuda")
        int4_mm._int4_gemv_f16[(triton.cdiv(n, 128), 1)](
            x.view(torch.int32), q, s, z, q, out, out, out, m, n, 4096, kw, kw, x.stride(0) // 2, out.stride(0),
            GROUP_SIZE=128, HAS_BIAS=False, SPLIT=False, BLOCK_M=triton.next_power_of_2(m),
            BLOCK_KW=int4_mm.F16_BLOCK_KW if m <= 2 else int4_mm.F16_BLOCK_KW // 2, ASM=asm,
        )  # fmt: skip
        outs.append(out)
    assert_rel_close(outs[0], outs[1], 4 * unit_roundoff(torch.float16))

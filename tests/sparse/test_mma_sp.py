"""mma_sp.py: the CUDA mma.sp op. Without a GPU: its reference path, its checks, and a lane-by-lane
emulation of the kernel against the PTX-documented fragment layouts, with the addressing taken from the
.cu source itself (its index functions compiled by g++ into tests/sparse/mma_sp_index_harness.cpp; a
wrong lane planted in a copy of the source must fail). With a GPU: the kernel itself against the reference."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from slimtorch.core.testing import assert_rel_close, randn, rel_bound
from slimtorch.sparse import formats as F
from slimtorch.sparse.mma_sp import CUDA_SOURCE, WARP_M, WARPS_PER_BLOCK, sparse24_mm_sp
from slimtorch.sparse.sparse24 import sparse24_mm_reference


def make_operands(m, n, k, dtype, device, seed=0):
    weight = randn((n, k), seed=seed)
    values, meta = F.compress_24(weight * F.prune_24(weight))
    x = randn((m, k), dtype=dtype, device=device, seed=seed + 1)
    bias = randn((n,), dtype=dtype, device=device, seed=seed + 2)
    return x, values.to(device=device, dtype=dtype), meta, F.to_mma_sp_metadata(meta).to(device), bias


def reference64(x, values, meta, bias, activation="none"):
    return sparse24_mm_reference(x.double(), values.double(), meta.to(x.device), bias.double(), activation)


HARNESS = Path(__file__).with_name("mma_sp_index_harness.cpp")


def compiled_harness(source: Path, build_dir: Path) -> Path:
    """The C++ harness built with g++ (or $CXX) around the index functions of ``source`` (a .cu)."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    assert compiler, "the mma.sp index test needs a C++ compiler (g++ or $CXX): none found on PATH"
    binary = build_dir / "mma_sp_index_harness"
    cmd = [compiler, "-std=c++17", "-O1", f'-DS24_SOURCE="{source}"', str(HARNESS), "-o", str(binary)]
    build = subprocess.run(cmd, capture_output=True, text=True)
    assert build.returncode == 0, f"{' '.join(cmd)}\n{build.stderr}"
    return binary


def kernel_addressing(binary: Path, m: int, n: int, k: int) -> dict:
    """What the harness prints, by kind: A/E/B load words per (m0, n0, s, lane[, reg]), D stores."""
    run = subprocess.run([str(binary), str(m), str(n), str(k)], capture_output=True, text=True, check=True)
    table: dict = {"A": {}, "E": {}, "B": {}, "D": {}}
    for line in run.stdout.splitlines():
        kind, *fields = line.split()
        values = [int(v) for v in fields]
        if kind == "D":
            table["D"].setdefault(tuple(values[:2]), []).append(tuple(values[2:]))
        else:
            table[kind][tuple(values[:-1])] = values[-1]
    return table


def emulate_kernel(addressing, x, values, meta_mma, bias):
    """What cuda/sparse24_mma_sp.cu computes, lane by lane, in float64.

    The loads and stores are the kernel's own index arithmetic (``addressing``: the .cu's S24_HD functions
    compiled by g++ into the harness); what one mma.sp.m16n8k32 does with the registers follows the PTX ISA
    ("Matrix fragments for sparse mma.m16n8k32 .f16/.bf16" and the m16n8k16 C/D layout; the metadata lane
    mapping row = T >> 2, column half = T & 1, E[15:0] row r, E[31:16] row r + 8, as measured by Triton's
    dot_sparse work). A mismatch means the kernel's addressing and the documented layouts disagree."""
    m, k = x.shape
    n = values.shape[0]
    x_words = x.double().cpu().reshape(-1, 2)  # 32-bit word w of x = elements 2w, 2w + 1 of the flat array
    v_words = values.double().cpu().reshape(-1, 2)
    e_words = (meta_mma.cpu().to(torch.int64) & 0xFFFFFFFF).reshape(-1).tolist()
    out = torch.full((m, n), float("nan"), dtype=torch.float64)
    for (m0, n0), stores in addressing["D"].items():
        acc = torch.zeros(WARP_M // 8, 16, 8, dtype=torch.float64)  # D tiles [j][row][col]
        for s in range(k // 32):
            # --- kernel side: what each lane loads (words from the harness) -------------------------
            a_regs = {lane: [v_words[addressing["A"][m0, n0, s, lane, i]] for i in range(4)] for lane in range(32)}
            e_regs = {lane: e_words[addressing["E"][m0, n0, s, lane]] for lane in range(32)}
            # --- hardware side: the A, B operands those registers stand for --------------------------
            a = torch.zeros(16, 32, dtype=torch.float64)
            for r in range(16):
                for chunk in range(8):
                    owner = 4 * (r % 8) + chunk % 4  # lane holding row r, chunk `chunk`
                    first, second = a_regs[owner][(r >= 8) + 2 * (chunk >= 4)].tolist()
                    e = e_regs[4 * (r % 8) + chunk // 4]  # lane T: T >> 2 = r % 8, T & 1 = half
                    nibble = (e >> (16 * (r >= 8) + 4 * (chunk % 4))) & 0xF
                    a[r, 4 * chunk + (nibble & 3)] = first
                    a[r, 4 * chunk + (nibble >> 2)] = second
            for j in range(WARP_M // 8):
                b = torch.zeros(32, 8, dtype=torch.float64)
                for lane in range(32):
                    g, t = lane >> 2, lane & 3
                    for i in range(8):  # b_i: row 2t + (i & 1) + 8 (i >> 1), column g
                        word = addressing["B"][m0, n0, s, lane, j, i >> 1]
                        b[2 * t + (i & 1) + 8 * (i >> 1), g] = x_words[word][i & 1]
                acc[j] += a @ b
        # --- kernel side: the stores (c0,c1: row g, cols 2t, 2t+1; c2,c3: row g+8), masked as the kernel does
        for lane, j, h, r, row, feature in stores:
            g, t = lane >> 2, lane & 3
            if row < m and feature < n:
                out[row, feature] = acc[j, g + 8 * h, 2 * t + r] + bias[feature].double().item()
    return out


def test_kernel_addressing_matches_the_documented_mma_sp_layouts(tmp_path):
    """The .cu's own index functions (compiled with g++) against the PTX layouts and the reference."""
    assert WARPS_PER_BLOCK * 16 == 64 and WARP_M % 8 == 0
    x, values, meta, meta_mma, bias = make_operands(37, 40, 64, torch.float16, "cpu", seed=3)
    addressing = kernel_addressing(compiled_harness(CUDA_SOURCE, tmp_path), 37, 40, 64)
    assert_rel_close(emulate_kernel(addressing, x, values, meta_mma, bias), reference64(x, values, meta, bias), 1e-12)


# Wrong lanes planted in a copy of the .cu: each must make the emulation disagree with the reference.
MUTATIONS = {
    "metadata lane": ("2 * g + (t & 1)", "2 * g + (t >> 1)"),
    "A column pair": ("4 * (i >> 1) + t", "4 * (i & 1) + t"),
    "B row": ("s24_min(m0 + 8 * j + g, M - 1)", "s24_min(m0 + 8 * j + t, M - 1)"),
    "D column": ("n0 + g + 8 * h", "n0 + g + 4 * h"),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_wrong_lane_in_the_cu_source_fails(tmp_path, mutation):
    before, after = MUTATIONS[mutation]
    text = CUDA_SOURCE.read_text()
    assert text.count(before) == 1, f"{mutation}: {before!r} not found once in {CUDA_SOURCE.name}"
    mutant = tmp_path / CUDA_SOURCE.name
    mutant.write_text(text.replace(before, after))
    x, values, meta, meta_mma, bias = make_operands(9, 24, 64, torch.float16, "cpu", seed=3)  # one warp row
    addressing = kernel_addressing(compiled_harness(mutant, tmp_path), 9, 24, 64)
    out = emulate_kernel(addressing, x, values, meta_mma, bias)
    expected = reference64(x, values, meta, bias)
    assert torch.isnan(out).any() or (out - expected).norm() / expected.norm() > 1e-3


def test_reference_path_on_cpu(device):
    x, values, meta, meta_mma, bias = make_operands(5, 24, 64, torch.bfloat16, "cpu", seed=1)
    out = sparse24_mm_sp(x, values, meta_mma, bias, "relu")
    assert_rel_close(out, reference64(x, values, meta, bias, "relu"), rel_bound(torch.bfloat16, 64))


def test_argument_errors():
    x, values, meta, meta_mma, _ = make_operands(2, 16, 64, torch.float16, "cpu")
    with pytest.raises(TypeError, match=r"x: expected dtype one of \(float16, bfloat16\), got float32"):
        sparse24_mm_sp(x.float(), values.float(), meta_mma)
    x2, values2, _, _, _ = make_operands(2, 16, 48, torch.float16, "cpu")
    with pytest.raises(
        ValueError, match=r"x.shape\[1\] \(K\) for the mma.sp kernel: expected a multiple of 32, got 48"
    ):
        sparse24_mm_sp(x2, values2, meta_mma)
    with pytest.raises(ValueError, match=r"meta_mma: expected shape \(1, 2, 16\)"):
        sparse24_mm_sp(x, values, meta_mma[:, :1])
    with pytest.raises(TypeError, match=r"meta_mma: expected dtype int32, got int64"):
        sparse24_mm_sp(x, values, meta_mma.long())
    with pytest.raises(ValueError, match=r"meta_mma: expected shape \(1, 2, 16\), got \(16, 2\)"):
        sparse24_mm_sp(x, values, meta)


def test_gradients_through_reference_path():
    x, values, meta, meta_mma, bias = make_operands(3, 16, 32, torch.float16, "cpu", seed=4)
    xs = x.float().requires_grad_()
    # The op's backward (shared with sparse24_mm) runs on the reference path here.
    x16 = xs.half()
    out = sparse24_mm_sp(x16, values, meta_mma, bias)
    out.float().sum().backward()
    expected = torch.ones(3, 16, dtype=torch.float64) @ F.decompress_24(values.double(), meta)
    assert_rel_close(xs.grad, expected, rel_bound(torch.float16, 16))  # dx = dy · W: a reduction over N = 16


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("m", "n", "k"), [(1, 64, 64), (37, 40, 96), (300, 200, 256)])
def test_kernel_on_gpu(dtype, m, n, k):
    x, values, meta, meta_mma, bias = make_operands(m, n, k, dtype, "cuda", seed=m)
    out = sparse24_mm_sp(x, values, meta_mma, bias, "silu")
    assert_rel_close(out, reference64(x, values, meta, bias, "silu"), rel_bound(dtype, k, device="cuda"))

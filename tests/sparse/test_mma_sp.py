"""mma_sp.py: the CUDA mma.sp op. Without a GPU: its reference path, its checks, and a lane-by-lane
emulation of the kernel's addressing against the PTX-documented fragment layouts. With a GPU: the
kernel itself against the reference."""

import pytest
import torch

from slimtorch.core.testing import REL_BOUND, assert_rel_close, randn
from slimtorch.sparse import formats as F
from slimtorch.sparse.mma_sp import WARP_M, WARPS_PER_BLOCK, sparse24_mm_sp
from slimtorch.sparse.sparse24 import sparse24_mm_reference


def make_operands(m, n, k, dtype, device, seed=0):
    weight = randn((n, k), seed=seed)
    values, meta = F.compress_24(weight * F.prune_24(weight))
    x = randn((m, k), dtype=dtype, device=device, seed=seed + 1)
    bias = randn((n,), dtype=dtype, device=device, seed=seed + 2)
    return x, values.to(device=device, dtype=dtype), meta, F.to_mma_sp_metadata(meta).to(device), bias


def reference64(x, values, meta, bias, activation="none"):
    return sparse24_mm_reference(x.double(), values.double(), meta.to(x.device), bias.double(), activation)


def emulate_kernel(x, values, meta_mma, bias):
    """What cuda/sparse24_mma_sp.cu computes, lane by lane, in float64.

    The loads and stores transcribe the kernel's index arithmetic; what one mma.sp.m16n8k32 does
    with the registers follows the PTX ISA ("Matrix fragments for sparse mma.m16n8k32 .f16/.bf16"
    and the m16n8k16 C/D layout; the metadata lane mapping row = T >> 2, column half = T & 1,
    E[15:0] row r, E[31:16] row r + 8, as measured by Triton's dot_sparse work). A mismatch means
    the kernel's addressing and the documented layouts disagree."""
    m, k = x.shape
    n = values.shape[0]
    x64, v64 = x.double().cpu(), values.double().cpu()
    registers = (meta_mma.cpu().to(torch.int64) & 0xFFFFFFFF).tolist()
    out = torch.full((m, n), float("nan"), dtype=torch.float64)
    for m0 in range(0, m, WARP_M):
        for n0 in range(0, n, 16):  # one warp per 16 output features (4 per block, same math)
            acc = torch.zeros(WARP_M // 8, 16, 8, dtype=torch.float64)  # D tiles [j][row][col]
            for s in range(k // 32):
                # --- kernel side: what each lane loads ---------------------------------------
                a_regs, b_regs, e_regs = {}, {}, {}
                for lane in range(32):
                    g, t = lane >> 2, lane & 3
                    row_lo, row_hi = min(n0 + g, n - 1), min(n0 + g + 8, n - 1)
                    pair = lambda row, col: (v64[row, col].item(), v64[row, col + 1].item())
                    a_regs[lane] = [
                        pair(row_lo, 16 * s + 2 * t),
                        pair(row_hi, 16 * s + 2 * t),
                        pair(row_lo, 16 * s + 8 + 2 * t),
                        pair(row_hi, 16 * s + 8 + 2 * t),
                    ]
                    e_regs[lane] = registers[n0 // 16][s][2 * g + (t & 1)]
                    for j in range(WARP_M // 8):
                        xrow = min(m0 + 8 * j + g, m - 1)
                        b_regs[lane, j] = [
                            x64[xrow, 32 * s + 8 * q + 2 * t : 32 * s + 8 * q + 2 * t + 2] for q in range(4)
                        ]
                # --- hardware side: the A, B operands those registers stand for ----------------
                a = torch.zeros(16, 32, dtype=torch.float64)
                for r in range(16):
                    for chunk in range(8):
                        owner = 4 * (r % 8) + chunk % 4  # lane holding row r, chunk `chunk`
                        first, second = a_regs[owner][(r >= 8) + 2 * (chunk >= 4)]
                        e = e_regs[4 * (r % 8) + chunk // 4]  # lane T: T >> 2 = r % 8, T & 1 = half
                        nibble = (e >> (16 * (r >= 8) + 4 * (chunk % 4))) & 0xF
                        a[r, 4 * chunk + (nibble & 3)] = first
                        a[r, 4 * chunk + (nibble >> 2)] = second
                for j in range(WARP_M // 8):
                    b = torch.zeros(32, 8, dtype=torch.float64)
                    for lane in range(32):
                        g, t = lane >> 2, lane & 3
                        for i in range(8):  # b_i: row 2t + (i & 1) + 8 (i >> 1), column g
                            b[2 * t + (i & 1) + 8 * (i >> 1), g] = b_regs[lane, j][i >> 1][i & 1]
                    acc[j] += a @ b
            # --- kernel side: the store of D (c0,c1: row g, cols 2t, 2t+1; c2,c3: row g+8) ------
            for lane in range(32):
                g, t = lane >> 2, lane & 3
                for j in range(WARP_M // 8):
                    for r in range(2):
                        row = m0 + 8 * j + 2 * t + r
                        for feature, d in ((n0 + g, acc[j, g, 2 * t + r]), (n0 + g + 8, acc[j, g + 8, 2 * t + r])):
                            if row < m and feature < n:
                                out[row, feature] = d + bias[feature].double().item()
    return out


def test_kernel_addressing_matches_the_documented_mma_sp_layouts():
    assert WARPS_PER_BLOCK * 16 == 64 and WARP_M % 8 == 0
    x, values, meta, meta_mma, bias = make_operands(37, 40, 64, torch.float16, "cpu", seed=3)
    assert_rel_close(emulate_kernel(x, values, meta_mma, bias), reference64(x, values, meta, bias), 1e-12)


def test_reference_path_on_cpu(device):
    x, values, meta, meta_mma, bias = make_operands(5, 24, 64, torch.bfloat16, "cpu", seed=1)
    out = sparse24_mm_sp(x, values, meta_mma, bias, "relu")
    assert_rel_close(out, reference64(x, values, meta, bias, "relu"), REL_BOUND[torch.bfloat16])


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
    assert_rel_close(xs.grad, expected, REL_BOUND[torch.float16])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("m", "n", "k"), [(1, 64, 64), (37, 40, 96), (300, 200, 256)])
def test_kernel_on_gpu(dtype, m, n, k):
    x, values, meta, meta_mma, bias = make_operands(m, n, k, dtype, "cuda", seed=m)
    out = sparse24_mm_sp(x, values, meta_mma, bias, "silu")
    assert_rel_close(out, reference64(x, values, meta, bias, "silu"), REL_BOUND[dtype])

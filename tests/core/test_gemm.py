"""slimtorch.core.gemm: the split-K reduction (bias + activation epilogue) and the grouped tile
order, against torch."""

import pytest
import torch
import triton
import triton.language as tl

from slimtorch.core import gemm
from slimtorch.core.activations import activation_reference
from slimtorch.core.testing import REL_BOUND, assert_exact, assert_rel_close, randn


@pytest.mark.parametrize(
    "dtype, activation, splits", [(torch.float16, "relu6", 3), (torch.bfloat16, "none", 1), (torch.float32, "silu", 5)]
)
def test_splitk_reduce(device, dtype, activation, splits):
    partial = randn((splits, 19, 133), device=device, seed=splits)
    bias = randn((133,), dtype=dtype, device=device, seed=7)
    out = torch.full((19, 133), float("nan"), dtype=dtype, device=device)
    gemm.splitk_reduce(partial, bias, out, activation)
    expected = activation_reference(partial.double().sum(0) + bias.double(), activation)
    assert_rel_close(out, expected, REL_BOUND[dtype])


@triton.jit
def _tile_order_kernel(out_ptr, tiles_m, tiles_n, GROUP_M: tl.constexpr):
    pid_m, pid_n = gemm.grouped_tile(tl.program_id(0), tiles_m, tiles_n, GROUP_M)
    tl.store(out_ptr + 2 * tl.program_id(0), pid_m)
    tl.store(out_ptr + 2 * tl.program_id(0) + 1, pid_n)


def test_grouped_tile_visits_every_tile_once_in_groups(device):
    tiles_m, tiles_n, group = 7, 5, 3
    out = torch.full((tiles_m * tiles_n, 2), -1, dtype=torch.int32, device=device)
    _tile_order_kernel[(tiles_m * tiles_n,)](out, tiles_m, tiles_n, GROUP_M=group)
    expected = [
        (first + i, n)
        for first in range(0, tiles_m, group)
        for n in range(tiles_n)
        for i in range(min(group, tiles_m - first))
    ]
    assert_exact(out.cpu(), torch.tensor(expected, dtype=torch.int32))

"""slimtorch.core.gemm: the single-launch split-K reduction (through a small test GEMM built on
core's pieces), the split-K planner, poisoned partials, the counters, bucketed autotune keys and
the grouped tile order."""

import pytest
import torch
import triton
import triton.language as tl

from slimtorch.core import gemm
from slimtorch.core.activations import activation_reference
from slimtorch.core.testing import assert_exact, assert_rel_close, randn, rel_bound
from slimtorch.core.triton_compat import dot_acc, install_interpreter_fixes, upcast_dot_operands

BLOCK = 16  # the test GEMM's K tile (and split granule); M and N tiles are 2 * BLOCK


@pytest.fixture(autouse=True)
def _interpreter_fixes():
    install_interpreter_fixes()  # the kernels here are launched directly, not through dispatch


@triton.jit
def _splitk_mm_kernel(
    x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, partial_ptr, counter_ptr,
    M, N, K, k_per_split,
    SPLIT: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr,
    UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """out = act(x (M, K) @ w (K, N) · scale + bias), both contiguous; K range ``split`` of the grid's axis 1."""
    tile = tl.program_id(0)
    pid_m, pid_n = gemm.grouped_tile(tile, tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    split = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_begin = split * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < k_end
        a_mask = (offs_m < M)[:, None] & k_ok[None, :]
        a = tl.load(x_ptr + offs_m[:, None] * K + offs_k[None, :], mask=a_mask, other=0.0)
        b = tl.load(
            w_ptr + offs_k[:, None] * N + offs_n[None, :], mask=k_ok[:, None] & (offs_n < N)[None, :], other=0.0
        )
        acc = dot_acc(a, b, acc, UPCAST)
    gemm.store_splitk(
        acc, offs_m, offs_n, M, N, tile, split, tl.num_programs(1), partial_ptr, counter_ptr, scale_ptr, bias_ptr,
        out_ptr, N, SPLIT, HAS_SCALE, HAS_BIAS, ACTIVATION,
    )  # fmt: skip


def splitk_mm(x, w, scale, bias, activation, splits):
    """The test GEMM on core's contract: plan -> poisoned partials + cached counters -> one launch.
    Returns (out, partials, counters, plan)."""
    (m, k), n = x.shape, w.shape[1]
    plan = gemm.split_k_ranges(k, splits, BLOCK)
    out = torch.full((m, n), float("nan"), dtype=x.dtype, device=x.device)
    split = plan.splits > 1
    partials = gemm.splitk_partials(plan.splits, m, n, x.device) if split else out
    tiles = triton.cdiv(m, 2 * BLOCK) * triton.cdiv(n, 2 * BLOCK)
    counters = gemm.splitk_counters(x.device, tiles)
    _splitk_mm_kernel[(tiles, plan.splits)](
        x, w, out if scale is None else scale, out if bias is None else bias, out, partials, counters,
        m, n, k, plan.k_per_split,
        SPLIT=split, HAS_SCALE=scale is not None, HAS_BIAS=bias is not None, ACTIVATION=activation,
        UPCAST=upcast_dot_operands(x.dtype), BLOCK_M=2 * BLOCK, BLOCK_N=2 * BLOCK, BLOCK_K=BLOCK, GROUP_M=2,
    )  # fmt: skip
    return out, partials, counters, plan


def operands(m, n, k, dtype, device, seed):
    x = randn((m, k), dtype=dtype, device=device, seed=seed)
    w = randn((k, n), dtype=dtype, device=device, seed=seed + 1)
    scale = randn((n,), device=device, seed=seed + 2).abs() + 0.5
    bias = randn((n,), dtype=dtype, device=device, seed=seed + 3)
    return x, w, scale, bias


# K = 109: 7 K tiles of 16 columns, which no split count here divides (2 splits: 4 + 3 tiles,
# 3: 3 + 3 + 1, 4: 2 + 2 + 2 + 1); the last tile is a 13-column tail.
@pytest.mark.parametrize(
    "dtype, activation, splits, with_epilogue",
    [
        (torch.float32, "silu", 1, True),
        (torch.float16, "none", 2, True),
        (torch.bfloat16, "hardswish", 3, False),
        (torch.float32, "relu", 4, True),
    ],
)
def test_single_launch_splitk_is_deterministic_and_matches_reference(device, dtype, activation, splits, with_epilogue):
    m, n, k = 19, 23, 109  # one 32 x 32 output tile: the splits are the programs
    x, w, scale, bias = operands(m, n, k, dtype, device, seed=splits)
    if not with_epilogue:
        scale = bias = None
    out, partials, counters, plan = splitk_mm(x, w, scale, bias, activation, splits)
    assert plan.splits == splits
    z = x.double() @ w.double()
    z = z if scale is None else z * scale.double()
    z = z if bias is None else z + bias.double()
    assert_rel_close(out, activation_reference(z, activation), rel_bound(dtype, k, device=device))
    assert int(counters.abs().sum()) == 0, "the last split of every tile must re-zero its counter"
    if splits == 1:
        return
    again, *_ = splitk_mm(x, w, scale, bias, activation, splits)
    assert_exact(again, out, name="a second run")  # same bits
    if activation in ("none", "relu"):
        # the reduction is partial[0] + partial[1] + ... in that order, in fp32, then the epilogue
        total = partials[0].clone()
        for s in range(1, splits):
            total = total + partials[s]
        total = total if scale is None else total * scale
        total = total if bias is None else total + bias.float()
        assert_exact(out, activation_reference(total, activation).to(dtype), name="out vs ordered sum")


def test_nan_in_a_row_of_x_gives_nan_in_that_output_row(device):
    x, w, scale, bias = operands(37, 18, 70, torch.float16, device, seed=5)  # two row tiles
    x[4, 66] = float("nan")  # in the last of the 3 splits' K ranges (32 + 32 + 6 columns)
    out, _, counters, _ = splitk_mm(x, w, scale, bias, "none", 3)
    assert bool(out[4].isnan().all())
    assert not bool(out[torch.arange(37, device=device) != 4].isnan().any())
    assert int(counters.abs().sum()) == 0


def test_split_k_ranges_cover_k_without_empty_splits():
    assert gemm.split_k_ranges(100, 3, 32) == (2, 64)  # ceil(100/3) = 34 -> 64 columns, 2 splits
    assert gemm.split_k_ranges(96, 3, 32) == (3, 32)
    assert gemm.split_k_ranges(4096, 4, 512) == (4, 1024)
    assert gemm.split_k_ranges(100, 1, 512) == (1, 512)
    assert gemm.split_k_ranges(0, 1, 256) == (1, 256)
    with pytest.raises(ValueError, match="splits, granule: expected positive ints, got 0, 32"):
        gemm.split_k_ranges(100, 0, 32)


def test_plan_split_k():
    plan = dict(sm_count=4, block_m=16, block_n=64, min_k_per_split=256, max_splits=16, granule=256)
    assert gemm.plan_split_k(1, 37, 10**6, **plan) == gemm.split_k_ranges(10**6, 8, 256)  # 2 programs per SM
    assert gemm.plan_split_k(1, 37, 255, **plan).splits == 1  # K too short to split
    assert gemm.plan_split_k(1, 37, 3 * 256, **plan) == (3, 256)  # limited by K
    assert gemm.plan_split_k(1, 8 * 64, 10**6, **plan).splits == 1  # the N tiles fill the device alone
    assert gemm.plan_split_k(17, 37, 10**6, **plan, max_m=16).splits == 1  # M above the split-K range
    assert gemm.plan_split_k(1, 37, 10**6, **{**plan, "sm_count": 1000}).splits == 16  # max splits
    assert gemm.plan_split_k(4, 37, 10**6, **plan, max_partial_bytes=8 * 4 * 37 * 3).splits == 3  # traffic
    assert gemm.plan_split_k(40, 37, 10**6, **plan).splits == 3  # 3 M tiles: ceil(8 / 3)


def test_sm_count_off_cuda_is_the_documented_interpreter_count():
    assert gemm.sm_count("cpu") == gemm.INTERPRETER_SM_COUNT == 4


def test_partials_are_poisoned(monkeypatch):
    monkeypatch.setenv("SLIMTORCH_POISON_OUTPUTS", "1")
    partials = gemm.splitk_partials(3, 5, 7, "cpu")
    assert partials.shape == (3, 5, 7) and partials.dtype == torch.float32 and bool(partials.isnan().all())


def test_counters_are_cached_zero_and_grow():
    first = gemm.splitk_counters("cpu", 3)
    assert first.dtype == torch.int32 and int(first.abs().sum()) == 0
    assert gemm.splitk_counters("cpu", 2).data_ptr() == first.data_ptr()
    grown = gemm.splitk_counters("cpu", first.numel() + 1)
    assert grown.numel() > first.numel() and int(grown.abs().sum()) == 0
    assert gemm.splitk_counters("cpu", 1).data_ptr() == grown.data_ptr()


def test_max_tiles_counts_every_declared_config():
    configs = [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}), triton.Config({"BLOCK_M": 16, "BLOCK_N": 32})]
    tiles = lambda c: triton.cdiv(100, c["BLOCK_M"]) * triton.cdiv(70, c["BLOCK_N"])
    assert gemm.max_tiles(configs, tiles) == 7 * 3
    kept = type("Kept", (list,), {})(configs[:1])  # what the interpreter keeps, with the full list beside it
    kept.all = tuple(configs)
    assert gemm.max_tiles(kept, tiles) == 7 * 3


def test_m_bucket_maps_a_bucket_to_one_key():
    assert [gemm.m_bucket(m) for m in (0, 1, 2, 3, 17, 31, 32, 33)] == [1, 1, 2, 4, 32, 32, 32, 64]


def test_layout_key_marks_channels_last_operands():
    nchw, nhwc = torch.zeros(2, 3, 5, 7), torch.zeros(2, 3, 5, 7).contiguous(memory_format=torch.channels_last)
    assert [gemm.layout_key(*t) for t in ((nchw, nchw), (nhwc, nchw), (nchw, nhwc), (nhwc, nhwc))] == [0, 1, 2, 3]
    assert gemm.layout_key(torch.zeros(4, 3, 9, 9)) == gemm.layout_key(nchw)  # sizes do not enter


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

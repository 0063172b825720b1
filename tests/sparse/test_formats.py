"""formats.py: 2:4 pruning/packing, the mma.sp metadata layout, channel permutation, BSR. All exact."""

import math

import pytest
import torch

from slimtorch.core.testing import assert_exact, randn
from slimtorch.sparse import formats as F


def _prune_24_oracle(weight: torch.Tensor) -> torch.Tensor:
    """Element by element: in each group keep the 2 largest |w|, the lower index on ties."""
    flat = weight.reshape(-1, weight.shape[-1]).tolist()
    mask = []
    for row in flat:
        kept = []
        for g in range(0, len(row), 4):
            order = sorted(range(4), key=lambda i, g=g: (-abs(row[g + i]), i))
            kept += [i in order[:2] for i in range(4)]
        mask.append(kept)
    return torch.tensor(mask, dtype=torch.bool).reshape(weight.shape)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_prune_24_matches_oracle_with_ties(dtype):
    gen = torch.Generator().manual_seed(0)
    # Small integers: many ties (and signed ties, and zeros) inside groups.
    weight = torch.randint(-2, 3, (3, 7, 12), generator=gen).to(dtype)
    mask = F.prune_24(weight)
    assert_exact(mask, _prune_24_oracle(weight))
    assert bool((mask.reshape(-1, 4).sum(-1) == 2).all())


def test_prune_24_keeps_the_largest_magnitudes():
    weight = torch.tensor([[0.1, -3.0, 2.0, 0.5, 1.0, 1.0, 1.0, -1.0]])
    expected = torch.tensor([[False, True, True, False, True, True, False, False]])
    assert_exact(F.prune_24(weight), expected)


def test_prune_24_errors():
    with pytest.raises(ValueError, match=r"weight.shape\[-1\] \(K\): expected a multiple of 4, got 10"):
        F.prune_24(torch.zeros(3, 10))
    with pytest.raises(TypeError, match=r"weight: expected dtype one of .*got int32"):
        F.prune_24(torch.zeros(3, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"weight: expected finite values, found nan"):
        F.prune_24(torch.tensor([[1.0, float("nan"), 0.0, 2.0]]))
    with pytest.raises(ValueError, match="weight: expected at least a 1-d tensor"):
        F.prune_24(torch.tensor(1.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("n", "k"), [(1, 4), (13, 36), (7, 100)])
def test_compress_decompress_round_trip(dtype, n, k):
    weight = randn((n, k), dtype=dtype, seed=n * k)
    sparse = weight * F.prune_24(weight)
    values, meta = F.compress_24(sparse)
    assert values.shape == (n, k // 2) and values.dtype == dtype
    assert meta.shape == (n, math.ceil(k / 32)) and meta.dtype == torch.int32
    assert_exact(F.decompress_24(values, meta), sparse)


def test_compress_layout_by_hand():
    # Groups: (a) kept 1,3  (b) kept 0,2  (c) one non-zero at 3 -> slots (0, 3)  (d) all zero -> (0, 1)
    #         (e) one non-zero at 0 -> (0, 1)  (f) one non-zero at 2 -> (0, 2)
    row = [0, 5, 0, -6, 7, 0, 8, 0, 0, 0, 0, 9, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 3, 0]
    values, meta = F.compress_24(torch.tensor([row], dtype=torch.float32))
    assert values.tolist() == [[5, -6, 7, 8, 0, 9, 0, 0, 4, 0, 0, 3]]
    indices = [1, 3, 0, 2, 0, 3, 0, 1, 0, 1, 0, 2]
    word = sum(i << (2 * j) for j, i in enumerate(indices))
    assert meta.tolist() == [[word]]


def test_meta_word_uses_all_32_bits():
    # 16 values with index 3 at the top slot set bit 31: the word is negative as int32.
    indices = torch.tensor([[0, 1] * 7 + [2, 3]])
    meta = F.pack_meta(indices)
    assert meta.dtype == torch.int32 and int(meta) < 0
    assert_exact(F.unpack_meta(meta, 16), indices)


def test_pack_unpack_meta_random():
    gen = torch.Generator().manual_seed(1)
    indices = torch.randint(0, 4, (5, 50), generator=gen)
    meta = F.pack_meta(indices)
    assert meta.shape == (5, 4)
    assert_exact(F.unpack_meta(meta, 50), indices)


def test_compress_rejects_non_24_naming_the_group():
    weight = torch.ones(4, 8)
    weight[:, 2:4] = 0  # group 0 of every row is fine
    weight[:2, 6:8] = 0  # rows 0 and 1 are 2:4
    with pytest.raises(ValueError, match=r"row 2, group 1 \(columns 4\.\.7\) has 4 non-zeros"):
        F.compress_24(weight)
    weight[2, 5:8] = torch.tensor([0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"row 2, group 1 \(columns 4\.\.7\) has 3 non-zeros"):
        F.compress_24(weight)


def test_compress_argument_errors():
    with pytest.raises(ValueError, match=r"dense.shape\[1\] \(K\): expected a multiple of 4, got 6"):
        F.compress_24(torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"dense: expected a 2-d tensor"):
        F.compress_24(torch.zeros(2, 2, 4))


def _mma_register_oracle(meta: torch.Tensor, n: int) -> torch.Tensor:
    """The documented mma.sp m16n8k32 register of each (tile, k-step, lane 2g + c), loop by loop."""
    words = (meta.to(torch.int64) & 0xFFFFFFFF).tolist()
    tiles, steps = math.ceil(n / 16), meta.shape[1]
    out = torch.zeros(tiles, steps, 16, dtype=torch.int64)
    for t in range(tiles):
        for s in range(steps):
            for g in range(8):
                for c in range(2):
                    lo_row, hi_row = 16 * t + g, 16 * t + g + 8
                    lo = (words[lo_row][s] >> (16 * c)) & 0xFFFF if lo_row < n else 0x4444
                    hi = (words[hi_row][s] >> (16 * c)) & 0xFFFF if hi_row < n else 0x4444
                    out[t, s, 2 * g + c] = lo | (hi << 16)
    return out


@pytest.mark.parametrize("n", [16, 21, 40])
def test_mma_sp_metadata_layout_and_inverse(n):
    weight = randn((n, 64), seed=n)
    _, meta = F.compress_24(weight * F.prune_24(weight))
    registers = F.to_mma_sp_metadata(meta)
    assert registers.shape == (math.ceil(n / 16), 2, 16) and registers.dtype == torch.int32
    assert_exact(registers.to(torch.int64) & 0xFFFFFFFF, _mma_register_oracle(meta, n))
    assert_exact(F.from_mma_sp_metadata(registers, n), meta)


def test_mma_sp_metadata_rejects_wrong_dtype():
    with pytest.raises(TypeError, match=r"meta: expected dtype int32, got int64"):
        F.to_mma_sp_metadata(torch.zeros(16, 2, dtype=torch.int64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_permutation_never_loses_magnitude(seed):
    weight = randn((24, 48), seed=seed) * torch.linspace(0.1, 3.0, 48)  # uneven channel norms
    perm = F.permute_for_24(weight, passes=1, partners=5)
    assert_exact(perm.sort().values, torch.arange(48))
    assert F.retained_magnitude(weight, perm) >= F.retained_magnitude(weight) * (1 - 1e-12)
    assert_exact(F.permute_for_24(weight, passes=1, partners=5), perm)  # deterministic


def test_permutation_gains_on_clustered_heavy_channels():
    # Columns 0-3 heavy, 4-7 light: without permutation each row keeps 10+10 and 1+1 = 22;
    # two heavy and two light channels per group keep 4·10 = 40.
    weight = torch.cat([torch.full((5, 4), 10.0), torch.ones(5, 4)], dim=1)
    perm = F.permute_for_24(weight)
    assert F.retained_magnitude(weight) == pytest.approx(5 * 22)
    assert F.retained_magnitude(weight, perm) == pytest.approx(5 * 40)


def test_permutation_greedy_swaps_improve_on_the_starting_permutation():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 32, generator=gen) * torch.rand(32, generator=gen) * 3
    start = max(
        F.retained_magnitude(weight),
        F.retained_magnitude(weight, F._balanced_start(weight.abs().double())),
    )
    searched = F.retained_magnitude(weight, F.permute_for_24(weight, passes=3, partners=7))
    assert searched > start * 1.01


def test_invert_permutation():
    perm = torch.tensor([2, 0, 3, 1])
    assert_exact(perm[F.invert_permutation(perm)], torch.arange(4))


def test_prune_blocks_keeps_largest_norms_ties_to_lower_index():
    weight = torch.ones(32, 48)  # 2 x 3 blocks of 16, all norms equal
    weight[16:, 32:] = 2.0  # block (1, 2) is the largest
    mask = F.prune_blocks(weight, 16, 0.5)
    assert_exact(mask, torch.tensor([[True, True, False], [False, False, True]]))
    assert int(F.prune_blocks(weight, 16, 0.01).sum()) == 1  # ceil(0.01 · 6)


@pytest.mark.parametrize("block_size", [16, 32, 64])
def test_bsr_round_trip(block_size):
    n, k = 2 * block_size, 3 * block_size
    weight = randn((n, k), seed=block_size)
    mask = F.prune_blocks(weight, block_size, 0.5)
    crow, col, values = F.to_bsr(weight, mask)
    assert crow.dtype == col.dtype == torch.int32 and values.shape == (3, block_size, block_size)
    F.check_bsr_structure(crow, col, 2, 3)
    expected = weight * mask.repeat_interleave(block_size, 0).repeat_interleave(block_size, 1)
    assert_exact(F.from_bsr(crow, col, values, n, k), expected)
    assert_exact(F.bsr_blocks_of(expected, crow, col, block_size), values)


def test_bsr_errors():
    with pytest.raises(ValueError, match=r"block_size: expected one of \(16, 32, 64\), got 8"):
        F.prune_blocks(torch.zeros(16, 16), 8, 0.5)
    with pytest.raises(
        ValueError, match=r"weight.shape\[1\] \(K\) for block_size 16: expected a multiple of 16, got 40"
    ):
        F.prune_blocks(torch.zeros(16, 40), 16, 0.5)
    with pytest.raises(ValueError, match=r"density: expected a value in \(0, 1\], got 0.0"):
        F.prune_blocks(torch.zeros(16, 16), 16, 0.0)
    with pytest.raises(ValueError, match=r"block_mask: expected shape \(N/bs, K/bs\)"):
        F.to_bsr(torch.zeros(32, 32), torch.ones(2, 1, dtype=torch.bool))
    crow = torch.tensor([0, 1, 2], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"col_indices: expected block columns in \[0, 2\), got 0..2"):
        F.check_bsr_structure(crow, torch.tensor([0, 2], dtype=torch.int32), 2, 2)
    with pytest.raises(ValueError, match=r"crow_indices: expected a non-decreasing sequence from 0 to nnz=2"):
        F.check_bsr_structure(torch.tensor([0, 2, 1], dtype=torch.int32), torch.tensor([0, 1], dtype=torch.int32), 2, 2)
    with pytest.raises(ValueError, match=r"strictly increasing block columns"):
        F.check_bsr_structure(torch.tensor([0, 2], dtype=torch.int32), torch.tensor([1, 1], dtype=torch.int32), 1, 2)

"""Sparse weight formats: 2:4 semi-structured and block-sparse rows (BSR). Pure torch, exact.

A Linear weight is ``W`` of shape (N, K): N = out_features, K = in_features; ``y = x @ W.T``.

2:4 semi-structured sparsity (NVIDIA Ampere+ sparse tensor cores)
------------------------------------------------------------------
W is 2:4 sparse when every group of 4 consecutive weights along K, ``W[n, 4g : 4g + 4]``, holds at
most 2 non-zeros. :func:`compress_24` stores it as

* ``values`` (N, K/2), W's dtype: the two kept weights of group g at ``values[n, 2g]`` and
  ``values[n, 2g + 1]``, in column order;
* ``meta`` (N, ceil(K/32)) int32: the 2-bit in-group index of every kept value. The index of
  ``values[n, j]`` sits at bits ``2·(j mod 16)`` of ``meta[n, j // 16]``. So one word covers 16
  values = 8 groups = 32 dense columns; group g is the nibble ``g mod 8`` of word ``g // 8``, its first
  (smaller) index in the low 2 bits, its second in the high 2 bits. Unused nibbles of a row's last
  word are 0. Metadata costs 2 bits per kept value: fp16 weights shrink to 1/2 + 1/16 of their bytes.

and ``W[n, 4·(j // 2) + idx[n, j]] = values[n, j]`` (:func:`decompress_24`).

How this maps to the ``mma.sp`` metadata layout (PTX ISA "sparse mma.m16n8k32 .f16/.bf16"):
each 16-bit half of a word is exactly one row's metadata for 16 dense columns (4 nibbles, first
index low), which is the unit ``mma.sp.m16n8k32`` consumes. For a 16-row tile ``t`` and k-step ``s``
(dense columns 32s .. 32s+31), lane ``T`` of the warp (group ``g = T >> 2``, column half
``c = T & 1``; selector 0, lanes with ``T & 2`` are ignored) passes the 32-bit register

    E = lo16(meta[16t + g, s] >> 16c) | lo16(meta[16t + g + 8, s] >> 16c) << 16

:func:`to_mma_sp_metadata` lays these registers out as (ceil(N/16), K/32, 16) int32 with
``E`` at ``[t, s, 2g + c]`` so a warp reads 16 consecutive words per k-step (the CUDA kernel in
``cuda/sparse24_mma_sp.cu``); :func:`from_mma_sp_metadata` inverts it.

Pruning: :func:`prune_24` keeps the 2 largest |w| of every group (ties: the lower index).
Channel permutation (Pool & Yu, "Channel Permutations for N:M Sparsity", NeurIPS 2021, as in
NVIDIA ASP): permuting the K columns before pruning can keep more magnitude;
:func:`permute_for_24` searches one greedily, :func:`retained_magnitude` measures the effect. A
layer pruned after permuting computes ``y = x[:, perm] @ W[:, perm].T``, the same product.

Block-sparse rows (BSR)
-----------------------
W is cut into square ``bs × bs`` blocks (bs = 16, 32 or 64; N and K multiples of bs). The kept
blocks are stored row-major by block row: ``crow_indices`` (N/bs + 1,) int32 (block row r owns
entries ``crow[r] .. crow[r+1]-1``), ``col_indices`` (nnz,) int32 (the block column of each entry,
increasing within a row) and ``values`` (nnz, bs, bs) (``values[e]`` = ``W[bs·r : bs·r+bs,
bs·c : bs·c+bs]``). :func:`prune_blocks` keeps the ``ceil(density · blocks)`` blocks of largest
L2 norm (ties: the lower row-major block index).
"""

from __future__ import annotations

import math

import torch

from slimtorch.core.checks import check_divisible, check_finite, check_positive, check_tensor
from slimtorch.core.packing import pack_bits, to_int32_bits, unpack_bits

INDEX_BITS = 2
VALUES_PER_META_WORD = 16  # 16 two-bit indices per int32 word
MMA_TILE_ROWS = 16  # rows of A in one mma.sp.m16n8k32
MMA_K = 32  # dense K of one mma.sp.m16n8k32
MMA_PAD_WORD = 0x44444444  # every nibble 0b0100: kept indices (0, 1), a valid pattern for padding rows
BLOCK_SIZES: tuple[int, ...] = (16, 32, 64)

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ----------------------------------------------------------------------------- 2:4


def meta_words(k: int) -> int:
    """int32 metadata words per row for K dense columns (K/2 values, 16 per word)."""
    return math.ceil(k // 2 / VALUES_PER_META_WORD)


def _check_2d_weight(weight: torch.Tensor, name: str) -> None:
    check_tensor(weight, name, ndim=2, dtype=_FLOAT_DTYPES)
    check_divisible(weight.shape[1], 4, f"{name}.shape[1] (K)")


def pack_meta(indices: torch.Tensor) -> torch.Tensor:
    """(N, K/2) in-group indices (0..3) -> (N, ceil(K/32)) int32 words (layout in the module doc:
    the 2-bit packing of :mod:`slimtorch.core.packing`)."""
    return pack_bits(indices, INDEX_BITS)


def unpack_meta(meta: torch.Tensor, half_k: int) -> torch.Tensor:
    """(N, ceil(K/32)) int32 words -> (N, K/2) int64 in-group indices (0..3)."""
    return unpack_bits(meta, INDEX_BITS, half_k)


def prune_24(weight: torch.Tensor) -> torch.Tensor:
    """Bool mask keeping the 2 largest |w| of every 4 consecutive weights along the last dim (K).

    Ties go to the lower index: the order is a stable sort of ``-|w|``. Any leading shape is
    accepted (a conv weight is pruned along its last dimension: flatten it to (N, K) first).
    """
    check_tensor(weight, "weight", dtype=_FLOAT_DTYPES)
    if weight.dim() == 0:
        raise ValueError("weight: expected at least a 1-d tensor, got a scalar")
    check_divisible(weight.shape[-1], 4, "weight.shape[-1] (K)")
    check_finite(weight, "weight")
    return top2_mask(weight)


def top2_mask(weight: torch.Tensor) -> torch.Tensor:
    """:func:`prune_24` without argument checks (no device sync: used in every SR-STE step)."""
    magnitude = weight.detach().abs().to(torch.float64 if weight.dtype == torch.float64 else torch.float32)
    groups = magnitude.reshape(-1, weight.shape[-1] // 4, 4)
    kept = torch.argsort(-groups, dim=-1, stable=True)[..., :2]
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=weight.device).scatter_(-1, kept, True)
    return mask.reshape(weight.shape)


def _first_bad_group(nonzeros: torch.Tensor) -> tuple[int, int, int]:
    row, group = (nonzeros > 2).nonzero()[0].tolist()
    return row, group, int(nonzeros[row, group])


def compress_24(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2:4-sparse (N, K) weight -> (values (N, K/2), meta (N, ceil(K/32)) int32).

    Raises ValueError naming the first group (row-major) with more than 2 non-zeros. In a group
    with fewer than 2 non-zeros the lowest-index zeros fill the kept slots, so the result is a
    function of the dense weight alone.
    """
    _check_2d_weight(dense, "dense")
    n, k = dense.shape
    groups = dense.detach().reshape(n, k // 4, 4)
    is_nonzero = groups != 0
    nonzeros = is_nonzero.sum(-1)
    if bool((nonzeros > 2).any()):
        row, group, count = _first_bad_group(nonzeros)
        raise ValueError(
            f"dense: expected a 2:4-sparse weight (at most 2 non-zeros in every 4 consecutive columns), "
            f"but row {row}, group {group} (columns {4 * group}..{4 * group + 3}) has {count} non-zeros"
        )
    # Non-zeros first, then zeros, each in column order; keep two, store them in column order.
    slots = torch.argsort((~is_nonzero).to(torch.int8), dim=-1, stable=True)[..., :2]
    indices = slots.sort(dim=-1).values
    values = torch.gather(groups, -1, indices).reshape(n, k // 2).contiguous()
    return values, pack_meta(indices.reshape(n, k // 2))


def check_meta_24(meta: object, n: int, k: int, name: str = "meta") -> None:
    """Validate loaded or user-built 2:4 metadata for an (N, K) weight (reads the data: call it when a
    structure is built or loaded): int32 (N, ceil(K/32)); in every group the two slots are distinct
    and in order (first < second, the layout above), and the unused nibbles of a row's last word are 0.
    Two slots naming one column would make the reference and the kernels disagree."""
    check_tensor(meta, name, shape=(n, meta_words(k)), dtype=torch.int32)
    half_k = k // 2
    if not half_k:
        return
    idx = unpack_meta(meta, half_k).reshape(n, k // 4, 2)
    bad = idx[..., 0] >= idx[..., 1]
    if bool(bad.any()):
        row, group = (int(i) for i in bad.nonzero()[0])
        first, second = idx[row, group].tolist()
        raise ValueError(
            f"{name}: expected two distinct in-group slots in increasing order for every group of 4 columns, "
            f"got slots ({first}, {second}) in row {row}, group {group} (columns {4 * group}..{4 * group + 3})"
        )
    used = half_k - (meta_words(k) - 1) * VALUES_PER_META_WORD  # indices held by the last word
    if used < VALUES_PER_META_WORD:
        padding = meta[:, -1].to(torch.int64) >> (INDEX_BITS * used)  # sign-extended: bit 31 counts too
        if bool((padding != 0).any()):
            raise ValueError(f"{name}: expected the unused bits of each row's last word to be 0 (layout above)")


def check_permutation(perm: object, k: int, name: str = "perm") -> None:
    """An input-channel permutation of K columns: integer (K,), every index 0..K-1 exactly once."""
    check_tensor(perm, name, shape=(k,), dtype=(torch.int64, torch.int32))
    if not torch.equal(perm.detach().sort().values.cpu(), torch.arange(k, dtype=perm.dtype)):
        raise ValueError(f"{name}: expected a permutation of 0..{k - 1} (each index once), got {perm.tolist()[:8]}...")


def kept_columns(meta: torch.Tensor, half_k: int) -> torch.Tensor:
    """(N, K/2) int64: the dense column ``4·(j // 2) + idx[n, j]`` of every stored value."""
    group_start = 4 * (torch.arange(half_k, device=meta.device, dtype=torch.int64) // 2)
    return group_start + unpack_meta(meta, half_k)


def decompress_24(values: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """(values (N, K/2), meta (N, ceil(K/32))) -> the dense (N, K) weight; exact inverse of
    :func:`compress_24`. Pure torch without data-dependent shapes (traceable on meta tensors)."""
    n, half_k = values.shape
    dense = torch.zeros(n, 2 * half_k, dtype=values.dtype, device=values.device)
    return dense.scatter(1, kept_columns(meta, half_k), values)


def is_24_sparse(dense: torch.Tensor) -> bool:
    """True when every 4 consecutive weights along the last dim hold at most 2 non-zeros."""
    if dense.shape[-1] % 4:
        return False
    return bool(((dense.reshape(-1, dense.shape[-1] // 4, 4) != 0).sum(-1) <= 2).all())


def to_mma_sp_metadata(meta: torch.Tensor) -> torch.Tensor:
    """(N, K/32) int32 canonical metadata -> (ceil(N/16), K/32, 16) int32 ``mma.sp`` registers.

    ``out[t, s, 2g + c] = lo16(meta[16t+g, s] >> 16c) | lo16(meta[16t+g+8, s] >> 16c) << 16``
    (module doc). Rows past N are padded with the valid pattern 0x4444 (their values are zero).
    """
    check_tensor(meta, "meta", ndim=2, dtype=torch.int32)
    n, steps = meta.shape
    tiles = math.ceil(n / MMA_TILE_ROWS)
    words = torch.full((tiles * MMA_TILE_ROWS, steps), MMA_PAD_WORD, dtype=torch.int64, device=meta.device)
    words[:n] = meta.to(torch.int64) & 0xFFFFFFFF
    words = words.reshape(tiles, 2, 8, steps)  # [t, h, g, s]: row 16t + 8h + g
    halves = torch.stack([words & 0xFFFF, words >> 16], dim=-1)  # [t, h, g, s, c]
    registers = halves[:, 0] | (halves[:, 1] << 16)  # [t, g, s, c]
    return to_int32_bits(registers.permute(0, 2, 1, 3).reshape(tiles, steps, 16).contiguous())


def from_mma_sp_metadata(meta_mma: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`to_mma_sp_metadata`: (ceil(N/16), K/32, 16) -> (N, K/32) int32."""
    tiles, steps, _ = meta_mma.shape
    registers = (meta_mma.to(torch.int64) & 0xFFFFFFFF).reshape(tiles, steps, 8, 2).permute(0, 2, 1, 3)
    rows = torch.stack([registers & 0xFFFF, registers >> 16], dim=1)  # [t, h, g, s, c]
    words = rows[..., 0] | (rows[..., 1] << 16)  # [t, h, g, s]
    return to_int32_bits(words.reshape(tiles * MMA_TILE_ROWS, steps)[:n].contiguous())


# ----------------------------------------------------------------------------- channel permutation


def _top2_sum(groups: torch.Tensor) -> torch.Tensor:
    """Sum over the last dim (size 4) of the 2 largest entries (entries are magnitudes >= 0)."""
    return groups.topk(2, dim=-1).values.sum(-1)


def retained_magnitude(weight: torch.Tensor, perm: torch.Tensor | None = None) -> float:
    """Σ|w| that :func:`prune_24` keeps, after permuting the columns by ``perm`` if given."""
    w = weight.detach().abs().to(torch.float64)
    if perm is not None:
        w = w[:, perm]
    return float(_top2_sum(w.reshape(w.shape[0], -1, 4)).sum())


def _balanced_start(magnitude: torch.Tensor) -> torch.Tensor:
    """Columns dealt to groups in snake order of decreasing L1 norm, so that every group gets
    one column from each quarter of the ranking (heavy columns stop competing in one group)."""
    k = magnitude.shape[1]
    ranked = torch.argsort(-magnitude.sum(0), stable=True)
    quarters = ranked.reshape(4, k // 4).clone()
    quarters[1::2] = quarters[1::2].flip(-1)  # snake: alternate direction per quarter
    return quarters.t().reshape(-1)


def _best_swap(groups: torch.Tensor, base: torch.Tensor, a: int, partners: torch.Tensor) -> tuple[float, int, int, int]:
    """Best (gain, partner group, slot in a, slot in partner) over swapping one column of group
    ``a`` with one column of each partner group. groups: (G, N, 4) magnitudes; base: (G,) kept sums."""
    ga = groups[a]  # (N, 4)
    gb = groups[partners]  # (P, N, 4)
    best = (0.0, -1, -1, -1)
    for p in range(4):
        for q in range(4):
            new_a = ga.unsqueeze(0).expand_as(gb).clone()
            new_a[..., p] = gb[..., q]
            new_b = gb.clone()
            new_b[..., q] = ga[:, p].unsqueeze(0)
            gain = _top2_sum(new_a).sum(-1) + _top2_sum(new_b).sum(-1) - base[a] - base[partners]
            value, where = gain.max(0)
            if float(value) > best[0]:
                best = (float(value), int(partners[where]), p, q)
    return best


def permute_for_24(weight: torch.Tensor, *, passes: int = 2, partners: int = 64, seed: int = 0) -> torch.Tensor:
    """A permutation ``perm`` of the K input channels such that pruning ``weight[:, perm]`` 2:4
    keeps at least as much magnitude as pruning ``weight`` (usually more).

    Search (after NVIDIA ASP's channel swaps): start from the better of the identity and a
    norm-balanced deal of columns to groups, then ``passes`` greedy passes over the groups; each
    group tries swapping each of its 4 columns with each column of up to ``partners`` other groups
    (drawn with ``seed``) and applies the swap with the largest strictly positive gain in retained
    magnitude. Deterministic; cost O(passes · G · partners · 16 · N) for G = K/4 groups.
    """
    _check_2d_weight(weight, "weight")
    check_finite(weight, "weight")
    check_positive(partners, "partners")
    magnitude = weight.detach().abs().to(torch.float64)
    n, k = magnitude.shape
    identity = torch.arange(k, device=weight.device)
    balanced = _balanced_start(magnitude)
    perm = balanced if retained_magnitude(weight, balanced) > retained_magnitude(weight) else identity
    num_groups = k // 4
    if num_groups < 2:
        return perm
    generator = torch.Generator().manual_seed(seed)
    groups = magnitude[:, perm].reshape(n, num_groups, 4).permute(1, 0, 2).contiguous()  # (G, N, 4)
    columns = perm.reshape(num_groups, 4).clone()
    base = _top2_sum(groups).sum(-1)
    for _ in range(passes):
        improved = False
        for a in range(num_groups):
            others = torch.randperm(num_groups - 1, generator=generator)[:partners].to(weight.device)
            others = others + (others >= a).long()  # skip a itself
            gain, b, p, q = _best_swap(groups, base, a, others)
            if b < 0 or gain <= 1e-12 * float(base.sum()):
                continue
            col_a, col_b = groups[a, :, p].clone(), groups[b, :, q].clone()
            groups[a, :, p], groups[b, :, q] = col_b, col_a
            columns[a, p], columns[b, q] = columns[b, q].clone(), columns[a, p].clone()
            base[a], base[b] = _top2_sum(groups[a]).sum(), _top2_sum(groups[b]).sum()
            improved = True
        if not improved:
            break
    return columns.reshape(-1)


def invert_permutation(perm: torch.Tensor) -> torch.Tensor:
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel(), device=perm.device, dtype=perm.dtype)
    return inverse


# ----------------------------------------------------------------------------- block-sparse rows


def check_block_size(block_size: int, n: int, k: int, name: str = "weight") -> None:
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size: expected one of {BLOCK_SIZES}, got {block_size!r}")
    check_divisible(n, block_size, f"{name}.shape[0] (N) for block_size {block_size}")
    check_divisible(k, block_size, f"{name}.shape[1] (K) for block_size {block_size}")


def block_norms(weight: torch.Tensor, block_size: int) -> torch.Tensor:
    """(N/bs, K/bs) L2 norms of the ``bs × bs`` blocks of an (N, K) weight (float64)."""
    n, k = weight.shape
    blocks = weight.detach().to(torch.float64).reshape(n // block_size, block_size, k // block_size, block_size)
    return blocks.pow(2).sum((1, 3)).sqrt()


def prune_blocks(weight: torch.Tensor, block_size: int, density: float) -> torch.Tensor:
    """(N/bs, K/bs) bool mask of the ``ceil(density · blocks)`` blocks with the largest L2 norm;
    ties go to the lower row-major block index (stable sort)."""
    check_tensor(weight, "weight", ndim=2, dtype=_FLOAT_DTYPES)
    check_block_size(block_size, *weight.shape)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density: expected a value in (0, 1], got {density!r}")
    check_finite(weight, "weight")
    norms = block_norms(weight, block_size)
    keep = math.ceil(density * norms.numel())
    order = torch.argsort(-norms.flatten(), stable=True)[:keep]
    mask = torch.zeros(norms.numel(), dtype=torch.bool, device=weight.device)
    mask[order] = True
    return mask.reshape(norms.shape)


def _blocks(weight: torch.Tensor, bs: int) -> torch.Tensor:
    """(N, K) -> (N/bs, K/bs, bs, bs) view: [block row, block col, row in block, col in block]."""
    n, k = weight.shape
    return weight.reshape(n // bs, bs, k // bs, bs).permute(0, 2, 1, 3)


def bsr_entry_rows(crow_indices: torch.Tensor, nnz: int) -> torch.Tensor:
    """(nnz,) int64 block row of every stored block (no data-dependent shapes)."""
    entry = torch.arange(nnz, device=crow_indices.device, dtype=torch.int64)
    return torch.searchsorted(crow_indices[1:].to(torch.int64), entry, right=True)


def to_bsr(weight: torch.Tensor, block_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense (N, K) weight and (N/bs, K/bs) block mask -> (crow_indices, col_indices, values).

    Every masked-in block is stored (even if all its weights are zero), so nnz = block_mask.sum().
    """
    check_tensor(weight, "weight", ndim=2, dtype=_FLOAT_DTYPES)
    check_tensor(block_mask, "block_mask", ndim=2, dtype=torch.bool)
    n, k = weight.shape
    rows, cols = block_mask.shape
    if rows == 0 or cols == 0 or n % rows or k % cols or n // rows != k // cols:
        raise ValueError(
            f"block_mask: expected shape (N/bs, K/bs) for square blocks of weight {tuple(weight.shape)}, "
            f"got {tuple(block_mask.shape)}"
        )
    bs = n // rows
    check_block_size(bs, n, k)
    crow = torch.zeros(rows + 1, dtype=torch.int32, device=weight.device)
    crow[1:] = block_mask.sum(1).cumsum(0)
    block_row, block_col = block_mask.nonzero(as_tuple=True)  # row-major order
    return crow, block_col.to(torch.int32), _blocks(weight.detach(), bs)[block_row, block_col].contiguous()


def bsr_blocks_of(dense: torch.Tensor, crow_indices: torch.Tensor, col_indices: torch.Tensor, bs: int) -> torch.Tensor:
    """The (nnz, bs, bs) blocks of a dense (N, K) matrix at a BSR structure's positions."""
    rows = bsr_entry_rows(crow_indices, col_indices.shape[0])
    return _blocks(dense, bs)[rows, col_indices.to(torch.int64)]


def from_bsr(
    crow_indices: torch.Tensor, col_indices: torch.Tensor, values: torch.Tensor, n: int, k: int
) -> torch.Tensor:
    """(crow_indices, col_indices, values) -> the dense (N, K) weight. No data-dependent shapes
    (traceable on meta tensors)."""
    bs = values.shape[-1]
    rows, cols = n // bs, k // bs
    flat = bsr_entry_rows(crow_indices, col_indices.shape[0]) * cols + col_indices.to(torch.int64)
    blocks = torch.zeros(rows * cols, bs, bs, dtype=values.dtype, device=values.device)
    blocks = blocks.index_put((flat,), values)
    return blocks.reshape(rows, cols, bs, bs).permute(0, 2, 1, 3).reshape(n, k)


def check_bsr_structure(
    crow_indices: torch.Tensor, col_indices: torch.Tensor, block_rows: int, block_cols: int
) -> None:
    """Validate BSR indices against a (block_rows, block_cols) grid (reads data: call it when a
    structure is built or loaded, not per matmul)."""
    check_tensor(crow_indices, "crow_indices", shape=(block_rows + 1,), dtype=torch.int32)
    check_tensor(col_indices, "col_indices", ndim=1, dtype=torch.int32)
    crow = crow_indices.to(torch.int64).cpu()
    cols = col_indices.to(torch.int64).cpu()
    if crow[0] != 0 or crow[-1] != cols.numel() or bool((crow[1:] < crow[:-1]).any()):
        raise ValueError(
            f"crow_indices: expected a non-decreasing sequence from 0 to nnz={cols.numel()}, got {crow.tolist()[:8]}..."
        )
    if cols.numel() and (int(cols.min()) < 0 or int(cols.max()) >= block_cols):
        raise ValueError(
            f"col_indices: expected block columns in [0, {block_cols}), got {int(cols.min())}..{int(cols.max())}"
        )
    rows = bsr_entry_rows(crow, cols.numel())
    if cols.numel() > 1:
        same_row = rows[1:] == rows[:-1]
        if bool((same_row & (cols[1:] <= cols[:-1])).any()):
            raise ValueError("col_indices: expected strictly increasing block columns within each block row")

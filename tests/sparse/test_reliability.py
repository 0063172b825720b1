"""Issue 11 for slimtorch.sparse: stored structures are validated at load (2:4 meta, perm, BSR
indices, dtypes), ``bsr_mm`` refuses bad indices instead of reading out of bounds, a non-finite x
row gives an all-NaN output row on every path (the kernels skip pruned weights, so 0·NaN would
vanish otherwise), zero-size batches work. Each test failed on the code before its fix."""

import pytest
import torch
from torch import nn

from slimtorch.core import reference_only
from slimtorch.core.testing import assert_exact, randn
from slimtorch.sparse import BlockSparseLinear, Sparse24Config, SparseLinear24, bsr_mm, sparse24_mm, sparsify_
from slimtorch.sparse.formats import compress_24, pack_meta, prune_24, to_bsr, unpack_meta

K, N = 40, 6


def _linear(k=K, n=N, seed=0):
    linear = nn.Linear(k, n)
    with torch.no_grad():
        linear.weight.copy_(randn((n, k), seed=seed))
    return linear


def _assert_refused_and_unchanged(layer, state, error, message):
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    with pytest.raises(error, match=message):
        layer.load_state_dict(state)
    for k, v in layer.state_dict().items():
        assert_exact(v, before[k], name=k)


# ----------------------------------------------------------------------------- 2:4 loading


def test_meta_with_two_slots_on_one_column_is_refused():
    """(b): slots (1, 1) used to load; the reference then summed both values into one column while
    the kernel kept only the second."""
    layer = SparseLinear24.from_dense(_linear())
    state = layer.state_dict()
    idx = unpack_meta(state["meta"], K // 2)
    idx[3, 4:6] = torch.tensor([1, 1])  # row 3, group 2
    state["meta"] = pack_meta(idx)
    _assert_refused_and_unchanged(
        layer, state, ValueError, r"meta: expected two distinct .* got slots \(1, 1\) in row 3"
    )


def test_meta_slots_out_of_order_and_padding_bits_are_refused():
    layer = SparseLinear24.from_dense(_linear())
    state = layer.state_dict()
    idx = unpack_meta(state["meta"], K // 2)
    idx[0, 0:2] = torch.tensor([3, 1])
    state["meta"] = pack_meta(idx)
    _assert_refused_and_unchanged(layer, state, ValueError, r"got slots \(3, 1\) in row 0, group 0")
    state = layer.state_dict()
    state["meta"] = state["meta"].clone()
    state["meta"][:, -1] |= 1 << 30  # K/2 = 20 indices: the last word uses 4 of its 16
    _assert_refused_and_unchanged(layer, state, ValueError, "unused bits of each row's last word")


@pytest.mark.parametrize(
    ("perm", "message"),
    [
        (lambda k: torch.zeros(k, dtype=torch.int64), r"perm: expected a permutation of 0\.\.39"),
        (lambda k: torch.arange(k) + 1, r"perm: expected a permutation"),
        (lambda k: torch.arange(k - 1), r"perm: expected shape \(40\), got \(39,\)"),
        (lambda k: torch.arange(k).float(), "perm: expected dtype one of"),
    ],
)
def test_perm_must_be_a_permutation(perm, message):
    """(b): a perm of all zeros used to load and gather column 0 everywhere."""
    layer = SparseLinear24.from_dense(_linear(), permute=True)
    state = layer.state_dict()
    state["perm"] = perm(K)
    _assert_refused_and_unchanged(layer, state, (ValueError, TypeError), message)


@pytest.mark.parametrize(
    ("key", "corrupt", "error", "message"),
    [
        ("meta", lambda t: t.float(), TypeError, "meta: expected dtype int32, got float32"),
        ("meta", lambda t: t[:, :1], ValueError, r"meta: expected shape \(6, 2\)"),
        ("values", lambda t: t.to(torch.int32), TypeError, "values: expected dtype one of"),
        ("values", lambda t: t.index_fill(1, torch.tensor([2]), float("nan")), ValueError, "values: expected finite"),
        ("bias", lambda t: t.fill_(float("inf")), ValueError, "bias: expected finite"),
    ],
)
def test_24_stored_tensors_checked(key, corrupt, error, message):
    """(e): a float meta used to be cast to int32 silently."""
    layer = SparseLinear24.from_dense(_linear())
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state[key] = corrupt(state[key])
    _assert_refused_and_unchanged(layer, state, error, message)


def test_valid_24_state_dicts_round_trip():
    for permute in (False, True):
        src = SparseLinear24.from_dense(_linear(seed=1), permute=permute)
        dst = SparseLinear24(K, N, permuted=permute)
        dst.load_state_dict(src.state_dict())
        x = randn((3, K), seed=2)
        assert_exact(dst(x), src(x))


# ----------------------------------------------------------------------------- BSR


def _bsr_layer():
    return BlockSparseLinear.from_dense(_linear(k=48, n=32), block_size=16, density=0.5)


@pytest.mark.parametrize(
    ("key", "corrupt", "error", "message"),
    [
        ("col_indices", lambda t: t.float(), TypeError, "col_indices: expected dtype int32, got float32"),
        ("crow_indices", lambda t: t.to(torch.int64), TypeError, "crow_indices: expected dtype int32"),
        ("col_indices", lambda t: t + 5, ValueError, r"col_indices: expected block columns in \[0, 3\)"),
        ("crow_indices", lambda t: t.flip(0), ValueError, "crow_indices: expected a non-decreasing sequence"),
        ("col_indices", lambda t: t[:-1], ValueError, "col_indices: expected nnz=3 entries"),
        ("values", lambda t: t.index_fill(0, torch.tensor([0]), float("nan")), ValueError, "values: expected finite"),
    ],
)
def test_bsr_stored_tensors_checked_before_loading(key, corrupt, error, message):
    layer = _bsr_layer()
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state[key] = corrupt(state[key])
    _assert_refused_and_unchanged(layer, state, error, message)


def _bsr_operands():
    weight = randn((32, 48), seed=4)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    return to_bsr(weight, mask)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda crow, col: (crow.index_fill(0, torch.tensor([1]), 1000), col),
            "crow_indices: expected a non-decreasing",
        ),
        (lambda crow, col: (crow.index_fill(0, torch.tensor([0]), -4), col), "crow_indices: expected a non-decreasing"),
        (lambda crow, col: (crow, col.index_fill(0, torch.tensor([1]), 7)), r"col_indices: expected block columns in"),
        (lambda crow, col: (crow, col.index_fill(0, torch.tensor([1]), -1)), r"col_indices: expected block columns in"),
    ],
    ids=["crow-past-nnz", "crow0-negative", "col-past-K", "col-negative"],
)
def test_bsr_mm_refuses_bad_indices(edit, message):
    """An out-of-range crow used to segfault the interpreter; a bad column read out of bounds."""
    crow, col, values = _bsr_operands()
    crow, col = edit(crow, col)
    with pytest.raises(ValueError, match=message):
        bsr_mm(randn((3, 48), seed=5), crow, col, values)


# ----------------------------------------------------------------------------- NaN / Inf policy and empty batches


def _ops():
    weight = randn((N, K), seed=6)
    values, meta = compress_24(weight * prune_24(weight))
    crow, col, bvalues = _bsr_operands()
    return {
        "sparse24_mm": (lambda x: sparse24_mm(x, values, meta), K),
        "bsr_mm": (lambda x: bsr_mm(x, crow, col, bvalues), 48),
    }


@pytest.mark.parametrize("op", ["sparse24_mm", "bsr_mm"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_row_gives_nan_row_even_where_weights_are_pruned(op, bad):
    fn, k = _ops()[op]
    x = randn((5, k), seed=7)
    x[1] = 0.0
    x[1, 2] = bad  # column 2 is pruned in some rows of W (2:4) / lies in a pruned block (BSR, block row 1)
    x[3, k - 1] = bad
    out = fn(x)
    with reference_only():
        ref = fn(x)
    for y in (out, ref):
        assert bool(y[[1, 3]].isnan().all()), f"{op}: rows with {bad} must be all NaN, got {y[[1, 3]]}"
        assert bool(torch.isfinite(y[[0, 2, 4]]).all())
    torch.testing.assert_close(out[[0, 2, 4]], ref[[0, 2, 4]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["sparse24_mm", "bsr_mm"])
def test_ops_take_an_empty_batch(op):
    fn, k = _ops()[op]
    assert fn(torch.randn(0, k)).shape[0] == 0


@pytest.mark.parametrize(
    "layer",
    [lambda: SparseLinear24.from_dense(_linear()), _bsr_layer],
    ids=["SparseLinear24", "BlockSparseLinear"],
)
def test_layers_take_an_empty_batch(layer):
    module = layer()
    out = module(torch.randn(2, 0, module.in_features))
    assert out.shape == (2, 0, module.out_features)


@pytest.mark.parametrize(
    ("build", "bad"),
    [
        (lambda: SparseLinear24(0, 4), "in_features"),
        (lambda: SparseLinear24(8, 0), "out_features"),
        (lambda: BlockSparseLinear(0, 16, block_size=16), "in_features"),
        (lambda: BlockSparseLinear(16, 0, block_size=16), "out_features"),
    ],
)
def test_zero_size_layers_refused(build, bad):
    with pytest.raises(ValueError, match=rf"{bad}: expected a positive int, got 0"):
        build()


def test_sparsify_refuses_non_modules():
    with pytest.raises(TypeError, match=r"model: expected a torch.nn.Module, got list"):
        sparsify_([nn.Linear(8, 8)], Sparse24Config())

"""Property-based checks for slimtorch.sparse (hypothesis, the suite's derandomized "ci" profile):

- the 2:4 and BSR kernels against their references on random small odd shapes, dtypes, strided
  (non-contiguous) inputs, random sparsity patterns and poisoned (NaN/±Inf) rows;
- SparseLinear24 / BlockSparseLinear state_dicts with random corruptions (random metadata words, a
  random perm, shuffled or shifted BSR indices, other dtypes, missing and extra keys): an error naming
  the key, or a load after which the kernel and the reference still agree. Never a crash.
"""

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from torch import nn

from slimtorch.core import reference_only
from slimtorch.core.testing import assert_rel_close, assert_rows_match, linear_map, rel_bound
from slimtorch.sparse import BlockSparseLinear, SparseLinear24, bsr_mm, sparse24_mm
from slimtorch.sparse.formats import compress_24, prune_24, to_bsr

DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x(m, k, dtype, seed, strided, poison):
    g = _gen(seed)
    x = torch.randn(m, 2 * k, generator=g)[:, ::2] if strided else torch.randn(m, k, generator=g)
    x = x.to(dtype)
    for i, row in enumerate(poison):
        if row < m:
            x[row, (5 * row + 3) % k] = (float("nan"), float("inf"))[i % 2]
    return x


def _check(out, ref, x, k, dtype, reference, bias=None):
    """NaN rows, and the finite rows by the forward-error bound ‖out − ref‖ ≤ rel_bound · ‖|x|·|W|ᵀ + |b|‖
    (robust where outputs cancel), W the reference's own matrix (``reference``: x ↦ x·Wᵀ, no bias)."""
    assert out.dtype == dtype
    weight = linear_map(reference, x.shape[1])
    event(f"{assert_rows_match(out, ref, x, rel_bound(dtype, k), weight=weight, bias=bias)} non-finite rows")


@given(
    m=st.integers(1, 20),
    groups=st.integers(1, 10),
    n=st.integers(1, 40),
    dtype=DTYPES,
    strided=st.booleans(),
    poison=st.lists(st.integers(0, 19), max_size=2),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sparse24_kernel_matches_reference(m, groups, n, dtype, strided, poison, bias, seed):
    k = 4 * groups
    weight = torch.randn(n, k, generator=_gen(seed + 1))
    values, meta = compress_24(weight * prune_24(weight))
    b = torch.randn(n, generator=_gen(seed + 2)).to(dtype) if bias else None
    x = _x(m, k, dtype, seed, strided, poison)
    out = sparse24_mm(x, values.to(dtype), meta, b)
    values64 = values.to(dtype).double()
    ref = sparse24_mm.get_reference()(x.double(), values64, meta, None if b is None else b.double())
    _check(out, ref, x, k, dtype, lambda e: sparse24_mm.get_reference()(e, values64, meta, None), b)


@given(
    m=st.integers(1, 12),
    rows=st.integers(1, 2),
    cols=st.integers(1, 2),
    density=st.floats(0.0, 1.0),
    dtype=DTYPES,
    strided=st.booleans(),
    poison=st.lists(st.integers(0, 11), max_size=2),
    seed=st.integers(0, 2**16),
)
def test_bsr_kernel_matches_reference(m, rows, cols, density, dtype, strided, poison, seed):
    bs = 16
    n, k = rows * bs, cols * bs
    mask = torch.rand(rows, cols, generator=_gen(seed + 3)) < density
    crow, col, values = to_bsr(torch.randn(n, k, generator=_gen(seed + 1)), mask)
    x = _x(m, k, dtype, seed, strided, poison)
    out = bsr_mm(x, crow, col, values.to(dtype))
    ref = bsr_mm.get_reference()(x.double(), crow, col, values.to(dtype).double())
    _check(out, ref, x, k, dtype, lambda e: bsr_mm.get_reference()(e, crow, col, values.to(dtype).double()))


# ----------------------------------------------------------------------------- corrupted state_dicts


def _linear(k, n, seed):
    torch.manual_seed(seed)
    return nn.Linear(k, n)


def _load_then_agree(layer, state):
    """Load ``state``: an error naming a key (ValueError/TypeError/RuntimeError for missing or extra
    keys), or the kernel and the reference agree on the loaded layer."""
    try:
        layer.load_state_dict(state)
    except (ValueError, TypeError, RuntimeError) as error:
        event(f"{type(error).__name__} naming the key")
        assert any(key in str(error) for key in ("meta", "perm", "values", "bias", "indices", "key")), error
        return False
    event("loaded; kernel == reference")
    x = torch.randn(3, layer.in_features, generator=_gen(0))
    out = layer(x)
    with reference_only():
        ref = layer(x)
    assert_rel_close(out, ref.double(), rel_bound(torch.float32, layer.in_features))
    return True


@pytest.mark.parametrize("how", ["meta-word", "perm", "dtype", "drop", "extra"])
@given(
    word=st.integers(-(2**31), 2**31 - 1),
    position=st.integers(0, 200),
    seed=st.integers(0, 2**16),
)
def test_sparse24_state_dict_corruptions(how, word, position, seed):
    layer = SparseLinear24.from_dense(_linear(40, 7, seed), permute=True)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    if how == "meta-word":
        state["meta"].view(-1)[position % state["meta"].numel()] = word
    elif how == "perm":
        g = _gen(seed)
        state["perm"] = torch.randint(0, 40, (40,), generator=g) if word % 2 else torch.randperm(40, generator=g)
    elif how == "dtype":
        key = sorted(state)[position % len(state)]
        state[key] = state[key].to(torch.float32 if not state[key].dtype.is_floating_point else torch.int32)
    elif how == "drop":
        state.pop(sorted(state)[position % len(state)])
    else:
        state["extra"] = torch.zeros(1)
    _load_then_agree(layer, state)


@pytest.mark.parametrize("how", ["col-shift", "col-value", "crow-value", "dtype", "drop"])
@given(
    value=st.integers(-5, 8),
    position=st.integers(0, 20),
    seed=st.integers(0, 2**16),
)
def test_bsr_state_dict_corruptions(how, value, position, seed):
    layer = BlockSparseLinear.from_dense(_linear(48, 32, seed), block_size=16, density=0.5)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    if how == "col-shift":
        state["col_indices"] += value
    elif how == "col-value":
        state["col_indices"][position % state["col_indices"].numel()] = value
    elif how == "crow-value":
        state["crow_indices"][position % state["crow_indices"].numel()] = value
    elif how == "dtype":
        key = sorted(state)[position % len(state)]
        state[key] = state[key].to(torch.float32 if not state[key].dtype.is_floating_point else torch.int32)
    else:
        state.pop(sorted(state)[position % len(state)])
    _load_then_agree(layer, state)


def test_bsr_properties_reach_empty_structures():
    """density 0 (no stored block) is among the generated cases: the output is the bias alone."""
    crow, col, values = to_bsr(torch.randn(16, 16), torch.zeros(1, 1, dtype=torch.bool))
    out = bsr_mm(torch.randn(3, 16), crow, col, values, torch.ones(16))
    assert torch.equal(out, torch.ones(3, 16))


pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered")

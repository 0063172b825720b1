"""sparse24.py: the Triton 2:4 kernels (gather GEMV, dense-tile + tl.dot, split-K) against the
reference in float64, gradients, argument errors, fake tensors and torch.compile."""

import pytest
import torch

from slimtorch.core import gemm
from slimtorch.core.testing import assert_rel_close, randn, rel_bound
from slimtorch.core.tuning import autotune_key
from slimtorch.sparse import formats as F
from slimtorch.sparse import sparse24
from slimtorch.sparse.sparse24 import sparse24_mm


def make_operands(m, n, k, dtype, device, *, bias=True, seed=0):
    weight = randn((n, k), seed=seed)
    values, meta = F.compress_24(weight * F.prune_24(weight))
    x = randn((m, k), dtype=dtype, device=device, seed=seed + 1)
    b = randn((n,), dtype=dtype, device=device, seed=seed + 2) if bias else None
    return x, values.to(device=device, dtype=dtype), meta.to(device), b


def reference64(x, values, meta, bias, activation):
    b = None if bias is None else bias.double()
    return sparse24_mm.get_reference()(x.double(), values.double(), meta, b, activation)


# (path, M, N, K, dtype, split_k, activation, bias): every kernel, dtype, split and epilogue once.
CASES = [
    ("gemv", 1, 37, 100, torch.float16, 0, "none", True),
    ("gemv", 3, 45, 68, torch.bfloat16, 3, "relu", False),
    ("gemv", 2, 19, 36, torch.float32, 2, "gelu", True),
    ("gemv", 3, 21, 356, torch.float16, 0, "silu", True),  # several full tiles of the K loop, then a tail
    ("mm", 17, 45, 100, torch.float16, 0, "silu", True),
    ("mm", 33, 21, 96, torch.bfloat16, 2, "hardswish", True),
    ("mm", 7, 70, 132, torch.float32, 0, "relu6", False),
    ("mm", 5, 37, 68, torch.float32, 3, "none", True),
]


@pytest.mark.parametrize(("path", "m", "n", "k", "dtype", "split_k", "activation", "bias"), CASES)
def test_kernel_matches_reference(device, monkeypatch, path, m, n, k, dtype, split_k, activation, bias):
    # Pin the path whatever the (unmeasured) threshold says.
    monkeypatch.setattr(sparse24, "GEMV_MAX_M", 16 if path == "gemv" else 0)
    x, values, meta, b = make_operands(m, n, k, dtype, device, bias=bias, seed=m + n)
    calls = {"gemv": 0, "mm": 0}
    splits = []
    for name, kernel in (("gemv", "_sparse24_gemv_kernel"), ("mm", "_sparse24_mm_kernel")):
        original = getattr(sparse24, kernel)

        class Spy:
            def __getitem__(self, grid, name=name, original=original):
                calls[name] += 1
                splits.append(grid({"BLOCK_M": 16, "BLOCK_N": 16})[1])  # program axis 1: the K splits
                return original[grid]

        monkeypatch.setattr(sparse24, kernel, Spy())
    out = sparse24_mm(x, values, meta, b, activation, split_k)
    # one launch, the reduction included; an explicit split_k gives that many ranges of 32 columns here
    assert calls[path] == 1 and calls["gemv" if path == "mm" else "mm"] == 0
    assert splits == [max(split_k, 1)]
    assert out.shape == (m, n) and out.dtype == dtype
    assert_rel_close(out, reference64(x, values, meta, b, activation), rel_bound(dtype, k, device=device))


def test_split_plan_explicit_and_automatic():
    cpu = torch.device("cpu")  # the interpreter's documented SM count (slimtorch.core.gemm)
    assert sparse24.split_plan(1, 37, 100, 3, cpu, 0) == (2, 64)  # explicit: ranges of 32-column multiples
    assert sparse24.split_plan(1, 37, 96, 3, cpu, 0) == (3, 32)
    auto = sparse24.split_plan(1, 37, 4096, 0, cpu, 1e9)
    assert auto.splits == 2 * gemm.sm_count(cpu) and auto.k_per_split % sparse24.SPLIT_K_GRANULE == 0
    assert sparse24.split_plan(1, 37, 4096, 0, cpu, 8 * 37 * 3 / sparse24.SPLIT_K_MAX_PARTIAL_BYTES_RATIO).splits == 3
    assert sparse24.split_plan(sparse24.SPLIT_K_MAX_M + 1, 64, 4096, 0, cpu, 1e9).splits == 1


def test_auto_split_k_runs_in_one_launch(device):
    """split_k=0 on a shape the planner splits: partials reduced in the same launch, counters left zero."""
    x, values, meta, b = make_operands(2, 19, 1024, torch.float32, device, seed=3)
    weight_bytes = values.numel() * 4 + meta.numel() * 4
    assert sparse24.split_plan(2, 19, 1024, 0, torch.device(device), weight_bytes).splits > 1 or device == "cuda"
    out = sparse24_mm(x, values, meta, b, "relu")
    assert_rel_close(out, reference64(x, values, meta, b, "relu"), rel_bound(torch.float32, 1024, device=device))
    assert int(gemm.splitk_counters(device, 1).abs().sum()) == 0


@pytest.mark.parametrize("path", ["gemv", "mm"])
def test_autotune_key_buckets_m(monkeypatch, path):
    monkeypatch.setattr(sparse24, "GEMV_MAX_M", 64 if path == "gemv" else 0)
    kernel = getattr(sparse24, f"_sparse24_{path}_kernel")
    keys = []
    monkeypatch.setattr(kernel, "run", lambda *a, **kw: keys.append(autotune_key(kernel, a, kw)))
    for m in (9, 13, 17):
        x, values, meta, b = make_operands(m, 8, 16, torch.float32, "cpu")
        sparse24_mm(x, values, meta, b, "none", 1)
    assert keys[0] == keys[1] != keys[2]


def test_empty_batch(device):
    x, values, meta, b = make_operands(0, 9, 16, torch.float16, device)
    assert sparse24_mm(x, values, meta, b).shape == (0, 9)


@pytest.mark.parametrize(("m", "activation"), [(3, "silu"), (17, "none")])
def test_gradients_match_autograd_through_the_reference(device, m, activation):
    x, values, meta, b = make_operands(m, 19, 36, torch.float32, device, seed=5)
    grad_out = randn((m, 19), device=device, seed=9)
    leaves = [t.clone().requires_grad_() for t in (x, values, b)]
    sparse24_mm(leaves[0], leaves[1], meta, leaves[2], activation).backward(grad_out)
    expected = [t.detach().double().requires_grad_() for t in (x, values, b)]
    sparse24_mm.get_reference()(expected[0], expected[1], meta, expected[2], activation).backward(grad_out.double())
    for name, got, want in zip(("x", "values", "bias"), leaves, expected, strict=True):
        assert_rel_close(got.grad, want.grad, 1e-5, name=f"grad {name}")


def test_argument_errors():
    x, values, meta, b = make_operands(2, 8, 16, torch.float32, "cpu")
    with pytest.raises(ValueError, match=r"x.shape\[1\] \(K\): expected a multiple of 4, got 18"):
        sparse24_mm(torch.zeros(2, 18), values, meta)
    with pytest.raises(TypeError, match=r"x: expected dtype one of \(float16, bfloat16, float32\), got int32"):
        sparse24_mm(x.to(torch.int32), values, meta)
    with pytest.raises(TypeError, match=r"values: expected dtype float32, got float16"):
        sparse24_mm(x, values.half(), meta)
    with pytest.raises(
        ValueError, match=r"values: expected shape \(N, K/2\) = \(\*, 8\) for x with K=16, got \(8, 7\)"
    ):
        sparse24_mm(x, values[:, :7], meta)
    with pytest.raises(ValueError, match=r"meta: expected shape \(8, 1\)"):
        sparse24_mm(x, values, meta[:4])
    with pytest.raises(TypeError, match=r"meta: expected dtype int32, got int64"):
        sparse24_mm(x, values, meta.long())
    with pytest.raises(ValueError, match=r"bias: expected shape \(8\)"):
        sparse24_mm(x, values, meta, b[:5])
    with pytest.raises(ValueError, match=r"activation: expected one of .*got 'tanh'"):
        sparse24_mm(x, values, meta, b, "tanh")
    with pytest.raises(ValueError, match=r"split_k: expected 0 \(automatic\) or a positive number of splits, got -1"):
        sparse24_mm(x, values, meta, b, "none", -1)
    with pytest.raises(ValueError, match=r"values: expected a tensor on cpu \(the device of x\), got one on meta"):
        sparse24_mm(x, values.to("meta"), meta)


def test_fake_tensor_shapes():
    x, values, meta, b = (t.to("meta") for t in make_operands(5, 12, 64, torch.float16, "cpu"))
    out = sparse24_mm(x, values, meta, b, "relu")
    assert out.device.type == "meta" and out.shape == (5, 12) and out.dtype == torch.float16


def test_opcheck(device):
    x, values, meta, b = make_operands(3, 12, 32, torch.float32, device)
    torch.library.opcheck(sparse24_mm, (x, values, meta, b, "relu", 0), test_utils=("test_schema", "test_faketensor"))


def test_compiles_fullgraph(device):
    x, values, meta, b = make_operands(3, 12, 32, torch.float32, device)
    fn = torch.compile(lambda a: sparse24_mm(a, values, meta, b, "relu") * 2, fullgraph=True, backend="aot_eager")
    assert_rel_close(fn(x), 2 * reference64(x, values, meta, b, "relu"), rel_bound(torch.float32, 32, device=device))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_gemv_nonfinite_row_gives_nan_row(device, bad):
    """The GEMV skips pruned weights (0·NaN never happens): a NaN / Inf anywhere in a row of x still gives
    an all-NaN output row (core's row policy), the other row is untouched."""
    m = sparse24.GEMV_MAX_M
    x, values, meta, b = make_operands(m, 23, 100, torch.float16, device, seed=11)
    x[m - 1, 5] = bad
    out = sparse24_mm(x, values, meta, b, "relu")
    assert bool(out[m - 1].isnan().all())
    good = slice(0, m - 1)
    expected = reference64(x[good], values, meta, b, "relu")
    assert_rel_close(out[good], expected, rel_bound(torch.float16, 100, device=device))

"""bsr.py: the Triton BSR kernel against the reference in float64, gradients, errors, fake, compile."""

import pytest
import torch

from slimtorch.core.testing import assert_rel_close, randn, rel_bound
from slimtorch.core.tuning import autotune_key
from slimtorch.sparse import bsr
from slimtorch.sparse import formats as F
from slimtorch.sparse.bsr import bsr_mm


def make_operands(m, n, k, block_size, density, dtype, device, *, bias=True, seed=0):
    weight = randn((n, k), seed=seed)
    crow, col, values = F.to_bsr(weight, F.prune_blocks(weight, block_size, density))
    x = randn((m, k), dtype=dtype, device=device, seed=seed + 1)
    b = randn((n,), dtype=dtype, device=device, seed=seed + 2) if bias else None
    return x, crow.to(device), col.to(device), values.to(device=device, dtype=dtype), b


def reference64(x, crow, col, values, bias, activation):
    b = None if bias is None else bias.double()
    return bsr_mm.get_reference()(x.double(), crow, col, values.double(), b, activation)


# (M, N, K, block, density, dtype, activation, bias): every block size and dtype; density 0.25
# leaves block rows without any stored block (they must still write act(bias)).
CASES = [
    (1, 48, 80, 16, 0.25, torch.float16, "relu", True),
    (41, 64, 96, 32, 0.5, torch.bfloat16, "silu", True),
    (17, 128, 64, 64, 0.5, torch.float32, "none", False),
    (3, 32, 64, 16, 1.0, torch.float32, "gelu", True),
]


@pytest.mark.parametrize(("m", "n", "k", "block_size", "density", "dtype", "activation", "bias"), CASES)
def test_kernel_matches_reference(device, m, n, k, block_size, density, dtype, activation, bias):
    x, crow, col, values, b = make_operands(m, n, k, block_size, density, dtype, device, bias=bias, seed=m)
    out = bsr_mm(x, crow, col, values, b, activation)
    assert out.shape == (m, n) and out.dtype == dtype
    assert_rel_close(out, reference64(x, crow, col, values, b, activation), rel_bound(dtype, k, device=device))


def test_empty_block_rows_exist_in_the_cases():
    _, crow, _, _, _ = make_operands(1, 48, 80, 16, 0.25, torch.float16, "cpu", seed=1)
    assert bool((crow[1:] == crow[:-1]).any())


def test_autotune_key_buckets_m(monkeypatch):
    kernel = bsr._bsr_mm_kernel
    keys = []
    monkeypatch.setattr(kernel, "run", lambda *a, **kw: keys.append(autotune_key(kernel, a, kw)))
    for m in (33, 47, 65):
        bsr_mm(*make_operands(m, 32, 32, 16, 0.5, torch.float32, "cpu"))
    assert keys[0] == keys[1] != keys[2]


def test_gradients_match_autograd_through_the_reference(device):
    x, crow, col, values, b = make_operands(5, 32, 48, 16, 0.5, torch.float32, device, seed=2)
    grad_out = randn((5, 32), device=device, seed=3)
    leaves = [t.clone().requires_grad_() for t in (x, values, b)]
    bsr_mm(leaves[0], crow, col, leaves[1], leaves[2], "hardswish").backward(grad_out)
    expected = [t.detach().double().requires_grad_() for t in (x, values, b)]
    bsr_mm.get_reference()(expected[0], crow, col, expected[1], expected[2], "hardswish").backward(grad_out.double())
    for name, got, want in zip(("x", "values", "bias"), leaves, expected, strict=True):
        assert_rel_close(got.grad, want.grad, 1e-5, name=f"grad {name}")


def test_argument_errors():
    x, crow, col, values, b = make_operands(2, 32, 32, 16, 0.5, torch.float32, "cpu")
    with pytest.raises(ValueError, match=r"x.shape\[1\] \(K\) for block size 16: expected a multiple of 16, got 40"):
        bsr_mm(torch.zeros(2, 40), crow, col, values)
    with pytest.raises(
        ValueError, match=r"values: expected shape \(nnz, bs, bs\) with bs in \(16, 32, 64\), got \(2, 8, 8\)"
    ):
        bsr_mm(x, crow, col, values[:, :8, :8])
    with pytest.raises(TypeError, match=r"values: expected dtype float32, got float16"):
        bsr_mm(x, crow, col, values.half())
    with pytest.raises(TypeError, match=r"crow_indices: expected dtype int32, got int64"):
        bsr_mm(x, crow.long(), col, values)
    with pytest.raises(ValueError, match=r"col_indices: expected shape \(2\)"):
        bsr_mm(x, crow, col[:1], values)
    with pytest.raises(ValueError, match=r"bias: expected shape \(32\)"):
        bsr_mm(x, crow, col, values, b[:16])
    with pytest.raises(ValueError, match=r"activation: expected one of"):
        bsr_mm(x, crow, col, values, b, "swish")
    with pytest.raises(ValueError, match=r"crow_indices: expected shape \(N/bs \+ 1,\) with N >= bs"):
        bsr_mm(x, crow[:1], col, values)


def test_fake_tensor_shapes():
    x, crow, col, values, b = (t.to("meta") for t in make_operands(7, 64, 32, 32, 0.5, torch.bfloat16, "cpu"))
    out = bsr_mm(x, crow, col, values, b)
    assert out.device.type == "meta" and out.shape == (7, 64) and out.dtype == torch.bfloat16


def test_opcheck(device):
    args = make_operands(3, 32, 32, 16, 0.5, torch.float32, device)
    torch.library.opcheck(bsr_mm, (*args, "relu"), test_utils=("test_schema", "test_faketensor"))


def test_compiles_fullgraph(device):
    x, crow, col, values, b = make_operands(3, 32, 32, 16, 0.5, torch.float32, device)
    fn = torch.compile(lambda a: bsr_mm(a, crow, col, values, b) + 1, fullgraph=True, backend="aot_eager")
    assert_rel_close(
        fn(x), reference64(x, crow, col, values, b, "none") + 1, rel_bound(torch.float32, 32, device=device)
    )

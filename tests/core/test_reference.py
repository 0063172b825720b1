import torch

from slimtorch.core.activations import activation_reference
from slimtorch.core.reference import compute_dtype, linear_reference
from slimtorch.core.testing import assert_rel_close, randn


def test_compute_dtype():
    assert compute_dtype(torch.float64) == torch.float64
    assert {compute_dtype(d) for d in (torch.float32, torch.float16, torch.bfloat16)} == {torch.float32}


def test_linear_reference_accumulates_in_fp32_and_returns_x_dtype():
    x, w, b = randn((5, 7), dtype=torch.float16, seed=1), randn((3, 7), seed=2), randn((3,), seed=3)
    out = linear_reference(x, w, b, "relu6")
    assert out.dtype == torch.float16
    expected = activation_reference(x.double() @ w.double().t() + b.double(), "relu6")
    assert_rel_close(out, expected, 1e-3)
    assert linear_reference(x.double(), w, None).dtype == torch.float64

import pytest
import torch

from slimtorch.core import checks


def test_accepts_valid_tensor_and_returns_it():
    x = torch.zeros(3, 5)
    assert checks.check_tensor(x, "x", ndim=2, dtype=torch.float32, device="cpu", contiguous=True) is x


def test_rejects_non_tensor_with_type_error():
    with pytest.raises(TypeError, match=r"weight: expected a torch.Tensor, got list"):
        checks.check_tensor([1, 2], "weight")


def test_dtype_message_names_expected_and_received():
    with pytest.raises(TypeError, match=r"x: expected dtype one of \(float16, bfloat16\), got float32"):
        checks.check_tensor(torch.zeros(2), "x", dtype=(torch.float16, torch.bfloat16))


def test_ndim_message():
    with pytest.raises(ValueError, match=r"x: expected a 2-d tensor, got shape \(2, 3, 4\)"):
        checks.check_tensor(torch.zeros(2, 3, 4), "x", ndim=2)


def test_named_dims_bind_across_arguments():
    dims: dict[str, int] = {}
    checks.check_tensor(torch.zeros(7, 12), "x", shape=("M", "K"), dims=dims)
    checks.check_tensor(torch.zeros(5, 12), "weight", shape=("N", "K"), dims=dims)
    assert dims == {"M": 7, "K": 12, "N": 5}
    with pytest.raises(ValueError, match=r"bias: expected shape \(N\) with N=5 .* got \(6,\)"):
        checks.check_tensor(torch.zeros(6), "bias", shape=("N",), dims=dims)


def test_fixed_dim_and_rank_mismatch():
    with pytest.raises(ValueError, match=r"meta: expected shape \(\*, 4\), got \(3, 5\) \(dim 1 must be 4\)"):
        checks.check_shape(torch.zeros(3, 5), "meta", (None, 4))
    with pytest.raises(ValueError, match=r"meta: expected shape \(\*, 4\), got \(3,\)"):
        checks.check_shape(torch.zeros(3), "meta", (None, 4))


def test_device_message():
    with pytest.raises(ValueError, match=r"x: expected a tensor on cuda, got one on cpu"):
        checks.check_device(torch.zeros(1), "x", "cuda")


def test_stride_message_for_non_contiguous():
    x = torch.zeros(4, 6).t()
    with pytest.raises(
        ValueError,
        match=r"x: expected a contiguous tensor, got shape \(6, 4\) with strides \(1, 6\)",
    ):
        checks.check_tensor(x, "x", contiguous=True)


def test_same_device_and_dtype():
    checks.check_same_device(a=torch.zeros(1), b=None, c=torch.zeros(2))
    with pytest.raises(TypeError, match=r"b: expected dtype float32 \(the dtype of a\), got float16"):
        checks.check_same_dtype(a=torch.zeros(1), b=torch.zeros(1, dtype=torch.float16))
    meta = torch.zeros(1, device="meta")
    with pytest.raises(ValueError, match=r"b: expected a tensor on cpu \(the device of a\), got one on meta"):
        checks.check_same_device(a=torch.zeros(1), b=meta)


def test_divisible_choice_positive_finite():
    checks.check_divisible(12, 4, "K")
    with pytest.raises(ValueError, match=r"K: expected a multiple of 4, got 10"):
        checks.check_divisible(10, 4, "K")
    with pytest.raises(ValueError, match=r"activation: expected one of \('relu', 'silu'\), got 'gelu'"):
        checks.check_choice("gelu", "activation", ("relu", "silu"))
    with pytest.raises(ValueError, match=r"group_size: expected a positive value, got 0"):
        checks.check_positive(0, "group_size")
    w = torch.ones(2, 3)
    w[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"weight: expected finite values, found nan at index \[1, 2\]"):
        checks.check_finite(w, "weight")

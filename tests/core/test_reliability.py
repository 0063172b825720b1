"""Issue 11 in core: the one NaN/Inf policy (core.reference + kernel_op(row_input=)), bounds derived
from K and the dtype (core.testing.rel_bound: tight enough that an fp16-rounded intermediate fails
an fp32 test), running a chosen autotune config (core.tuning), value-range checks (core.checks), and
the conversion walk refusing non-modules."""

import pytest
import torch
import triton
import triton.language as tl
from torch import Tensor, nn

from slimtorch.core import empty_output, kernel_op
from slimtorch.core.checks import check_positive_int, check_range
from slimtorch.core.conversions import ConversionConfig, convert_model
from slimtorch.core.reference import linear_reference, nonfinite_rows, nonfinite_rows_to_nan
from slimtorch.core.testing import assert_rel_close, randn, rel_bound, rel_error
from slimtorch.core.tuning import all_configs, autotune_configs, use_config

# the fixed ‖out − ref‖/‖ref‖ table the derived bounds replaced (core.testing.REL_BOUND until issue 11)
OLD_FIXED_BOUND = {torch.float32: 1e-3, torch.float16: 4e-3, torch.bfloat16: 2e-2}

# ----------------------------------------------------------------------------- NaN / Inf policy


def test_nonfinite_rows_to_nan_marks_exactly_the_bad_rows():
    x = randn((4, 6, 5), seed=0)
    x[0, 1, 2], x[2, 5, 0], x[3, 0, 4] = float("nan"), float("inf"), -float("inf")
    out = randn((4, 6, 3), seed=1)
    clean = out.clone()
    y = nonfinite_rows_to_nan(x, out)
    bad = nonfinite_rows(x)
    assert y is out and int(bad.sum()) == 3
    assert bool(y[bad].isnan().all()) and torch.equal(y[~bad], clean[~bad])


def test_nonfinite_rows_to_nan_keeps_autograd_intact():
    x = randn((3, 4), seed=2)
    x[1, 0] = float("inf")
    w = randn((5, 4), seed=3).requires_grad_()
    y = torch.relu(x @ w.T)
    out = nonfinite_rows_to_nan(x, y)  # y is saved by relu: must not be overwritten
    assert out is not y and bool(out[1].isnan().all())
    out[[0, 2]].sum().backward()  # would raise had the saved output been overwritten in place
    plain = w.detach().clone().requires_grad_()
    torch.relu(x @ plain.T)[[0, 2]].sum().backward()
    torch.testing.assert_close(w.grad, plain.grad, equal_nan=True)  # the same gradient as without the policy


def test_nonfinite_rows_to_nan_checks_rows_correspond():
    with pytest.raises(ValueError, match=r"out: expected leading dims \(3,\) \(those of x\), got \(4, 2\)"):
        nonfinite_rows_to_nan(torch.zeros(3, 5), torch.zeros(4, 2))


def test_linear_reference_applies_the_policy_to_inf():
    x = randn((3, 8), seed=4)
    x[2, 3] = float("inf")  # dense arithmetic alone gives ±inf here
    y = linear_reference(x, randn((5, 8), seed=5), None)
    assert bool(y[2].isnan().all()) and bool(torch.isfinite(y[:2]).all())


@triton.jit
def _skip_columns_kernel(x_ptr, w_ptr, out_ptr, K, N, BLOCK_K: tl.constexpr):
    """out[m, n] = Σ_k x[m, k] · w[n, k] over the even k only (a kernel that skips 'pruned' weights)."""
    m, n = tl.program_id(0), tl.program_id(1)
    offs = tl.arange(0, BLOCK_K) * 2
    x = tl.load(x_ptr + m * K + offs, mask=offs < K, other=0.0)
    w = tl.load(w_ptr + n * K + offs, mask=offs < K, other=0.0)
    tl.store(out_ptr + m * N + n, tl.sum(x * w))


def _skip_columns_reference(x: Tensor, w: Tensor) -> Tensor:
    dense = w.clone()
    dense[:, 1::2] = 0  # the pruned weights, stored as zeros
    return linear_reference(x, dense, None)


@kernel_op("slimtorch_tests::skip_columns", reference=_skip_columns_reference, row_input="x")
def _skip_columns(x: Tensor, w: Tensor) -> Tensor:
    m, k = x.shape
    out = empty_output((m, w.shape[0]), dtype=x.dtype, device=x.device)
    _skip_columns_kernel[(m, w.shape[0])](x, w, out, k, w.shape[0], BLOCK_K=triton.next_power_of_2((k + 1) // 2))
    return out


def test_kernel_op_row_input_applies_the_policy_to_kernels_that_skip_weights():
    x, w = randn((4, 9), seed=6), randn((3, 9), seed=7)
    x[1, 3] = float("nan")  # an odd column: the kernel never reads it
    out = _skip_columns(x, w)
    ref = _skip_columns_reference(x, w)
    assert bool(out[1].isnan().all()) and bool(ref[1].isnan().all())
    assert_rel_close(out[[0, 2, 3]], ref[[0, 2, 3]], rel_bound(torch.float32, 9))


def test_kernel_op_row_input_must_name_an_argument():
    with pytest.raises(ValueError, match=r"row_input: f has no argument 'y'"):

        @kernel_op("slimtorch_tests::bad_row_input", reference=lambda x: x, row_input="y")
        def f(x: Tensor) -> Tensor:
            return x


# ----------------------------------------------------------------------------- derived bounds


def test_rel_bound_grows_with_k_and_dtype():
    assert rel_bound(torch.float32, 64) < rel_bound(torch.float32, 4096) < 1e-4 < OLD_FIXED_BOUND[torch.float32]
    assert rel_bound(torch.float32, 64) < rel_bound(torch.bfloat16, 64)
    assert rel_bound(torch.float16, 64) < rel_bound(torch.bfloat16, 64) <= OLD_FIXED_BOUND[torch.bfloat16] * 2
    assert rel_bound(torch.float32, 64, device="cuda") > rel_bound(torch.float32, 64)  # tf32 dots
    with pytest.raises(ValueError, match=r"k: expected a non-negative reduction length, got -1"):
        rel_bound(torch.float32, -1)


@pytest.mark.parametrize("k", [7, 65, 1031])
def test_fp16_rounded_intermediate_fails_the_fp32_bound(k):
    """An fp32 matmul passes; the same matmul with its weight (or a per-row scale) rounded to fp16 —
    what a kernel that decodes weights to fp16 would compute — fails. The old fixed bound (1e-3) let it pass."""
    x, w = randn((13, k), seed=k), randn((11, k), seed=k + 1)
    scale = torch.rand(13, generator=torch.Generator().manual_seed(k)) + 0.5
    ref = (x.double() @ w.double().T) * scale.double()[:, None]
    bound = rel_bound(torch.float32, k)
    assert rel_error((x @ w.T) * scale[:, None], ref) <= bound
    rounded_weight = (x @ w.half().float().T) * scale[:, None]
    rounded_scale = (x @ w.T) * scale.half().float()[:, None]
    for wrong in (rounded_weight, rounded_scale):
        assert rel_error(wrong, ref) > bound
        assert rel_error(wrong, ref) <= OLD_FIXED_BOUND[torch.float32]  # the old fixed bound did not catch it
        with pytest.raises(AssertionError, match=r"relative error"):
            assert_rel_close(wrong, ref, bound)


# ----------------------------------------------------------------------------- autotune configs


def _configs():
    return [triton.Config({"BLOCK": b}, num_warps=w) for b, w in ((16, 1), (32, 2), (64, 4))]


@triton.autotune(configs=autotune_configs(_configs()), key=["n"])
@triton.jit
def _copy_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * 2.0, mask=offs < n)


def test_use_config_runs_each_config_and_restores_the_tuner():
    before = list(_copy_kernel.configs)
    configs = all_configs(_copy_kernel)
    assert [c.kwargs["BLOCK"] for c in configs] == [16, 32, 64]
    x = randn((37,), seed=8)
    for config in configs:
        with use_config(_copy_kernel, config):
            assert list(_copy_kernel.configs) == [config]
            out = torch.empty_like(x)
            _copy_kernel[lambda meta: (triton.cdiv(37, meta["BLOCK"]),)](x, out, 37)
            assert torch.equal(out, 2 * x)
            assert _copy_kernel.best_config == config
    assert list(_copy_kernel.configs) == before


def test_use_config_argument_checks():
    with pytest.raises(TypeError, match=r"kernel: expected a @triton.autotune kernel, got function"):
        all_configs(test_use_config_argument_checks)
    with pytest.raises(TypeError, match=r"config: expected a triton.Config, got dict"), use_config(_copy_kernel, {}):
        pass


# ----------------------------------------------------------------------------- checks and the walk


def test_check_range_and_positive_int():
    check_range(torch.tensor([0, 3, 15]), "zero", low=0, high=15)
    with pytest.raises(ValueError, match=r"zero: expected values in \[0, 15\], found 16 at index \[1\]"):
        check_range(torch.tensor([0, 16]), "zero", low=0, high=15)
    with pytest.raises(ValueError, match=r"scale: expected values in \[0.0, inf\], found nan"):
        check_range(torch.tensor([1.0, float("nan")]), "scale", low=0.0)
    with pytest.raises(TypeError, match=r"in_features: expected a positive int, got float 3.0"):
        check_positive_int(3.0, "in_features")
    with pytest.raises(ValueError, match=r"out_features: expected a positive int, got 0"):
        check_positive_int(0, "out_features")


class _Nothing(ConversionConfig):
    def convert_module(self, module, fqn, plan):
        return None


@pytest.mark.parametrize("model", [3, "model", [nn.Linear(2, 2)], None])
def test_convert_model_refuses_non_modules(model):
    with pytest.raises(TypeError, match=f"model: expected a torch.nn.Module, got {type(model).__name__}"):
        convert_model(model, _Nothing(), conversion="test")

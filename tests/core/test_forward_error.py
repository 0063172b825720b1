"""core.testing's forward-error GEMM bound: ‖out − ref‖ ≤ rel_bound(dtype, K) · ‖|x|·|w|ᵀ + |b|‖.

It must (1) pass a correct fp32 product whose outputs cancel, where ‖out − ref‖/‖ref‖ fails (the
quant property suite's 1x1 output failed at 2.5e-6 against 1e-6), and (2) still fail a product
whose weight or per-row scale was rounded to fp16 on the way (what a kernel that decodes weights to
fp16 would compute)."""

import pytest
import torch

from slimtorch.core.testing import (
    assert_forward_error,
    assert_gemm_close,
    assert_rel_close,
    assert_rows_match,
    gemm_error_scale,
    linear_map,
    randn,
    rel_bound,
)


def _cancelling(k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (1, K), w (1, K) fp32 whose float64 dot product is ~0: w's last entry solves x·w = 0."""
    x, w = randn((1, k), seed=seed), randn((1, k), seed=seed + 1)
    rest = (x[0, :-1].double() * w[0, :-1].double()).sum()
    w[0, -1] = float(-rest / x[0, -1].double())
    return x, w


@pytest.mark.parametrize(("k", "seed"), [(31, 0), (97, 3), (257, 5)])
def test_cancelling_output_passes_the_forward_error_bound_only(k, seed):
    x, w = _cancelling(k, seed)
    out, ref = x @ w.T, x.double() @ w.double().T
    bound = rel_bound(torch.float32, k)
    assert float(ref.abs()) < 1e-5 * float(gemm_error_scale(x, w))  # the signed sum cancels
    assert_gemm_close(out, ref, x, w, bound)
    with pytest.raises(AssertionError, match="relative error"):  # fp32's rounding error, relative to ~0
        assert_rel_close(out, ref, bound)


@pytest.mark.parametrize("k", [7, 65, 1031])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fp16_rounded_intermediate_fails_the_forward_error_bound(k, with_bias):
    x, w = randn((13, k), seed=k), randn((11, k), seed=k + 1)
    bias = randn((11,), seed=k + 2) if with_bias else None
    scale = torch.rand(13, generator=torch.Generator().manual_seed(k)) + 0.5
    b64 = 0 if bias is None else bias.double()
    ref = (x.double() @ w.double().T) * scale.double()[:, None] + b64
    b32 = 0 if bias is None else bias
    bound = rel_bound(torch.float32, k)
    # the error scale of y = s_m · (x·wᵀ) + b: |x|·|s_m w|ᵀ + |b|, i.e. the scale folded into x
    xs = x * scale[:, None]
    assert_gemm_close((x @ w.T) * scale[:, None] + b32, ref, xs, w, bound, bias=bias)
    rounded_weight = (x @ w.half().float().T) * scale[:, None] + b32
    rounded_scale = (x @ w.T) * scale.half().float()[:, None] + b32
    for wrong in (rounded_weight, rounded_scale):
        with pytest.raises(AssertionError, match=r"‖out − ref‖ = .* > .* · ‖\|x\|·\|w\|ᵀ‖"):
            assert_gemm_close(wrong, ref, xs, w, bound, bias=bias)


def test_forward_error_fails_nan_and_shape_mismatch():
    x, w = randn((3, 5), seed=0), randn((4, 5), seed=1)
    ref = x.double() @ w.double().T
    out = (x @ w.T).clone()
    out[1, 2] = float("nan")
    with pytest.raises(AssertionError, match=r"max \|diff\| inf at \(1, 2\)"):
        assert_gemm_close(out, ref, x, w, 1e-3)
    with pytest.raises(AssertionError, match=r"scale \(3, 4\) != reference \(3, 3\)"):
        assert_forward_error(out[:, :3], ref[:, :3], gemm_error_scale(x, w), 1e-3)


def test_rows_match_with_weight_uses_the_forward_error_bound():
    x, w = _cancelling(65, 7)
    x = torch.cat([x, randn((1, 65), seed=9)])
    x[1, 4] = float("inf")
    ref = x.double() @ w.double().T
    ref[1] = float("nan")
    out = x @ w.T
    out[1] = float("nan")
    assert assert_rows_match(out, ref, x, rel_bound(torch.float32, 65), weight=w) == 1


def test_linear_map_reads_a_reference_weight_off_the_identity():
    w = randn((7, 13), seed=3).double()
    assert torch.equal(linear_map(lambda x: x @ w.T, 13), w)

"""slimtorch.core.modules: replace_submodule and the Conv2d-as-GEMM wrapper, against torch."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.core.modules import (
    GemmConv2d,
    conv2d_as_gemm,
    conv_weight_as_linear,
    dense_linear,
    replace_submodule,
)
from slimtorch.core.testing import assert_exact, assert_rel_close, randn


def test_replace_submodule_and_root():
    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 4)))
    new = nn.Identity()
    assert replace_submodule(model, "1.0", new) is model and model[1][0] is new
    assert replace_submodule(model, "", new) is new


def test_dense_linear_copies_weight_and_bias():
    weight, bias = randn((5, 3), seed=1), randn((5,), seed=2)
    linear = dense_linear(weight, bias, torch.float64)
    assert linear.weight.dtype == torch.float64
    assert_exact(linear.weight, weight.double())
    assert_exact(linear.bias, bias.double())


class DenseGemm(nn.Linear):
    """The simplest GEMM module of the GemmConv2d contract: a Linear that is its own dense form."""

    def to_dense(self) -> nn.Linear:
        return self


@pytest.mark.parametrize(
    "kernel, stride, padding, dilation",
    [(1, 1, 0, 1), (1, 2, 0, 1), (3, 2, 1, 1), (3, 1, 2, 2), ((3, 1), (1, 2), (1, 0), 1)],
)
def test_gemm_conv_matches_conv2d_and_round_trips(kernel, stride, padding, dilation):
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, kernel, stride, padding, dilation, bias=True).double()
    layer = GemmConv2d.from_dense(conv, _as_dense_gemm)
    x = randn((2, 5, 9, 8), seed=3, dtype=torch.float64)
    expected = F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation)
    assert_rel_close(layer(x), expected, 1e-12)
    assert_rel_close(layer(x[0]), expected[0], 1e-12)  # unbatched
    dense = layer.to_dense()
    assert_exact(dense.weight, conv.weight)
    assert layer.out_channels == 7 and layer.compressed_num_params() == 7 * 5 * conv.weight[0, 0].numel() + 7


def _as_dense_gemm(linear: nn.Linear) -> DenseGemm:
    gemm = DenseGemm(linear.in_features, linear.out_features, dtype=linear.weight.dtype)
    gemm.load_state_dict(linear.state_dict())
    return gemm


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"conv: expected groups=1, numeric padding .*; groups=4: grouped/depthwise"):
        conv_weight_as_linear(nn.Conv2d(8, 8, 3, groups=4))
    with pytest.raises(TypeError, match=r"conv: expected an nn\.Conv2d, got Linear"):
        conv_weight_as_linear(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"gemm: expected in_features = in_channels·kh·kw = 2·3·3 = 18, got 10"):
        GemmConv2d(nn.Linear(10, 4), 2, 3)
    with pytest.raises(ValueError, match=r"x: expected an \(N, C, H, W\) or \(C, H, W\) tensor, got shape \(3, 4\)"):
        conv2d_as_gemm(torch.zeros(3, 4), nn.Identity(), (1, 1), (1, 1), (0, 0), (1, 1))

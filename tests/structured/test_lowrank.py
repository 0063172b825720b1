"""lowrank.py: SVD layers reach the Eckart–Young optimum; Tucker-2, CP, separable and TT layers
equal their own to_dense(), report their error and improve with rank; rank selection and errors."""

import math

import pytest
import tensorly
import torch
from torch import nn

from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.structured import (
    LowRankConv2d,
    LowRankLinear,
    TTLinear,
    cp_decompose_conv,
    select_rank,
    separable_decompose_conv,
    tucker_decompose_conv,
)


def _linear(n_in, n_out, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out).double()


def _conv(cin, cout, k, seed=0, **kw):
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, k, **kw).double()


def test_svd_error_is_the_eckart_young_optimum():
    lin = _linear(23, 17)
    s = torch.linalg.svdvals(lin.weight.detach())
    for r in (1, 5, 16):
        layer = LowRankLinear.from_dense(lin, rank=r)
        optimum = float(torch.sqrt((s[r:] ** 2).sum()) / torch.sqrt((s**2).sum()))
        measured = float(
            torch.linalg.norm(layer.to_dense().weight.detach() - lin.weight.detach())
            / torch.linalg.norm(lin.weight.detach())
        )
        assert abs(layer.relative_error - optimum) < 1e-12 and abs(measured - optimum) < 1e-10
    full = LowRankLinear.from_dense(lin, rank=17)
    assert full.relative_error < 1e-12
    x = randn((4, 23), dtype=torch.float64, seed=1)
    assert_rel_close(full(x), lin(x), 1e-12)


def test_rank_selection():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert select_rank(s, 4, 6, energy=0.7) == 1 and select_rank(s, 4, 6, energy=0.9) == 2
    assert select_rank(s, 4, 6, energy=1.0) == 4
    assert select_rank(s, 4, 6, rank_ratio=0.5) == 2
    assert select_rank(s, 4, 6, param_ratio=0.5) == math.floor(0.5 * 24 / 10)
    with pytest.raises(ValueError, match=r"rank: expected an int in \[1, min\(m, n\) = 4\], got 5"):
        select_rank(s, 4, 6, rank=5)
    with pytest.raises(ValueError, match=r"energy: expected a fraction in \(0, 1\], got 1.5"):
        select_rank(s, 4, 6, energy=1.5)
    with pytest.raises(ValueError, match=r"energy: expected a fraction in \(0, 1\], got 0"):
        select_rank(s, 4, 6, energy=0)
    with pytest.raises(ValueError, match="expected exactly one of"):
        select_rank(s, 4, 6, rank=1, energy=0.5)


def test_low_rank_conv_any_kernel():
    conv = _conv(6, 10, 3, stride=2, padding=1)
    layer = LowRankConv2d.from_dense(conv, rank=4)
    x = randn((2, 6, 9, 7), dtype=torch.float64, seed=2)
    dense = layer.to_dense()
    assert_rel_close(layer(x), dense(x), 1e-12)
    w = conv.weight.detach().reshape(10, -1)
    s = torch.linalg.svdvals(w)
    assert abs(layer.relative_error - float(torch.sqrt((s[4:] ** 2).sum()) / torch.linalg.norm(w))) < 1e-12


def test_tucker_and_cp_errors_fall_with_rank():
    conv = _conv(8, 12, 3, padding=1, seed=3)
    x = randn((2, 8, 7, 6), dtype=torch.float64, seed=4)
    backend = tensorly.get_backend()
    errors = []
    for ranks in ((2, 2), (6, 4), (12, 8)):
        layer = tucker_decompose_conv(conv, ranks)
        assert_rel_close(layer(x), layer.to_dense()(x), 1e-10)
        errors.append(layer.relative_error)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-10  # full ranks: exact
    hosvd = tucker_decompose_conv(conv, (6, 4), n_iter_max=0)
    assert errors[1] <= hosvd.relative_error + 1e-12  # HOOI refines HOSVD
    cp_errors = []
    small = _conv(4, 5, 3, padding=1, seed=9)
    for rank in (1, 4, 12):
        layer = cp_decompose_conv(small, rank, n_iter_max=25)
        assert_rel_close(layer(x[:, :4]), layer.to_dense()(x[:, :4]), 1e-10)
        assert_rel_close(layer.dense_weight(), layer.to_dense().weight, 1e-12)
        cp_errors.append(layer.relative_error)
    assert cp_errors[0] > cp_errors[1] > cp_errors[2]
    assert tensorly.get_backend() == backend  # no global state leaks


def test_separable_is_the_best_rank_k_filter_pair():
    conv = _conv(5, 7, 3, stride=(2, 1), padding=(1, 0), seed=5)
    x = randn((1, 5, 9, 8), dtype=torch.float64, seed=6)
    full = separable_decompose_conv(conv, rank=15)  # rank of M = min(C·kh, N·kw) = 15: exact
    assert_rel_close(full(x), conv(x), 1e-10)
    low = separable_decompose_conv(conv, rank=3)
    assert_rel_close(low(x), low.to_dense()(x), 1e-10)
    m = conv.weight.detach().permute(1, 2, 0, 3).reshape(15, 21)
    s = torch.linalg.svdvals(m)
    assert abs(low.relative_error - float(torch.sqrt((s[3:] ** 2).sum()) / torch.linalg.norm(m))) < 1e-12


def test_tensor_train_linear():
    lin = _linear(24, 30, seed=7)
    x = randn((3, 24), dtype=torch.float64, seed=8)
    errors = []
    for cap in (1, 3, 100):
        layer = TTLinear.from_dense(lin, modes=3, max_rank=cap)
        assert_rel_close(layer(x), layer.to_dense()(x), 1e-10)
        errors.append(layer.relative_error)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-10
    budget = TTLinear.from_dense(lin, error=0.5)
    assert budget.relative_error <= 0.5
    small = TTLinear.from_dense(lin, param_ratio=0.3)
    assert sum(c.numel() for c in small.cores) <= 0.3 * 24 * 30
    with pytest.raises(ValueError, match="ranks: expected 4 TT ranks"):
        TTLinear([2, 3, 4], [2, 3, 5], [1, 2, 1])


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"rank: expected an int in \[1, min\(m, n\) = 3\]"):
        LowRankLinear.from_dense(_linear(3, 5), rank=4)
    with pytest.raises(ValueError, match="conv: expected groups=1"):
        tucker_decompose_conv(nn.Conv2d(4, 4, 3, groups=2), (2, 2))
    with pytest.raises(ValueError, match=r"ranks\[1\] \(input channels\): expected an int in \[1, 4\], got 5"):
        tucker_decompose_conv(nn.Conv2d(4, 6, 3), (2, 5))

"""Zero sizes in slimtorch.structured: an empty batch works on every layer (kernel path here: the
interpreter) and returns an empty output of the right shape and dtype; a zero-size layer (in/out
features 0, a block size that does not divide, rank 0, an empty or zero TT mode) is refused at
construction by a ValueError naming the argument, what was expected and what was received."""

import pytest
import torch
from torch import nn

from slimtorch.structured import (
    BlockCirculantConv2d,
    BlockCirculantLinear,
    CirculantLinear,
    FastfoodLinear,
    HashedLinear,
)
from slimtorch.structured import lowrank as L


def _conv(cin=8, cout=6, k=3):
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, k, padding=k // 2)


LINEARS = {
    "circulant": lambda: CirculantLinear(13, 7),
    "block-circulant-fft": lambda: BlockCirculantLinear(15, 10, 5, path="fft"),
    "block-circulant-direct": lambda: BlockCirculantLinear(15, 10, 5, path="direct"),
    "fastfood": lambda: FastfoodLinear(13, 21),
    "hashed": lambda: HashedLinear(13, 9, compression=0.25),
    "low-rank": lambda: L.LowRankLinear(13, 9, 3),
    "tensor-train": lambda: L.TTLinear([3, 5], [3, 3], [1, 2, 1]),
}
CONVS = {
    "block-circulant-conv": lambda: BlockCirculantConv2d.from_dense(nn.Conv2d(8, 12, 1), 4),
    "low-rank-conv": lambda: L.LowRankConv2d.from_dense(_conv(), rank=2),
    "tucker": lambda: L.tucker_decompose_conv(_conv(), (2, 3), n_iter_max=0),
    "cp": lambda: L.cp_decompose_conv(_conv(), 2, n_iter_max=3),
    "separable": lambda: L.separable_decompose_conv(_conv(), 2),
}


@pytest.mark.parametrize("name", LINEARS)
@pytest.mark.parametrize("lead", [(0,), (0, 3), (2, 0)])
def test_linear_layers_take_an_empty_batch(device, name, lead):
    layer = LINEARS[name]().to(device)
    x = torch.randn(*lead, layer.in_features, device=device)
    out = layer(x)
    assert out.shape == (*lead, layer.out_features) and out.dtype == x.dtype and out.device == x.device
    half = layer.to(torch.float16)(x.half())
    assert half.shape == out.shape and half.dtype == torch.float16


@pytest.mark.parametrize("name", CONVS)
def test_conv_layers_take_an_empty_batch(device, name):
    layer = CONVS[name]().to(device)
    x = torch.randn(0, 8, 5, 7, device=device)
    out = layer(x)
    assert out.shape == (0, layer.out_channels if hasattr(layer, "out_channels") else 6, 5, 7)
    assert out.dtype == x.dtype


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: CirculantLinear(0, 8), r"in_features: expected a positive int, got 0"),
        (lambda: CirculantLinear(8, 0), r"out_features: expected a positive int, got 0"),
        (lambda: BlockCirculantLinear(0, 8, 4), r"in_features: expected a positive int, got 0"),
        (lambda: BlockCirculantLinear(16, 8, 3), r"in_features \(block_size=3\): expected a multiple of 3, got 16"),
        (lambda: BlockCirculantLinear(15, 8, 5), r"out_features \(block_size=5\): expected a multiple of 5, got 8"),
        (lambda: BlockCirculantLinear(16, 8, 0), r"block_size: expected a positive int, got 0"),
        (lambda: FastfoodLinear(8, 0), r"out_features: expected a positive int, got 0"),
        (lambda: HashedLinear(0, 8), r"in_features: expected a positive int, got 0"),
        (lambda: HashedLinear(8, 8, buckets=0), r"buckets: expected a positive value, got 0"),
        (lambda: L.LowRankLinear(0, 8, 1), r"in_features: expected a positive int, got 0"),
        (lambda: L.LowRankLinear(8, 0, 1), r"out_features: expected a positive int, got 0"),
        (lambda: L.LowRankLinear(8, 8, 0), r"rank: expected an int in \[1, min\(in, out\) = 8\], got 0"),
        (lambda: L.LowRankLinear.from_dense(nn.Linear(0, 8), rank=1), r"linear.in_features: expected a positive int"),
        (lambda: L.LowRankLinear.from_dense(nn.Linear(8, 5), rank=0), r"rank: expected an int in \[1, .* = 5\], got 0"),
        (lambda: L.TTLinear([], [], [1]), r"in_modes: expected at least one mode, got \[\]"),
        (lambda: L.TTLinear([4, 0], [2, 4], [1, 2, 1]), r"in_modes\[1\]: expected a positive int, got 0"),
        (lambda: L.TTLinear([4, 4], [2, 4], [1, 0, 1]), r"ranks\[1\]: expected a positive int, got 0"),
        (lambda: L.TTLinear.from_dense(nn.Linear(8, 0)), r"linear.out_features: expected a positive int, got 0"),
        (lambda: L.LowRankConv2d.from_dense(nn.Conv2d(0, 6, 3), rank=1), r"conv.in_channels: expected a positive"),
        (lambda: L.tucker_decompose_conv(_conv(), (0, 2)), r"ranks\[0\] \(output channels\): .* \[1, 6\], got 0"),
        (lambda: L.cp_decompose_conv(_conv(), 0), r"rank: expected a positive int, got 0"),
        (lambda: BlockCirculantConv2d.from_dense(nn.Conv2d(8, 8, 1), 3), r"\(block_size=3\): expected a multiple of 3"),
    ],
)
def test_zero_size_and_non_dividing_layers_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()

"""Issue 11 for slimtorch.convops: unequal strides are refused (they used to run with stride[0] for
both axes), zero channels are refused at construction, an empty batch works on every layer and op,
and a NaN input pixel reaches exactly the outputs whose window holds it, kernel and reference alike.
(Convolutions have dense weights, so NaN propagates through the arithmetic; the matmul formats'
row policy of slimtorch.core.reference concerns GEMM rows.)"""

import re

import pytest
import torch
from torch import nn

from slimtorch.convops import layers as C
from slimtorch.convops.api import fuse_
from slimtorch.core import reference_only
from slimtorch.core.testing import randn

LAYERS = {
    "DepthwiseConv2d": lambda: C.DepthwiseConv2d(8, 3, padding=1),
    "GroupedPointwiseConv2d": lambda: C.GroupedPointwiseConv2d(8, 12, 2, shuffle_groups=2, out_shuffle_groups=3),
    "ChannelShuffle": lambda: C.ChannelShuffle(2),
    "Shift2d": lambda: C.Shift2d(8),
    "SparseShift2d": lambda: C.SparseShift2d(8),
    "ActiveShift2d": lambda: C.ActiveShift2d(8),
    "ShiftConv2d": lambda: C.ShiftConv2d(8, 12),
    "ShiftConv2d-sparse": lambda: C.ShiftConv2d(8, 12, shift="sparse"),
}


@pytest.mark.parametrize("layer", [C.GroupedPointwiseConv2d, C.ShiftConv2d])
@pytest.mark.parametrize("stride", [(2, 1), (1, 3)])
def test_unequal_strides_refused(layer, stride):
    """(c): stride=(2, 1) used to build a layer that strode 2 along both axes."""
    message = re.escape(f"stride: expected equal strides along H and W (one int), got {stride}")
    with pytest.raises(ValueError, match=message):
        layer(8, 8, stride=stride)


@pytest.mark.parametrize("layer", [C.GroupedPointwiseConv2d, C.ShiftConv2d])
def test_equal_tuple_strides_accepted(layer):
    module = layer(8, 4, stride=(2, 2))
    assert module(randn((1, 8, 7, 7), seed=0)).shape == (1, 4, 4, 4)


@pytest.mark.parametrize("layer", [C.GroupedPointwiseConv2d, C.ShiftConv2d])
@pytest.mark.parametrize(("cin", "cout", "bad"), [(0, 4, "in_channels"), (4, 0, "out_channels")])
def test_zero_channels_refused(layer, cin, cout, bad):
    with pytest.raises(ValueError, match=rf"{bad}: expected a positive int, got 0"):
        layer(cin, cout)


@pytest.mark.parametrize("name", LAYERS)
def test_empty_batch_gives_empty_output(name):
    module = LAYERS[name]()
    x = torch.randn(0, 8, 7, 7)
    out = module(x)
    with reference_only():
        ref = module(x)
    assert out.shape == ref.shape and out.shape[0] == 0


def test_shuffle_concat_empty_batch():
    x = torch.randn(0, 4, 5, 5)
    assert C.ShuffleConcat(2)(x, x).shape == (0, 8, 5, 5)


@pytest.mark.parametrize("name", ["DepthwiseConv2d", "GroupedPointwiseConv2d", "ShiftConv2d"])
def test_nan_pixel_reaches_its_window_on_every_path(name):
    torch.manual_seed(0)
    module = LAYERS[name]()
    x = randn((2, 8, 5, 5), seed=1)
    x[1, 3, 2, 2] = float("nan")
    out = module(x)
    with reference_only():
        ref = module(x)
    torch.testing.assert_close(out.isnan(), ref.isnan())  # the same outputs are NaN
    assert bool(out.isnan().any()) and not bool(out[0].isnan().any())
    torch.testing.assert_close(torch.nan_to_num(out), torch.nan_to_num(ref), rtol=1e-4, atol=1e-5)


def test_fuse_refuses_non_modules():
    with pytest.raises(TypeError, match=r"model: expected a torch.nn.Module, got dict"):
        fuse_({"conv": nn.Conv2d(3, 3, 1)})

"""to_torch_: every convops layer back to standard torch modules, same function, no custom ops."""

import pytest
import torch
from torch import nn

from slimtorch import convops
from slimtorch.core import reference_only
from slimtorch.core.testing import SmallCompactCNN, assert_rel_close, randn

LAYERS = {
    "depthwise": lambda: convops.DepthwiseConv2d(6, 3, stride=2, activation="relu6", bias=True),
    "depthwise x2": lambda: convops.DepthwiseConv2d(6, 5, channel_multiplier=2, dilation=2),
    "grouped shuffled": lambda: convops.GroupedPointwiseConv2d(
        6, 9, 3, shuffle_groups=2, out_shuffle_groups=3, activation="hardswish"
    ),
    "shuffle": lambda: convops.ChannelShuffle(3),
    "shift": lambda: convops.Shift2d(6, 5),
    "sparse shift": lambda: convops.SparseShift2d(6, init_range=2.0),
    "active shift": lambda: convops.ActiveShift2d(6),
    "shift conv": lambda: convops.ShiftConv2d(6, 7, stride=2, bias=True, activation="silu"),
}


def _no_convops(model: nn.Module) -> bool:
    return not any(type(m).__module__.startswith("slimtorch.convops.layers") for m in model.modules())


@pytest.mark.parametrize("kind", LAYERS)
def test_each_layer_keeps_its_function(kind):
    torch.manual_seed(0)
    layer = LAYERS[kind]().eval()
    x = randn((2, 6, 9, 8), seed=1)
    with reference_only(), torch.no_grad():
        expected = layer(x)
        plain = convops.to_torch_(layer).model
        assert _no_convops(plain)
        assert_rel_close(plain(x), expected, 1e-6)


def test_converted_model_round_trips_to_plain_torch():
    model = SmallCompactCNN().eval()
    x = randn((2, 3, 33, 31), seed=2)
    with reference_only(), torch.no_grad():
        fused = convops.fuse_(model).model
        expected = fused(x)
        plain = convops.to_torch_(fused).model
        assert _no_convops(plain)
        assert_rel_close(plain(x), expected, 1e-5)


def test_shuffle_concat_layer():
    a, b = randn((2, 4, 5, 3), seed=3), randn((2, 6, 5, 3), seed=4)
    layer = convops.ShuffleConcat(2)
    with reference_only():
        expected = convops.channel_shuffle(torch.cat([a, b], 1), 2)
        assert_rel_close(layer(a, b), expected, 0.0)
    assert_rel_close(convops.to_torch_(layer).model(a, b), expected, 0.0)

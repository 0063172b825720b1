"""The convops seam (the factories) and the shared blocks."""

import pytest
import torch
from torch import nn

from slimtorch.core.testing import assert_exact, assert_rel_close, randn
from slimtorch.zoo import blocks


def test_channel_shuffle_is_the_transpose_of_a_groups_by_n_matrix():
    x = randn((2, 12, 3, 5), seed=0)
    out = blocks.channel_shuffle(x, 3)
    n = 12 // 3
    expected = torch.stack([x[:, i * n + j] for j in range(n) for i in range(3)], dim=1)
    assert_exact(out, expected)
    assert_exact(blocks.channel_shuffle_layer(3)(x), expected)


def test_channel_shuffle_rejects_indivisible_channels():
    with pytest.raises(ValueError, match=r"channels \(for channel shuffle groups\): expected a multiple of 3, got 10"):
        blocks.channel_shuffle(torch.zeros(1, 10, 2, 2), 3)


@pytest.mark.parametrize(("channels", "kernel_size"), [(21, 3), (9, 3), (53, 5), (4, 3)])
def test_grouped_shift_matches_its_definition(channels, kernel_size):
    """out[c, h, w] = x[c, h + dy, w + dx] (0 outside), channel c in group t = ⌊c·k²/C⌋ shifted by
    (t // k − k//2, t % k − k//2)."""
    x = randn((2, channels, 7, 6), seed=channels)
    out = blocks.shift2d(channels, kernel_size)(x)
    k, r = kernel_size, kernel_size // 2
    expected = torch.zeros_like(x)
    for c in range(channels):
        t = c * k * k // channels
        dy, dx = t // k - r, t % k - r
        for h in range(7):
            for w in range(6):
                if 0 <= h + dy < 7 and 0 <= w + dx < 6:
                    expected[:, c, h, w] = x[:, c, h + dy, w + dx]
    assert_exact(out, expected)


def test_shift_has_no_parameters_and_rejects_even_kernels():
    assert list(blocks.shift2d(18, 3).parameters()) == []
    with pytest.raises(ValueError, match="kernel_size: expected a positive odd int, got 4"):
        blocks.shift2d(16, 4)
    with pytest.raises(ValueError, match="kernel_size"):
        blocks.shift_conv(16, 8, kernel_size=2)


def test_shift_conv_is_shift_then_strided_pointwise_conv():
    conv = blocks.shift_conv(19, 11, kernel_size=3, stride=2)
    assert dict(conv.named_parameters()).keys() == {"weight"} and conv.weight.shape == (11, 19, 1, 1)
    x = randn((2, 19, 9, 7), seed=1)
    expected = nn.functional.conv2d(blocks.shift2d(19, 3)(x).double(), conv.weight.double(), stride=2)
    assert_rel_close(conv(x), expected, 1e-5)


def test_factories_have_the_convops_parameter_names_and_shapes():
    dw = blocks.depthwise_conv(6, 5, stride=2, dilation=2, channel_multiplier=2)
    assert {k: tuple(v.shape) for k, v in dw.state_dict().items()} == {"weight": (12, 1, 5, 5)}
    assert dw(torch.zeros(1, 6, 9, 9)).shape == (1, 12, 5, 5)  # padding k//2·dilation keeps 'same' at stride 1
    grouped = blocks.grouped_pointwise_conv(12, 8, groups=4, shuffle_groups=4)
    assert {k: tuple(v.shape) for k, v in grouped.state_dict().items()} == {"weight": (8, 3, 1, 1)}
    pw = blocks.pointwise_conv(5, 7, bias=True)
    assert {k: tuple(v.shape) for k, v in pw.state_dict().items()} == {"weight": (7, 5, 1, 1), "bias": (7,)}


def test_shuffled_grouped_pointwise_conv_shuffles_its_input():
    conv = blocks.grouped_pointwise_conv(12, 9, groups=3, shuffle_groups=4)
    x = randn((2, 12, 3, 3), seed=2)
    expected = nn.functional.conv2d(blocks.channel_shuffle(x, 4).double(), conv.weight.double(), groups=3)
    assert_rel_close(conv(x), expected, 1e-5)


def test_make_act_and_pruned_width_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"activation: expected one of .*got 'tanh'"):
        blocks.make_act("tanh")
    assert isinstance(blocks.make_act("gelu"), nn.GELU) and blocks.make_act("relu6").inplace
    with pytest.raises(ValueError, match=r"ratio: expected a pruned fraction in \[0, 1\), got 1.0"):
        blocks.pruned_width(64, 1.0)
    assert blocks.pruned_width(96, 0.25) == 72 and blocks.pruned_width(58, 0.5) == 32
    assert [blocks.make_divisible(v) for v in (11.2, 44.8, 36, 12)] == [16, 48, 40, 16]


def test_inverted_residual_structure_and_residual():
    block = blocks.InvertedResidual(8, 24, 8, 3, 1, act="hardswish", se_chs=8)
    assert block.has_skip and block.conv_pw is not None and block.se is not None
    x = randn((2, 8, 5, 5), seed=3)
    body = block.conv_pwl(block.se(block.conv_dw(block.conv_pw(x))))
    assert_exact(block(x), body + x)
    with pytest.raises(ValueError, match=r"mid_chs: a block without expand convolution needs mid == in \(8\), got 16"):
        blocks.InvertedResidual(8, 16, 8, expand=False)


def test_squeeze_excite_gates_each_channel():
    se = blocks.SqueezeExcite(6, 4)
    x = randn((2, 6, 4, 3), seed=4)
    gate = nn.functional.hardsigmoid(se.conv_expand(torch.relu(se.conv_reduce(x.mean((2, 3), keepdim=True)))))
    assert_exact(se(x), x * gate)


def test_feature_points_keep_the_last_stage_of_each_resolution():
    info = blocks.feature_points([16, 24, 32, 64, 96], [1, 2, 2, 2, 1], 2)
    assert [(f["module"], f["reduction"], f["num_chs"]) for f in info] == [
        ("stages.0", 2, 16),
        ("stages.1", 4, 24),
        ("stages.2", 8, 32),
        ("stages.4", 16, 96),
    ]

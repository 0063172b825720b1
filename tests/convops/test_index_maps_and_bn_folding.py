"""index_maps.py and bn_folding.py: shuffle permutation, grouped shift offsets, BN folding."""

import pytest
import torch
from torch import nn

from slimtorch.convops.bn_folding import batchnorm_scale_shift, fold_scale_shift
from slimtorch.convops.index_maps import grouped_shift_offsets, shuffle_permutation
from slimtorch.core.testing import assert_exact, assert_rel_close


@pytest.mark.parametrize("channels,groups", [(12, 3), (12, 4), (9, 9), (6, 1)])
def test_shuffle_permutation_is_torchs_channel_shuffle(channels, groups):
    x = torch.randn(2, channels, 3, 3)
    assert_exact(x[:, shuffle_permutation(channels, groups)], nn.ChannelShuffle(groups)(x))
    inverse = shuffle_permutation(channels, channels // groups)
    assert torch.equal(shuffle_permutation(channels, groups)[inverse], torch.arange(channels))


@pytest.mark.parametrize("channels", [9, 20, 4])
def test_grouped_shift_offsets(channels):
    offsets = grouped_shift_offsets(channels, 3)
    assert offsets.dtype == torch.int32 and offsets.shape == (channels, 2)
    groups = [tuple(o) for o in offsets.tolist()]
    sizes = [groups.count(o) for o in dict.fromkeys(groups)]
    assert max(sizes) - min(sizes) <= 1, "groups differ in size by at most one"
    assert groups == sorted(groups), "channels of a group are contiguous, groups in raster order"
    if channels >= 9:
        assert set(groups) == {(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert grouped_shift_offsets(18, 5, dilation=2).abs().max() == 4
    with pytest.raises(ValueError, match=r"kernel_size: expected a positive odd int, got 4"):
        grouped_shift_offsets(9, 4)


def test_batchnorm_folds_into_conv_exactly_in_float64():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True).double()
    bn = nn.BatchNorm2d(6).double().eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    weight, bias = fold_scale_shift(conv.weight, conv.bias, *batchnorm_scale_shift(bn))
    assert_rel_close(nn.functional.conv2d(x, weight, bias, padding=1), bn(conv(x)), 1e-12)
    no_affine = nn.BatchNorm2d(6, affine=False).double().eval()
    scale, shift = batchnorm_scale_shift(no_affine)
    assert_rel_close(scale, torch.full((6,), (1 + 1e-5) ** -0.5, dtype=torch.float64), 1e-12)
    with pytest.raises(ValueError, match=r"bn: a BatchNorm without running statistics"):
        batchnorm_scale_shift(nn.BatchNorm2d(6, track_running_stats=False))
    with pytest.raises(ValueError, match=r"scale/shift: expected shape \(6,\)"):
        fold_scale_shift(conv.weight, None, scale[:5], shift)

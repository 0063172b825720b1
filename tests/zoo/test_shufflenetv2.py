"""ShuffleNetV2 units and widths."""

import pytest
import torch

from slimtorch.core.testing import assert_exact, randn
from slimtorch.zoo.blocks import channel_shuffle
from slimtorch.zoo.shufflenetv2 import ShuffleNetV2, ShuffleUnitV2, pruned_shufflenetv2_widths, shufflenetv2_widths


def unshuffle(x: torch.Tensor) -> torch.Tensor:
    """Inverse of channel_shuffle(·, 2): even output channels came from the first half."""
    return torch.cat((x[:, 0::2], x[:, 1::2]), dim=1)


def test_a_stride_one_unit_keeps_half_and_transforms_half():
    unit = ShuffleUnitV2(12, 12, 10, stride=1).eval()
    x = randn((2, 12, 5, 5), seed=0)
    with torch.no_grad():
        out = unshuffle(unit(x))
        assert_exact(out[:, :6], x[:, :6])
        assert_exact(out[:, 6:], unit.conv_pwl(unit.conv_dw(unit.conv_pw(x[:, 6:]))))
        assert_exact(channel_shuffle(out, 2), unit(x))


def test_a_stride_two_unit_projects_and_transforms_the_whole_input():
    unit = ShuffleUnitV2(8, 20, 6, stride=2).eval()
    x = randn((1, 8, 7, 7), seed=1)
    with torch.no_grad():
        out = unshuffle(unit(x))
        assert out.shape == (1, 20, 4, 4)
        assert_exact(out[:, :10], unit.proj_pw(unit.proj_dw(x)))
        assert_exact(out[:, 10:], unit.conv_pwl(unit.conv_dw(unit.conv_pw(x))))


def test_widths_and_their_errors():
    assert shufflenetv2_widths(2.0)["head"] == 2048
    pruned = pruned_shufflenetv2_widths(shufflenetv2_widths(1.0), 0.25)
    assert pruned["stages"][0] == {"out": 116, "mid": [40] * 4} and pruned["head"] == 768
    with pytest.raises(ValueError, match=r"multiplier: expected one of \[0.5, 1.0, 1.5, 2.0\], got 0.75"):
        shufflenetv2_widths(0.75)
    with pytest.raises(ValueError, match="widths: a ShuffleNetV2 stage width must be even, got 9"):
        ShuffleUnitV2(4, 9, 4, stride=2)
    with pytest.raises(ValueError, match=r"widths: a stride-1 unit needs in == out, got 8 -> 12"):
        ShuffleUnitV2(8, 12, 4, stride=1)
    widths = shufflenetv2_widths(0.5)
    widths["stages"][1]["mid"] = widths["stages"][1]["mid"][:7]
    with pytest.raises(ValueError, match=r"widths: expected \(4, 8, 4\) mid widths per stage"):
        ShuffleNetV2(widths)

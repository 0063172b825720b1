"""ShuffleNet (V1) units and widths."""

import pytest
import torch

import slimtorch.zoo as zoo
from slimtorch.core.testing import assert_exact, randn
from slimtorch.zoo.blocks import channel_shuffle
from slimtorch.zoo.shufflenetv1 import STEM, ShuffleUnitV1, shufflenetv1_widths


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 8])
def test_widths_split_into_groups_at_every_scale(groups):
    for scale in STEM:
        widths = shufflenetv1_widths(groups, scale)
        stage2 = widths["stages"][0]
        assert widths["stages"] == [stage2, 2 * stage2, 4 * stage2]
        assert stage2 % (4 * groups) == 0 and widths["stem"] % groups == 0
    assert shufflenetv1_widths(3, 1.0) == {"stem": 24, "stages": [240, 480, 960]}  # Table 1 of the paper
    assert shufflenetv1_widths(8, 0.5)["stem"] == 16  # 12 rounded up to a multiple of 8


def test_units_add_or_concatenate_and_shuffle_before_the_second_group_conv():
    unit = ShuffleUnitV1(24, 24, 3, stride=1).eval()
    x = randn((2, 24, 5, 5), seed=0).relu()
    with torch.no_grad():
        mid = unit.conv_dw(unit.conv_pw(x))
        pwl = unit.conv_pwl
        main = pwl.bn(torch.nn.functional.conv2d(channel_shuffle(mid, 3), pwl.conv.weight, groups=3))
        assert_exact(unit(x), torch.relu(x + main))
    down = ShuffleUnitV1(24, 60, 3, stride=2).eval()
    with torch.no_grad():
        out = down(x)
        assert out.shape == (2, 60, 3, 3)
        assert_exact(out[:, :24], torch.nn.functional.avg_pool2d(x, 3, 2, 1))
    assert zoo.create_model("slim_shufflenetv1_g3_100").stages[0][0].conv_pw.conv.groups == 1  # dense first unit


def test_bad_groups_scales_and_widths_are_refused():
    with pytest.raises(ValueError, match=r"groups, scale: expected groups in \[1, 2, 3, 4, 8\] and scale in"):
        shufflenetv1_widths(5, 1.0)
    with pytest.raises(ValueError, match=r"widths: bottleneck width 6 must be a positive multiple of groups \(4\)"):
        ShuffleUnitV1(8, 24, 4, stride=1)

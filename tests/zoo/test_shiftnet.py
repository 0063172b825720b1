"""ShiftResNet and ShiftNet-A blocks."""

import pytest
import torch

import slimtorch.zoo as zoo
from slimtorch.core.testing import assert_exact, randn
from slimtorch.zoo.shiftnet import CSCBlock, ShiftBasicBlock, ShiftResNet


def test_shift_basic_block_is_conv_shift_conv_plus_shortcut():
    block = ShiftBasicBlock(16, 32, stride=2, expansion=3).eval()
    assert block.conv1.conv.out_channels == 96 and block.conv2.conv.shift.kernel_size == 3
    x = randn((2, 16, 8, 8), seed=0)
    with torch.no_grad():
        assert_exact(block(x), torch.relu(block.conv2(block.conv1(x)) + block.shortcut(x)))
        assert block(x).shape == (2, 32, 4, 4)


def test_csc_block_preactivates_and_downsamples_by_concatenation():
    block = CSCBlock(32, 64, stride=2, kernel_size=5, expansion=4).eval()
    assert block.conv1.out_channels == 128 and block.conv2.shift.kernel_size == 5
    x = randn((1, 32, 9, 9), seed=1)
    with torch.no_grad():
        branch = block.conv2(block.act2(block.norm2(block.conv1(torch.relu(block.norm1(x))))))
        assert_exact(block(x), torch.cat((branch, torch.nn.functional.avg_pool2d(x, 3, 2, 1)), dim=1))
    with pytest.raises(ValueError, match="widths: a CSC block cannot go from 64 to 32 channels at stride 2"):
        CSCBlock(64, 32, stride=2, kernel_size=3, expansion=1)


def test_shiftnet_a_uses_5x5_shifts_early_and_expansion_is_configurable():
    model = zoo.create_model("slim_shiftnet_a")
    assert [stage[1].conv2.shift.kernel_size for stage in model.stages] == [5, 5, 3, 3]
    assert [len(stage) for stage in model.stages] == [5, 6, 7, 3]
    assert zoo.create_model("slim_shiftresnet20", expansion=1).stages[0][0].conv1.conv.out_channels == 16
    with pytest.raises(ValueError, match=r"depth: a CIFAR ResNet has depth 6n \+ 2 \(20, 56, 110\), got 21"):
        ShiftResNet(depth=21)

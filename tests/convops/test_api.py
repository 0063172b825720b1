"""fuse_ on small models and timm / torchvision CNNs: outputs stay equal (eval), the expected
modules are folded, swapped and fused, shared or multi-use modules are left alone, the report
says what happened."""

import copy

import pytest
import timm
import torch
import torchvision
from torch import nn

from slimtorch.convops import (
    ChannelShuffle,
    DepthwiseConv2d,
    FuseConfig,
    GroupedPointwiseConv2d,
    fuse_,
)
from slimtorch.convops.api import consumers
from slimtorch.core import reference_only
from slimtorch.core.registry import available_conversions
from slimtorch.core.testing import SmallCompactCNN, assert_rel_close, randn, rel_bound


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


def _count(model: nn.Module, kind: type) -> int:
    return sum(type(m) is kind for m in model.modules())


def _converted_matches(model: nn.Module, x: torch.Tensor, bound: float = 1e-5) -> nn.Module:
    with torch.no_grad():
        expected = model(x)
        converted = fuse_(copy.deepcopy(model)).model
        with reference_only():
            assert_rel_close(converted(x), expected, bound)
            assert_rel_close(converted(x.contiguous(memory_format=torch.channels_last)), expected, bound)
    return converted


def test_fold_bn_alone_keeps_outputs_and_removes_batchnorm():
    model = _randomise_bn(SmallCompactCNN())
    x = randn((2, 3, 16, 16), seed=1)
    only_fold = FuseConfig(depthwise=False, pointwise=False, fuse_activation=False, fuse_shuffle=False)
    with torch.no_grad():
        report = fuse_(copy.deepcopy(model), only_fold)
        folded = report.model
        assert_rel_close(folded(x), model(x), 1e-5)
    assert _count(folded, nn.BatchNorm2d) == 0 and all(
        type(m) is nn.Conv2d and m.bias is not None for m in folded.modules() if isinstance(m, nn.Conv2d)
    )
    assert report.converted["stem.0"] == "Conv2d -> Conv2d (folded stem.1)"
    assert report.converted["stem.1"] == "BatchNorm2d -> Identity (absorbed by stem.0)"
    with pytest.raises(
        ValueError, match=r"stem.1: fuse_ folds BatchNorm running statistics; call model.eval\(\) first"
    ):
        fuse_(copy.deepcopy(model).train())


def test_convert_small_cnn_fuses_every_chain(device):
    model = _randomise_bn(SmallCompactCNN())
    converted = _converted_matches(model, randn((2, 3, 16, 16), seed=2))
    dws = [m for m in converted.modules() if isinstance(m, DepthwiseConv2d)]
    pws = [m for m in converted.modules() if isinstance(m, GroupedPointwiseConv2d)]
    assert [m.activation for m in dws] == ["relu6"] * 3
    assert [(m.groups, m.activation) for m in pws] == [(1, "relu6"), (1, "relu6"), (4, "none")]
    assert _count(converted, nn.ReLU6) == 1, "only the stem's activation (after a dense 3x3) stays in torch"
    # the converted model through the kernels (interpreter here, GPU there: tf32 dots) against the
    # float model: a whole model, so not one kernel's bound — each of its 8 conv/linear layers (K ≤ 64)
    # adds its own rounding (BatchNorm folded in reorders the arithmetic) and passes the earlier ones on
    x = randn((1, 3, 12, 12), device=device, seed=3).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert_rel_close(converted.to(device)(x), model.to(device)(x), 8 * rel_bound(torch.float32, 64, device=device))


class _SharedReluBlock(nn.Module):
    """torchvision's BasicBlock pattern: one ReLU module applied twice, a residual add."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


def test_multi_use_modules_are_not_fused():
    converted = _converted_matches(_randomise_bn(_SharedReluBlock()), randn((2, 8, 7, 7), seed=4))
    assert isinstance(converted.conv1, DepthwiseConv2d) and converted.conv1.activation == "none"
    assert isinstance(converted.relu, nn.ReLU), "the shared ReLU stays a module"
    assert _count(converted, nn.BatchNorm2d) == 0


def test_shufflenet_v1_units_fuse_their_shuffles():
    model = nn.Sequential(
        nn.Conv2d(12, 12, 1, groups=3, bias=False),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.ChannelShuffle(3),
        nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False),
        nn.BatchNorm2d(12),
        nn.ChannelShuffle(4),
        nn.Conv2d(12, 24, 1, groups=4, bias=False),
        nn.BatchNorm2d(24),
        nn.ChannelShuffle(6),
    )
    converted = _converted_matches(_randomise_bn(model), randn((2, 12, 7, 9), seed=5))
    first, last = converted[0], converted[7]
    assert (first.activation, first.out_shuffle_groups, first.shuffle_groups) == ("relu", 3, None)
    assert (last.shuffle_groups, last.out_shuffle_groups) == (4, 6)
    assert isinstance(converted[4], DepthwiseConv2d)
    assert _count(converted, nn.ChannelShuffle) == 0 and _count(converted, ChannelShuffle) == 0


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.Hardswish())
        self.shuffle = nn.ChannelShuffle(2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            x = -x
        return self.shuffle(self.body(x))


def test_untraceable_models_fall_back_to_sequential_chains():
    model = _randomise_bn(_Untraceable())
    assert set(consumers(model)) == {"body.0", "body.1"}
    converted = _converted_matches(model, randn((2, 4, 5, 5), seed=6))
    assert converted.body[0].activation == "hardswish" and isinstance(converted.shuffle, ChannelShuffle)


def test_single_channel_stems_are_not_depthwise():
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1, groups=16))
    converted = fuse_(copy.deepcopy(model)).model
    assert type(converted[0]) is nn.Conv2d and isinstance(converted[1], DepthwiseConv2d)


def test_config_switches():
    model = _randomise_bn(SmallCompactCNN())
    converted = fuse_(copy.deepcopy(model), FuseConfig(depthwise=False, fuse_activation=False)).model
    assert _count(converted, DepthwiseConv2d) == 0
    assert {m.activation for m in converted.modules() if isinstance(m, GroupedPointwiseConv2d)} == {"none"}


@pytest.mark.parametrize(
    "name,build",
    [
        ("timm mobilenetv2_050", lambda: timm.create_model("mobilenetv2_050")),
        ("timm mobilenetv3_small_050", lambda: timm.create_model("mobilenetv3_small_050")),
        ("torchvision shufflenet_v2_x0_5", lambda: torchvision.models.shufflenet_v2_x0_5()),
    ],
)
def test_compact_cnns_convert_with_equal_outputs(name, build):
    torch.manual_seed(0)
    converted = _converted_matches(_randomise_bn(build()), randn((2, 3, 32, 32), seed=7))
    assert _count(converted, DepthwiseConv2d) > 0 and _count(converted, nn.BatchNorm2d) == 0


def test_format_is_registered():
    fmt = next(f for f in available_conversions("cpu") if f.name == "fused")
    assert fmt.family == "convops"
    converted = fmt.convert(_randomise_bn(SmallCompactCNN())).model
    assert _count(converted, DepthwiseConv2d) == 3


def test_fuse_again_is_a_no_op_and_filter_fn_leaves_modules_alone():
    model = _randomise_bn(SmallCompactCNN())
    fused = fuse_(copy.deepcopy(model)).model
    again = fuse_(fused)
    assert not again.converted and again.bytes_after == again.bytes_before
    report = fuse_(copy.deepcopy(model), filter_fn=lambda m, fqn: not fqn.startswith("dw1"))
    assert report.skipped["dw1.0"] == "excluded by filter_fn" and type(report.model.dw1[0]) is nn.Conv2d
    with pytest.raises(TypeError, match=r"config: expected a FuseConfig, got dict"):
        fuse_(model, {"fold_bn": True})

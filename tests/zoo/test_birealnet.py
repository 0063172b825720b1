"""Bi-Real Net-18 (slimtorch.zoo.birealnet): the paper's structure, ResNet-18 weights, the packed
deployment form, and the XNOR variant of another zoo model (the registry's "xnor" conversion)."""

import pytest
import torch
from torch import nn

import slimtorch.zoo as zoo
from slimtorch.core import registry
from slimtorch.core.dispatch import use_backend
from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.quant.binary import (
    XNOR_CONVERSION,
    BinarizeConfig,
    BinaryActivationConv2d,
    XnorConv2d,
    binarize_,
    freeze_,
)
from slimtorch.zoo.birealnet import BiRealBlock


def test_every_binary_conv_has_bn_and_its_own_real_shortcut():
    model = zoo.create_model("slim_birealnet18")
    blocks = [m for m in model.modules() if isinstance(m, BiRealBlock)]
    binary = [m for m in model.modules() if isinstance(m, BinaryActivationConv2d)]
    assert len(blocks) == len(binary) == 16 and all(b.conv in binary for b in blocks)
    assert all(c.ste == "approx" and not c.scale_activations and c.kernel_size == (3, 3) for c in binary)
    assert all(isinstance(b.bn, nn.BatchNorm2d) for b in blocks)
    projected = [b for b in blocks if not isinstance(b.downsample, nn.Identity)]
    assert [b.conv.stride for b in projected] == [(2, 2)] * 3  # the first block of stages 2-4
    for block in projected:  # AvgPool → real 1x1 conv → BN
        pool, conv, bn = block.downsample
        assert isinstance(pool, nn.AvgPool2d) and type(conv) is nn.Conv2d and conv.kernel_size == (1, 1)
        assert isinstance(bn, nn.BatchNorm2d)
    assert type(model.stem.conv) is nn.Conv2d and type(model.classifier) is nn.Linear  # first / last real
    x = randn((1, 3, 32, 32), seed=1)
    with torch.no_grad():
        x = model.stages[0][0](model.stem.eval()(x))  # stem, max pool
        for block in blocks[:2]:  # a real shortcut around the binary conv: out = BN(conv(x)) + x
            out = block.eval()(x)
            assert_rel_close(out, (block.bn(block.conv(x)) + x).double(), 1e-7)
            x = out


def test_resnet18_weights_load_where_the_paper_initialises_from():
    import torchvision

    theirs = torchvision.models.resnet18()
    ours = zoo.load_torchvision_weights(zoo.create_model("slim_birealnet18"), theirs.state_dict())
    pairs = {
        "conv1.weight": "stem.conv.weight",
        "layer1.0.conv2.weight": "stages.0.2.conv.weight",  # stage 0 starts with the max pool
        "layer3.0.conv1.weight": "stages.2.0.conv.weight",
        "layer3.1.bn2.running_var": "stages.2.3.bn.running_var",
        "layer4.0.downsample.0.weight": "stages.3.0.downsample.1.weight",
        "fc.weight": "classifier.weight",
    }
    state = ours.state_dict()
    for key, mine in pairs.items():
        assert torch.equal(state[mine], theirs.state_dict()[key]), key


def test_frozen_model_runs_packed_and_matches_the_float_model():
    torch.manual_seed(2)
    model = zoo.create_model("slim_birealnet18", num_classes=7).eval()
    x = randn((1, 3, 32, 32), seed=3)
    with torch.no_grad():
        expected = model(x)
    report = freeze_(model)
    assert len(report.converted) == 16 and all("XnorConv2d" in v for v in report.converted.values())
    assert sum(isinstance(m, XnorConv2d) for m in model.modules()) == 16
    with use_backend("reference"), torch.no_grad():
        out = model(x)
    # 16 binary layers in a row: the packed and float dot products differ by fp32 rounding only
    # (~1e-7); a sign flip of an activation that close to 0 would show as a ~1e-3 change
    assert_rel_close(out, expected.double(), 1e-5)


def test_xnor_variant_of_a_zoo_model(monkeypatch):
    """The registry's "xnor" (XNOR-Net: binary pointwise convs, first/last layers and depthwise real)."""
    monkeypatch.setitem(registry._REGISTRY, "xnor", XNOR_CONVERSION)  # the lead registers it in slimtorch.quant
    torch.manual_seed(4)
    model = zoo.create_model("slim_mobilenetv1_025", num_classes=5).eval()
    trainable = binarize_(model, BinarizeConfig()).model  # the trainable layers the variant freezes
    x = randn((2, 3, 32, 32), seed=5)
    with torch.no_grad():
        expected = trainable(x)
    torch.manual_seed(4)
    variant = zoo.create_model("slim_mobilenetv1_025", num_classes=5, variant="xnor")
    packed = [n for n, m in variant.named_modules() if isinstance(m, XnorConv2d)]
    assert len(packed) == 13 and all(".conv_pw" in n for n in packed)
    assert type(variant.stem.conv) is nn.Conv2d and type(variant.classifier) is nn.Linear
    with use_backend("reference"), torch.no_grad():
        assert_rel_close(variant(x), expected.double(), 1e-5)


@pytest.mark.parametrize("name", ["slim_birealnet18"])
def test_the_card_matches_torchvisions_resnet18_parameters(name):
    import torchvision

    with torch.device("meta"):
        theirs = sum(p.numel() for p in torchvision.models.resnet18().parameters())
    assert zoo.model_card(name).params == theirs

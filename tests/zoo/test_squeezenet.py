"""SqueezeNet Fire modules, the simple bypass and the widths."""

import pytest
import torch

import slimtorch.zoo as zoo
from slimtorch.core.testing import assert_exact, randn
from slimtorch.zoo.squeezenet import Fire, SqueezeNet, pruned_squeezenet_widths, squeezenet_widths


def test_fire_concatenates_its_expands_and_the_bypass_adds_its_input():
    fire = Fire(16, 4, 8, 8)
    x = randn((2, 16, 5, 5), seed=0)
    s = fire.squeeze(x)
    assert_exact(fire(x), torch.cat((fire.expand1x1(s), fire.expand3x3(s)), dim=1))
    fire.bypass = True
    assert_exact(fire(x), torch.cat((fire.expand1x1(s), fire.expand3x3(s)), dim=1) + x)


def test_the_bypass_sits_around_fire3_5_7_9_only():
    model = zoo.create_model("slim_squeezenet1_1_bypass")
    fires = [m for m in model.modules() if isinstance(m, Fire)]
    assert [f.bypass for f in fires] == [False, True, False, True, False, True, False, True]
    plain = zoo.create_model("slim_squeezenet1_1")
    assert not any(f.bypass for f in plain.modules() if isinstance(f, Fire))


def test_pooled_classifier_and_pre_logits():
    model = zoo.create_model("slim_squeezenet1_0", num_classes=4).eval()
    x = randn((1, 3, 64, 64), seed=1)
    with torch.no_grad():
        features = model.forward_features(x)
        assert_exact(model(x), model.classifier(features).relu().mean((2, 3)))
        assert_exact(model.forward_head(features, pre_logits=True), features.mean((2, 3)))


def test_widths_and_their_errors():
    pruned = pruned_squeezenet_widths(squeezenet_widths("1_1"), 0.5)
    assert pruned["stem"] == 64 and pruned["fires"][0] == {"squeeze": 8, "expand1x1": 32, "expand3x3": 32}
    with pytest.raises(ValueError, match=r"version: expected one of \['1_0', '1_1'\], got '1_2'"):
        SqueezeNet("1_2")
    assert SqueezeNet("1_1", widths=pruned, bypass=True).feature_info[-1]["num_chs"] == 256  # uniform: still fits
    uneven = squeezenet_widths("1_1")
    uneven["fires"][1]["expand1x1"] = 32
    with pytest.raises(ValueError, match=r"widths: a bypassed Fire module needs expand1x1 \+ expand3x3 == in \(128\)"):
        SqueezeNet("1_1", widths=uneven, bypass=True)
    with pytest.raises(ValueError, match="widths: expected 8 Fire modules, got 7"):
        SqueezeNet("1_0", widths={"stem": 96, "fires": pruned["fires"][:7]})

"""MobileNetV2 widths: the paper's, the pruned ones, and any a pruning tool may produce."""

import pytest
import torch

import slimtorch.zoo as zoo
from slimtorch.core.model_stats import count_parameters
from slimtorch.zoo.mobilenetv2 import MobileNetV2, mobilenetv2_widths, pruned_mobilenetv2_widths


def test_paper_widths_and_their_multipliers():
    widths = mobilenetv2_widths(1.0)
    assert widths["stem"] == 32 and widths["head"] == 1280
    assert [st["out"] for st in widths["stages"]] == [16, 24, 32, 64, 96, 160, 320]
    assert [st["mid"] for st in widths["stages"][:2]] == [[32], [96, 144]]
    small = mobilenetv2_widths(0.35)
    assert (small["stem"], small["head"], small["stages"][0]["out"]) == (16, 1280, 8)
    assert mobilenetv2_widths(1.4)["head"] == 1792


def test_pruning_keeps_the_residual_tied_widths():
    base = mobilenetv2_widths(1.0)
    pruned = pruned_mobilenetv2_widths(base, 0.5)
    assert pruned["stem"] == base["stem"] and pruned["head"] == 640
    assert [st["out"] for st in pruned["stages"]] == [st["out"] for st in base["stages"]]
    assert pruned["stages"][0]["mid"] == [32]  # the first block has no expand convolution to prune
    assert pruned["stages"][1]["mid"] == [48, 72]
    model = zoo.create_model("slim_mobilenetv2_100_pruned50")
    assert model.stages[1][0].conv_pw.conv.out_channels == 48 and model.final_conv.conv.out_channels == 640


def test_any_per_layer_widths_build():
    widths = mobilenetv2_widths(1.0)
    widths["stages"][3]["mid"] = [40, 200, 8, 384]  # uneven, as a pruning tool leaves them
    model = MobileNetV2(widths, num_classes=3)
    base = MobileNetV2(mobilenetv2_widths(1.0), num_classes=3)
    # per removed channel: its expand filter (in), 2 BatchNorms (2 + 2), its depthwise filter (9), pwl inputs (64)
    removed = sum(
        (m - n) * (in_chs + 2 + 9 + 2 + 64)
        for in_chs, m, n in zip([32, 64, 64, 64], [192, 384, 384, 384], [40, 200, 8, 384], strict=True)
    )
    assert count_parameters(base) - count_parameters(model) == removed
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_widths_that_do_not_fit_the_topology_are_refused():
    widths = mobilenetv2_widths(1.0)
    with pytest.raises(ValueError, match="widths: expected 7 stages, got 6"):
        MobileNetV2({**widths, "stages": widths["stages"][:6]})
    bad = mobilenetv2_widths(1.0)
    bad["stages"][2]["mid"] = [96, 96]
    with pytest.raises(ValueError, match=r"widths: stage 2 needs 3 mid widths, got \[96, 96\]"):
        MobileNetV2(bad)
    bad = mobilenetv2_widths(1.0)
    bad["stages"][0]["mid"] = [24]
    with pytest.raises(ValueError, match=r"mid_chs: a block without expand convolution needs mid == in \(32\), got 24"):
        MobileNetV2(bad)

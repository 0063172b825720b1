"""slimtorch.core.conversions: the one walk, its eligibility rule and its report."""

import copy
import dataclasses
import itertools

import pytest
import torch
from torch import nn

from slimtorch.core.conversions import (
    ConversionConfig,
    ConversionReport,
    GemmConversion,
    Replace,
    Skip,
    conversion_source,
    convert_model,
    gemm_source,
)
from slimtorch.core.modules import GemmConv2d, dense_linear
from slimtorch.core.testing import assert_rel_close, randn


class ShiftedConv(nn.Conv2d):
    """Does more than its base class and does not say so."""

    def forward(self, x):
        return super().forward(torch.roll(x, 1, dims=-1))


class PlainWhenUnfused(nn.Conv2d):
    def __init__(self, *args, fused: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused = fused

    def conversion_source(self):
        if self.fused:
            return "fuses something"
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, bias=self.bias is not None)
        conv.load_state_dict(self.state_dict())
        return conv


def test_the_eligibility_rule():
    linear, conv = nn.Linear(4, 3), nn.Conv2d(2, 3, 1)
    assert conversion_source(linear) is linear and conversion_source(conv) is conv
    assert conversion_source(nn.ReLU()) is None
    skip = conversion_source(ShiftedConv(2, 3, 1))
    assert (
        isinstance(skip, Skip) and skip.reason == "ShiftedConv subclasses nn.Conv2d without declaring what it computes"
    )
    out_proj = nn.MultiheadAttention(8, 2).out_proj
    assert "MultiheadAttention reads its weight" in conversion_source(out_proj).reason
    declared = conversion_source(PlainWhenUnfused(2, 3, 1))
    assert type(declared) is nn.Conv2d
    fused = conversion_source(PlainWhenUnfused(2, 3, 1, fused=True))
    assert fused == Skip("fuses something", descend=False)
    grouped = gemm_source(nn.Conv2d(4, 4, 3, groups=2))
    assert isinstance(grouped, Skip) and grouped.reason.startswith("groups=2: grouped/depthwise")

    class Liar(nn.Module):
        def conversion_source(self):
            return nn.ReLU()

    with pytest.raises(TypeError, match=r"Liar.conversion_source\(\): expected an nn.Linear, an nn.Conv2d or a reason"):
        conversion_source(Liar())


@dataclasses.dataclass(frozen=True)
class DoubleGemm(GemmConversion):
    """A test conversion: the GEMM module is a dense Linear with twice the weight."""

    def gemm_skip_reason(self, out_features, in_features):
        return "K too small" if in_features < 3 else None

    def to_gemm(self, linear):
        return Doubled(dense_linear(2 * linear.weight.detach(), linear.bias))


class Doubled(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x):
        return self.linear(x)

    def to_dense(self):
        return self.linear

    def conversion_source(self):
        return "already doubled"


def test_gemm_conversion_walks_keeps_computation_and_reports():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        ShiftedConv(4, 4, 1),
        nn.Conv2d(4, 4, 3, groups=4, padding=1),
        nn.Sequential(nn.Flatten(), nn.Linear(4 * 25, 2)),
        nn.Linear(2, 2),
    )
    x = randn((2, 3, 5, 5), seed=1)
    doubled = copy.deepcopy(model)  # what the conversion must compute: converted layers doubled, the rest as is
    with torch.no_grad():
        doubled[0].weight.mul_(2)
        doubled[3][1].weight.mul_(2)
        expected = doubled(x)
    report = convert_model(model, DoubleGemm(), conversion="double_")
    assert report.model is model and isinstance(report, ConversionReport)
    assert report.converted == {"0": "Conv2d -> GemmConv2d", "3.1": "Linear -> Doubled"}
    assert report.skipped == {
        "1": "ShiftedConv subclasses nn.Conv2d without declaring what it computes",
        "2": report.skipped["2"],
        "4": "K too small",
    }
    assert report.skipped["2"].startswith("groups=4")
    assert isinstance(model[0], GemmConv2d) and type(model[1]) is ShiftedConv
    with torch.no_grad():
        assert_rel_close(model(x), expected, 1e-6)
    again = convert_model(model, DoubleGemm(), conversion="double_")
    assert not again.converted and again.skipped["0"].startswith("already converted: a convolution run by Doubled")
    assert again.skipped["3.1"] == "already doubled"
    total = report + again
    assert total.converted == report.converted and total.bytes_before == report.bytes_before
    assert total.conversion == "double_(DoubleGemm()) + double_(DoubleGemm())"
    assert "converted 0: Conv2d -> GemmConv2d" in str(report)


def test_filter_fn_and_root_and_errors():
    report = convert_model(nn.Linear(4, 2), DoubleGemm(), conversion="double_")
    assert isinstance(report.model, Doubled) and report.converted == {"": "Linear -> Doubled"}
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.ReLU())
    report = convert_model(model, DoubleGemm(), lambda m, fqn: fqn != "1", conversion="double_")
    assert list(report.converted) == ["0"] and report.skipped == {"1": "excluded by filter_fn"}
    with pytest.raises(TypeError, match=r"model: expected a torch.nn.Module, got str"):
        convert_model("resnet", DoubleGemm(), conversion="double_")
    with pytest.raises(TypeError, match=r"config: expected a ConversionConfig \(a double_ config\), got dict"):
        convert_model(model, {}, conversion="double_")
    with pytest.raises(TypeError, match=r"filter_fn: expected a callable"):
        convert_model(model, DoubleGemm(), "0", conversion="double_")


@dataclasses.dataclass(frozen=True)
class FoldNext(ConversionConfig):
    """Replace each Linear by itself and absorb the ReLU after it (plan: who follows whom)."""

    def plan(self, model):
        names = [name for name, _ in model.named_children()]
        return dict(itertools.pairwise(names))

    def convert_module(self, module, fqn, plan):
        if type(module) is nn.ReLU:
            return Skip("a ReLU nobody absorbed")
        if type(module) is not nn.Linear:
            return None
        after = plan.get(fqn)
        return Replace(nn.Sequential(module, nn.ReLU()), ((after, nn.Identity()),), note=f"absorbed {after}")


def test_replace_with_absorbed_modules_applies_at_once_and_skips_them():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.Tanh())
    x = randn((2, 3), seed=2)
    with torch.no_grad():
        expected = model(x)
    report = convert_model(model, FoldNext(), conversion="fold_next_")
    assert report.converted["0"] == "Linear -> Sequential (absorbed 1)"
    assert report.converted["1"] == "ReLU -> Identity (absorbed by 0)"
    assert "1" not in report.skipped  # absorbed modules are not visited again
    assert isinstance(model[1], nn.Identity)
    assert report.converted["2"] == "Linear -> Sequential (absorbed 3)" and isinstance(model[3], nn.Identity)
    with torch.no_grad():  # Linear, ReLU, Linear, ReLU: the first block's function kept
        assert_rel_close(model[0](x), torch.relu(model[0][0](x)), 0.0)
        assert_rel_close(model(x), torch.relu(expected.atanh()), 1e-5)

"""The channel dependency graph, one coupling kind per test: the pruned model equals the
unpruned one (to fp32 rounding) when the removed channels' outputs were zero; clear errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.compress.prune import PruneConfig, Pruner, UntraceableModelError, build_graph, prune_channels_


def cbr(cin, cout, k=3, groups=1, stride=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


def randomize_bn_(model):
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


class Head(nn.Module):
    def __init__(self, c, classes=7):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 12)
        self.a = cbr(12, 20)
        self.b = nn.Sequential(nn.Conv2d(20, 12, 3, padding=1), nn.BatchNorm2d(12))
        self.head = Head(12)

    def forward(self, x):
        x = self.stem(x)
        return self.head(F.relu(x + self.b(self.a(x))))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 10)
        self.left, self.right = cbr(10, 6), cbr(10, 9, 1)
        self.mix = cbr(15, 11)
        self.head = Head(11)

    def forward(self, x):
        x = self.stem(x)
        return self.head(self.mix(torch.cat([self.left(x), self.right(x)], dim=1)))


class SplitShuffle(nn.Module):
    """ShuffleNetV2's unit by hand: chunk, branch, cat, reshape-transpose-reshape shuffle."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 14)
        self.branch = nn.Sequential(cbr(7, 9, 1), cbr(9, 9, 3, groups=9), cbr(9, 7, 1))
        self.head = Head(14)

    def forward(self, x):
        x = self.stem(x)
        kept, main = x.chunk(2, dim=1)
        x = torch.cat([kept, self.branch(main)], dim=1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(x)


class Grouped(nn.Module):
    def __init__(self, multiplier=1):
        super().__init__()
        self.stem = cbr(3, 12)
        self.group = cbr(12, 18, 3, groups=3)  # 4 inputs, 6 outputs per group
        self.dw = cbr(18, 18 * multiplier, 3, groups=18)
        self.head = Head(18 * multiplier)

    def forward(self, x):
        return self.head(self.dw(self.group(self.stem(x))))


class SE(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 13)
        self.reduce = nn.Conv2d(13, 5, 1)
        self.expand = nn.Conv2d(5, 13, 1)
        self.head = Head(13)

    def forward(self, x):
        x = self.stem(x)
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.head(x * gate)


class FlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(cbr(3, 9), nn.AdaptiveAvgPool2d(3))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(81, 17), nn.BatchNorm1d(17), nn.ReLU(), nn.Dropout(), nn.Linear(17, 5)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class OneChannel(nn.Module):
    """A 1-channel conv (groups == in_channels == 1) is an ordinary conv, not depthwise."""

    def __init__(self):
        super().__init__()
        self.a = cbr(3, 1)
        self.b = nn.Conv2d(1, 10, 3, padding=1, groups=1)
        self.c = nn.Conv2d(10, 1, 1)
        self.d = nn.Conv2d(1, 1, 3, padding=1, groups=1)
        self.head = Head(1)

    def forward(self, x):
        return self.head(self.d(self.c(F.relu(self.b(self.a(x))))))


CASES = {
    "residual": Residual,
    "concat": Concat,
    "split_shuffle": SplitShuffle,
    "grouped_depthwise": Grouped,
    "depthwise_multiplier": lambda: Grouped(multiplier=2),
    "se": SE,
    "flatten_linear": FlattenLinear,
    "one_channel": OneChannel,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_pruned_equals_unpruned_when_removed_channels_are_zero(case, exact):
    torch.manual_seed(0)
    model = randomize_bn_(CASES[case]())
    exact(model, torch.randn(3, 3, 11, 13))


def test_residual_stream_is_one_group_and_head_output_is_kept():
    graph = build_graph(Residual().eval(), torch.randn(1, 3, 9, 9))
    places = {frozenset(m for m, slot in g.places if slot == "out") for g in graph.groups}
    assert frozenset({"stem.0", "b.0"}) in places  # the add ties stem and b
    assert all("head.fc" not in p for p in places)  # the classifier's outputs are the model's outputs


def test_one_channel_conv_is_not_depthwise():
    graph = build_graph(OneChannel().eval(), torch.randn(1, 3, 9, 9))
    d = graph.records["d"]
    assert not d.extra["depthwise"]
    assert graph.uf.find(int(d.slots["in"][0])) != graph.uf.find(int(d.slots["out"][0]))


def test_shuffle_ties_positions_across_groups():
    graph = build_graph(SplitShuffle().eval(), torch.randn(1, 3, 9, 9))
    (group,) = [g for g in graph.groups if any(m == "stem.0" for m, _ in g.places)]
    assert group.multiplicity == 2 and group.size == 7  # stem channel j and j+7 go together


def test_convops_shuffle_layers(exact):
    convops = pytest.importorskip("slimtorch.convops")

    class Unit(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = cbr(3, 10)
            self.branch = nn.Sequential(cbr(5, 6, 1), cbr(6, 5, 1))
            self.shuffle = convops.ShuffleConcat(2)
            self.mix = cbr(10, 8, 1)
            self.shuffle2 = convops.ChannelShuffle(2)
            self.head = Head(8)

        def forward(self, x):
            kept, main = self.stem(x).chunk(2, dim=1)
            return self.head(self.shuffle2(self.mix(self.shuffle(kept, self.branch(main)))))

    report = exact(randomize_bn_(Unit()), torch.randn(2, 3, 7, 9))
    assert {"stem.0", "branch.0.0", "mix.0"} <= set(report.converted)


def test_per_layer_ratios_rounding_and_report():
    torch.manual_seed(0)
    model = Concat().eval()
    x = torch.randn(1, 3, 9, 9)
    pruner = Pruner(model, x, ratio={"left.0": 0.5, "*": 0.0}, round_to=1)
    pruned = pruner.step()
    assert pruned.left[0].out_channels == 3 and pruned.right[0].out_channels == 9
    assert pruned.mix[0].in_channels == 12
    assert "left.0" in pruner.report.converted and "mix.0" in pruner.report.converted
    model = Concat().eval()
    pruned = Pruner(model, x, PruneConfig(ratio=0.3, round_to=4)).step()
    assert pruned.left[0].out_channels == 4 and pruned.right[0].out_channels == 8  # multiples of 4


def test_ignored_layers_and_filter_fn():
    x = torch.randn(1, 3, 9, 9)
    model = Concat().eval()
    pruned = Pruner(model, x, ratio=0.5, round_to=1, ignored_layers=[model.left]).step()
    assert pruned.left[0].out_channels == 6 and pruned.right[0].out_channels < 9
    report = prune_channels_(
        Concat().eval(), PruneConfig(ratio=0.5, round_to=1), lambda m, n: n != "right.0", example_inputs=x
    )
    assert report.model.right[0].out_channels == 9
    assert "ignored" in report.skipped["right.0"] or "kept" in report.skipped["right.0"]


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_ratio_out_of_range_raises(ratio):
    with pytest.raises(ValueError, match=r"ratio: expected a fraction of channels to remove in \[0, 1\)"):
        PruneConfig(ratio=ratio)
    with pytest.raises(ValueError, match=r"ratio\['a'\]"):
        PruneConfig(ratio={"a": ratio})


def test_bad_arguments_raise():
    x = torch.randn(1, 3, 9, 9)
    with pytest.raises(ValueError, match="ratio: no layer named 'nope'"):
        Pruner(Concat().eval(), x, ratio={"nope": 0.5}).step()
    with pytest.raises(ValueError, match="importance"):
        PruneConfig(importance="l7")
    with pytest.raises(TypeError, match="unknown option 'ratios'"):
        Pruner(Concat(), x, ratios=0.5)
    with pytest.raises(ValueError, match="round_to"):
        PruneConfig(round_to=0)


def test_untraceable_model_names_the_module():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.inner = Branchy()

        def forward(self, x):
            return self.inner(self.conv(x))

    with pytest.raises(UntraceableModelError, match=r"module 'inner' \(Branchy\)"):
        Pruner(Net(), torch.randn(1, 3, 5, 5), ratio=0.5).step()


def test_unknown_op_freezes_with_reason():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            return self.b(torch.softmax(self.a(x), dim=1))  # softmax over channels couples them all

    report = prune_channels_(Odd().eval(), PruneConfig(ratio=0.5, round_to=1), example_inputs=torch.randn(1, 3, 4, 4))
    assert "softmax" in report.skipped["a"]
    assert report.model.a.out_channels == 8

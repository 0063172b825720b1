"""profile(): the counting rules on hand-built models, the issue's goals, the compressed-layer
hooks, activation memory, and that profiling leaves the model as it was."""

import pytest
import torch
from torch import nn

import slimtorch.zoo as zoo
from slimtorch.core.model_stats import disk_bytes, memory_bytes
from slimtorch.zoo import blocks


def meta_model(name: str) -> nn.Module:
    with torch.device("meta"):
        return zoo.create_model(name)


@pytest.mark.parametrize(
    ("name", "params", "macs"),
    [
        ("slim_mobilenetv2_100", 3.50e6, 300e6),
        ("slim_shufflenetv2_x1_0", 2.28e6, 146e6),
        ("slim_squeezenet1_0", 1.25e6, None),
    ],
)
def test_the_issue_goals_within_two_percent(name, params, macs):
    prof = zoo.profile(meta_model(name))
    assert abs(prof.params - params) <= 0.02 * params, prof.summary()
    if macs is not None:
        assert abs(prof.macs - macs) <= 0.02 * macs, prof.summary()


def test_conv_linear_shift_and_norm_counting_rules():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True),  # 8×5×4 out, 3·9 per out
        nn.BatchNorm2d(8),
        nn.ReLU(),
        blocks.depthwise_conv(8, 3),  # 8×5×4 out, 1·9 per out
        blocks.grouped_pointwise_conv(8, 12, groups=4, shuffle_groups=2),  # 12×5×4 out, 2 per out
        blocks.shift2d(12, 3),  # free
        blocks.shift_conv(12, 6, 3, stride=2),  # 6×3×2 out, 12 per out
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),  # 5 out, 6 per out
    )
    prof = zoo.profile(model, (1, 3, 9, 7))
    assert prof.macs == 160 * 27 + 160 * 9 + 240 * 2 + 36 * 12 + 5 * 6
    assert prof.flops == 2 * prof.macs
    assert prof.other_flops == 2 * 160 + 160 + 36  # BN 2/element, ReLU 1/element, pooling 1/input element
    assert prof.params == sum(p.numel() for p in model.parameters())
    assert prof.conv_linear_params == prof.params - 16  # everything but the BatchNorm affine
    assert {layer.kind for layer in prof.layers if layer.macs} == {"conv", "linear"}
    assert prof.uncounted == []


class HalfSparseLinear(nn.Module):
    """Stands for a compressed layer: keeps half of a Linear's weights and says so."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(8, 4)

    def compressed_num_params(self) -> int:
        return 8 * 4 // 2 + 4

    def compressed_macs(self, input_shape: tuple[int, ...]) -> int:
        return input_shape[0] * 8 * 4 // 2

    def forward(self, x):
        return self.inner(x)


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return x * self.gain


def test_compressed_layers_are_counted_through_their_hooks_and_unknown_ones_listed():
    model = nn.Sequential(Scale(), HalfSparseLinear())
    prof = zoo.profile(model, (3, 8))
    assert prof.macs == 3 * 16 and prof.params == 8 + 20
    assert [layer.name for layer in prof.layers] == ["0", "1"]  # the hooked layer is not descended into
    assert prof.uncounted == ["0"]


def test_activation_memory_skips_in_place_outputs_and_reports_the_largest_layer():
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(inplace=True), nn.Conv2d(4, 1, 1))
    prof = zoo.profile(model, (1, 2, 3, 5))
    assert prof.activation_bytes == (4 * 15 + 15) * 4  # the in-place ReLU allocates nothing
    assert prof.peak_activation_bytes == (2 * 15 + 4 * 15) * 4
    half = zoo.profile(model.half(), (1, 2, 3, 5))
    assert half.activation_bytes == prof.activation_bytes // 2 and half.memory_bytes == prof.memory_bytes // 2


def test_profile_leaves_the_model_as_found_and_reports_stored_bytes():
    model = zoo.create_model("slim_shufflenetv2_x0_5").train()
    model.stages[0][0].conv_dw.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prof = zoo.profile(model, (2, 3, 32, 32))
    assert model.training and not model.stages[0][0].conv_dw.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics untouched
    assert prof.memory_bytes == memory_bytes(model) and prof.disk_bytes == disk_bytes(model)
    on_meta = zoo.profile(meta_model("slim_shufflenetv2_x0_5"), (2, 3, 32, 32))
    assert on_meta.disk_bytes is None and on_meta.memory_bytes == prof.memory_bytes
    assert (on_meta.macs, on_meta.activation_bytes) == (prof.macs, prof.activation_bytes)
    assert "MACs" in prof.summary()


def test_profile_refuses_what_is_not_a_module_or_a_size():
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module, got str"):
        zoo.profile("slim_mobilenetv2_100")
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module, got OrderedDict"):
        zoo.profile(nn.Linear(2, 2).state_dict(), (1, 2))
    for size in ((1, 3, 0, 32), 224, (1, 3, 32.0, 32), ()):
        with pytest.raises(ValueError, match=r"input_size: expected a tuple of positive ints such as \(1, 3, 224"):
            zoo.profile(nn.Conv2d(3, 4, 3), size)

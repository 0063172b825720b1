import copy

import pytest
import safetensors.torch
import torch
from torch import nn

from slimtorch.core import model_stats, reference_only, registry
from slimtorch.core.conversions import ConversionReport
from slimtorch.core.testing import SmallCompactCNN, randn


def test_registry_lists_core_conversions_and_filters_by_device():
    names = {f.name for f in registry.available_conversions()}
    assert {"fp16", "bf16"} <= names
    assert "fp16" not in {f.name for f in registry.available_conversions("cpu")}
    assert registry.get_conversion("bf16").family == "core"
    with pytest.raises(TypeError, match="name: expected a conversion name"):
        registry.get_conversion(3)


def test_name_clash_across_families_is_rejected():
    entry = registry.RegisteredConversion("bf16", "other", "clash", convert=lambda m: m)
    with pytest.raises(ValueError, match="already registered by 'core'"):
        registry.register_conversion(entry)


@pytest.mark.parametrize("entry", registry.available_conversions("cpu"), ids=lambda f: f.name)
def test_every_cpu_conversion_converts_the_small_cnn(entry):
    torch.manual_seed(0)
    model = SmallCompactCNN(width=32).eval()  # the head's K = 128: every group size fits somewhere
    report = entry.convert(copy.deepcopy(model))
    assert isinstance(report, ConversionReport) and report.converted
    x = randn((2, 3, 32, 32), seed=1)
    with torch.no_grad(), reference_only():  # model-level: the kernels are tested in their packages
        expected = model(x)
        out = report.model(x if entry.dtype is None else x.to(entry.dtype)).float()
    assert out.shape == (2, 10) and bool(torch.isfinite(out).all())
    # numbers, not only shapes: every conversion keeps the function (lossy formats loosely; a
    # dropped layer or a wrong kernel gives an SQNR near 0 dB)
    floor = {"binary": 0.5, "ternary": 0.5, "sparse24": 1.0, "block-sparse-50": 1.0}.get(entry.name, 10.0)
    assert model_stats_sqnr(expected, out) > floor, entry.name


def model_stats_sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    from slimtorch.core.metrics import sqnr

    return sqnr(ref, out)


class Halved(nn.Module):
    """A module that stores half of its weights (as a 2:4 layer would)."""

    def __init__(self):
        super().__init__()
        self.values = nn.Parameter(torch.zeros(8, 2))

    def compressed_num_params(self) -> int:
        return self.values.numel()


def test_count_parameters_uses_compressed_count():
    model = nn.Sequential(nn.Linear(4, 3), Halved())
    assert model_stats.count_parameters(model) == 4 * 3 + 3 + 16


class HalfMacs(nn.Module):
    """A compressed layer computing x @ W.T for a (6, 5) W at half the MACs (its own hook)."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(5, 6)  # never counted: the hook speaks for the whole layer

    def forward(self, x):
        return self.inner(x)

    def compressed_macs(self, input_shape) -> int:
        return input_shape[0] * 6 * 5 // 2


def test_count_macs_by_hand():
    # conv 3->8, 3x3, stride 2 on 9x11 -> 4x5 outputs; depthwise 8, 3x3 pad 1 (4x5); grouped 1x1 8->4, groups 2
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Conv2d(8, 4, 1, groups=2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 5, 5),
        HalfMacs(),
    )
    n = 3
    expected = n * (8 * 4 * 5 * 3 * 9 + 8 * 4 * 5 * 9 + 4 * 4 * 5 * 4 + 5 * 80 + 15)
    assert model_stats.count_macs(model, randn((n, 3, 9, 11))) == expected


def test_memory_bytes_counts_shared_once():
    lin = nn.Linear(10, 10, bias=False)
    model = nn.Sequential(lin, lin)
    model.register_buffer("scale", torch.zeros(5, dtype=torch.float16))
    assert model_stats.memory_bytes(model) == 10 * 10 * 4 + 5 * 2


def test_disk_bytes_is_a_loadable_safetensors_size():
    model = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8))
    tensors = model_stats.state_dict_tensors(model)
    blob = safetensors.torch.save(tensors)
    assert model_stats.disk_bytes(model) == len(blob)
    loaded = safetensors.torch.load(blob)
    assert set(loaded) == set(model.state_dict()) and torch.equal(loaded["0.weight"], model[0].weight)
    half = copy.deepcopy(model).half()
    assert model_stats.disk_bytes(half) < model_stats.disk_bytes(model)

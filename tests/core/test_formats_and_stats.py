import copy

import pytest
import safetensors.torch
import torch
from torch import nn

from slimtorch.core import formats, model_stats
from slimtorch.core.testing import SmallCompactCNN


def test_registry_lists_core_formats_and_filters_by_device():
    names = {f.name for f in formats.available_formats()}
    assert {"fp16", "bf16"} <= names
    assert "fp16" not in {f.name for f in formats.available_formats("cpu")}


def test_name_clash_across_families_is_rejected():
    fmt = formats.CompressionFormat("bf16", "other", "clash", convert=lambda m: m)
    with pytest.raises(ValueError, match="already registered by 'core'"):
        formats.register_format(fmt)


@pytest.mark.parametrize("fmt", formats.available_formats("cpu"), ids=lambda f: f.name)
def test_every_cpu_format_converts_the_small_cnn(fmt):
    model = SmallCompactCNN().eval()
    converted = fmt.convert(copy.deepcopy(model)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = converted(x if fmt.dtype is None else x.to(fmt.dtype))
    assert out.shape == (2, 10) and bool(torch.isfinite(out.float()).all())


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

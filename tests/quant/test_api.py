"""quantize_ on models, the report, configs, registered formats (the compressed file: test_container.py)."""

import copy

import pytest
import torch
from torch import nn

from slimtorch.core import reference_only
from slimtorch.core.metrics import sqnr
from slimtorch.core.modules import GemmConv2d
from slimtorch.core.registry import available_conversions
from slimtorch.core.testing import SmallCompactCNN, randn
from slimtorch.quant import api, layers
from slimtorch.quant.binary import XnorConv2d

CONFIGS = [
    api.Int8WeightOnlyConfig(),
    api.Int8DynamicActivationInt8WeightConfig(),
    api.Int4WeightOnlyConfig(group_size=32),
    api.BinaryWeightConfig(),
    api.TernaryWeightConfig(),
    api.CodebookWeightConfig(bits=4),
]
QUANT_FORMATS = [f for f in available_conversions() if f.family == "quant"]


def _cnn():
    torch.manual_seed(0)
    return SmallCompactCNN().eval()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_quantize_small_cnn_converts_every_eligible_layer(config):
    model = _cnn()
    x = randn((2, 3, 32, 32), seed=0)
    with torch.no_grad():
        expected = model(x)
    report = api.quantize_(model, config)
    assert report.model is model and report.bytes_after < report.bytes_before
    gemm_layers = {"stem.0", "pw1.0", "pw2.0", "head"}
    assert {"dw1.0", "dw2.0", "dw3.0", "pw3.0"} <= set(report.skipped)
    assert "groups=16" in report.skipped["dw1.0"]
    for name in gemm_layers:
        module = model.get_submodule(name)
        if name in report.converted:
            assert isinstance(module, layers.QuantizedLinear) or (
                isinstance(module, GemmConv2d) and isinstance(module.gemm, layers.QuantizedLinear)
            )
        else:  # every format converts any K (int4 pads K to its group size)
            raise AssertionError(f"{name} stayed float: {report.skipped[name]}")
    assert set(report.converted) | set(report.skipped) == gemm_layers | {"dw1.0", "dw2.0", "dw3.0", "pw3.0"}
    with reference_only(), torch.no_grad():
        assert sqnr(expected, model(x)) > 30


def test_quantize_filter_fn_and_root_linear():
    model = _cnn()
    report = api.quantize_(model, api.Int8WeightOnlyConfig(), lambda m, name: name == "head")
    assert list(report.converted) == ["head"] and isinstance(model.head, layers.Int8WeightOnlyLinear)
    assert report.skipped["stem.0"] == "excluded by filter_fn"
    assert isinstance(model.stem[0], nn.Conv2d)
    root = api.quantize_(nn.Linear(8, 3), api.Int8WeightOnlyConfig()).model
    assert isinstance(root, layers.Int8WeightOnlyLinear)


def test_quantize_skips_multihead_attention_out_proj():
    model = nn.Sequential(nn.MultiheadAttention(16, 2), nn.Linear(16, 4))
    report = api.quantize_(model, api.Int8WeightOnlyConfig())
    assert list(report.converted) == ["1"] and "MultiheadAttention" in report.skipped["0.out_proj"]


def test_quantize_errors():
    with pytest.raises(TypeError, match="config: expected a quantization config"):
        api.quantize_(_cnn(), "int8")
    with pytest.raises(ValueError, match=r"group_size: expected one of \(32, 64, 128\), got 16"):
        api.Int4WeightOnlyConfig(group_size=16)
    bad = nn.Linear(4, 2)
    with torch.no_grad():
        bad.weight[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"weight: expected finite values, found nan at index \[1, 2\]"):
        api.quantize_(bad, api.Int8WeightOnlyConfig())


def test_formats_are_registered():
    names = {f.name for f in QUANT_FORMATS}
    assert names == {
        "int8",
        "w8a8",
        "int4-g32",
        "int4-g128",
        "binary",
        "ternary",
        "codebook-4bit",
        "pow2-5bit",
        "pq-d4-c16",
        "xnor",
    }


@pytest.fixture(scope="module")
def mobilenetv2():
    timm = pytest.importorskip("timm")  # a test dependency (the package's `test` extra)
    return timm.create_model("mobilenetv2_050", pretrained=False, num_classes=10).eval()


@pytest.mark.parametrize("fmt", QUANT_FORMATS, ids=lambda f: f.name)
def test_registered_format_converts_timm_mobilenetv2(fmt, mobilenetv2):
    model = mobilenetv2
    x = randn((1, 3, 32, 32), seed=2)
    with reference_only(), torch.no_grad():
        converted = fmt.convert(copy.deepcopy(model)).model
        # XNOR packs convolutions as XnorConv2d (binary activations need their own implicit-GEMM conv)
        assert any(isinstance(m, (layers.QuantizedLinear, XnorConv2d)) for m in converted.modules())
        out = converted(x)
    # accuracy is not the point here (random weights, ~50 layers): it converts and runs
    assert out.shape == (1, 10) and bool(torch.isfinite(out).all())


@pytest.mark.gpu
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_quantized_cnn_runs_on_gpu_kernels(config):
    model = api.quantize_(_cnn().cuda(), config).model
    x = randn((4, 3, 32, 32), device="cuda", seed=3)
    with torch.no_grad():
        out = model(x)
        with reference_only():
            ref = model(x)
    # fp32 activations: the weight-only kernels use tf32 dots, W8A8 may round a re-quantized
    # activation the other way after a tiny upstream difference; a wrong kernel gives < 10 dB
    assert sqnr(ref, out) > 40

"""Quantized layers: kernel path vs reference path, state_dict, torch.compile, .to, Conv2d as GEMM."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.core import reference_only
from slimtorch.core.model_stats import count_parameters
from slimtorch.core.modules import GemmConv2d
from slimtorch.core.testing import assert_exact, assert_rel_close, randn, rel_bound
from slimtorch.quant import formats, layers

# Every linear layer class with options that fit K = 64 (the table later steps extend).
LINEAR_LAYERS = [
    (layers.Int8WeightOnlyLinear, {}),
    (layers.Int8DynamicActivationInt8WeightLinear, {}),
    (layers.Int4WeightOnlyLinear, {"group_size": 32}),
    (layers.BinaryLinear, {}),
    (layers.TernaryLinear, {"asymmetric": True}),
    (layers.CodebookLinear, {"bits": 3}),
]
IDS = [cls.__name__ for cls, _ in LINEAR_LAYERS]


def _dense(k=64, n=23, bias=True, seed=0):
    linear = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(randn((n, k), seed=seed, scale=0.2))
        if bias:
            linear.bias.copy_(randn((n,), seed=seed + 1))
    return linear


def _assert_kernel_matches_reference(module, x):
    out = module(x)
    with reference_only():
        ref = module(x)
    assert out.shape == ref.shape and out.dtype == x.dtype
    k = getattr(module, "gemm", module).in_features  # a GemmConv2d's K = C·kh·kw
    assert_rel_close(out, ref, rel_bound(x.dtype, k, device=x.device))
    return out


@pytest.mark.parametrize(("cls", "options"), LINEAR_LAYERS, ids=IDS)
def test_linear_layer_kernel_matches_reference(device, cls, options):
    layer = cls.from_dense(_dense(), **options).to(device)
    x = randn((2, 3, 64), dtype=torch.float16, device=device, seed=1)  # leading dims are flattened
    assert _assert_kernel_matches_reference(layer, x).shape == (2, 3, 23)
    dense = layer.to_dense()
    assert_exact(dense.weight.detach(), layer.dequantize())
    assert layer.compressed_num_params() == 64 * 23 + 23 == count_parameters(nn.Sequential(layer))


@pytest.mark.parametrize(("cls", "options"), LINEAR_LAYERS, ids=IDS)
def test_linear_layer_state_dict_round_trip(device, cls, options):
    layer = cls.from_dense(_dense(bias=False), **options).to(device)
    state = layer.state_dict()
    assert "weight" not in state and all(not t.dtype.is_floating_point for k, t in state.items() if k == "qweight")
    fresh = cls(64, 23, bias=False, device=device, **options)
    fresh.load_state_dict(state)
    x = randn((5, 64), device=device, seed=2)
    assert torch.equal(fresh(x), layer(x))
    assert fresh.describe() == layer.describe()
    assert isinstance(layers.build_layer(layer.describe()), cls)


@pytest.mark.parametrize(("cls", "options"), LINEAR_LAYERS, ids=IDS)
def test_linear_layer_compiles_fullgraph(device, cls, options):
    layer = cls.from_dense(_dense(), **options).to(device)
    x = randn((3, 64), dtype=torch.bfloat16, device=device, seed=3)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    assert_rel_close(compiled(x), layer(x), rel_bound(torch.bfloat16, 64, device=device))


@pytest.mark.parametrize(("cls", "options"), LINEAR_LAYERS, ids=IDS)
def test_linear_layer_to_dtype_and_meta(device, cls, options):
    layer = cls.from_dense(_dense(), **options).to(device)
    packed = {k: v.clone() for k, v in layer.state_dict().items() if not v.dtype.is_floating_point}
    half = layer.to(torch.float16)
    assert half.bias.dtype == torch.float16
    for key, value in half.state_dict().items():
        if key in packed:
            assert_exact(value, packed[key], name=key)  # packed integers never change
    _assert_kernel_matches_reference(half, randn((4, 64), dtype=torch.float16, device=device, seed=4))
    meta = half.to("meta")
    assert meta(torch.empty(7, 64, dtype=torch.float16, device="meta")).shape == (7, 23)


def test_int4_layer_from_and_to_gptq():
    packed = formats.quantize_int4(randn((16, 64), seed=5), 32)
    packed = packed._replace(zero=packed.zero.clamp(min=1))
    gptq = formats.to_gptq(packed)
    layer = layers.Int4WeightOnlyLinear.from_gptq(**gptq, bias=torch.ones(16))
    assert (layer.in_features, layer.out_features, layer.group_size) == (64, 16, 32)
    for key, value in layer.to_gptq().items():
        assert_exact(value, gptq[key], name=key)
    assert_exact(layer.dequantize(), formats.dequantize_int4(*packed))


def test_int4_layer_pads_in_features_and_refuses_gptq_export():
    layer = layers.Int4WeightOnlyLinear.from_dense(_dense(k=40), group_size=32)  # K = 40 pads to 64
    assert layer.qweight.shape == (8, layer.out_features) and layer.scale.shape == (2, layer.out_features)
    with pytest.raises(ValueError, match=r"in_features: GPTQ checkpoints hold whole groups, .* got 40"):
        layer.to_gptq()


# ----------------------------------------------------------------------------- Conv2d

CONVS = [  # (in, out, kernel, stride, padding, dilation, bias)
    (16, 21, 1, 1, 0, 1, False),  # 1x1: channels-last pixels, no im2col
    (32, 13, 1, 2, 0, 1, True),  # strided 1x1
    (4, 11, 3, 2, 1, 1, True),  # 3x3 through unfold (K = 36)
    (8, 9, (3, 1), 1, (2, 0), (2, 1), False),  # rectangular, dilated
]


@pytest.mark.parametrize(("cin", "cout", "kernel", "stride", "padding", "dilation", "bias"), CONVS)
def test_quantized_conv_matches_conv2d_with_dequantized_weight(
    device, cin, cout, kernel, stride, padding, dilation, bias
):
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=bias)
    qconv = GemmConv2d.from_dense(conv, layers.Int8WeightOnlyLinear.from_dense).to(device)
    x = randn((2, cin, 7, 9), device=device, seed=cin)
    dense = qconv.to_dense()
    expected = F.conv2d(x, dense.weight, dense.bias, stride, padding, dilation)
    out = _assert_kernel_matches_reference(qconv, x)
    bound = rel_bound(torch.float32, qconv.gemm.in_features, device=device)  # K = cin·kh·kw
    assert_rel_close(out, expected, bound)
    assert_rel_close(qconv(x[0]), expected[0], bound)  # unbatched input
    assert qconv.compressed_num_params() == conv.weight.numel() + (cout if bias else 0)


def test_quantized_conv_channels_last_and_state_dict(device):
    qconv = GemmConv2d.from_dense(
        nn.Conv2d(32, 24, 1), lambda lin: layers.Int4WeightOnlyLinear.from_dense(lin, group_size=32)
    )
    qconv = qconv.to(device)
    x = randn((1, 32, 5, 5), device=device, seed=0).to(memory_format=torch.channels_last)
    out = qconv(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    fresh = layers.build_layer(layers.describe_layer(qconv), device)
    fresh.load_state_dict(qconv.state_dict())
    assert torch.equal(fresh(x), out)


def test_quantized_conv_compiles_fullgraph(device):
    conv = nn.Conv2d(4, 12, 3, stride=2, padding=1)
    qconv = GemmConv2d.from_dense(conv, layers.TernaryLinear.from_dense).to(device)
    x = randn((2, 4, 9, 7), device=device, seed=5)
    compiled = torch.compile(qconv, fullgraph=True, backend="aot_eager")
    assert_rel_close(compiled(x), qconv(x), rel_bound(torch.float32, qconv.gemm.in_features, device=device))


def test_quantized_conv_rejects_grouped_and_mismatched():
    with pytest.raises(ValueError, match=r"conv: expected groups=1, numeric padding .*; groups=4: grouped/depthwise"):
        GemmConv2d.from_dense(nn.Conv2d(8, 8, 3, groups=4), layers.Int8WeightOnlyLinear.from_dense)
    linear = layers.Int8WeightOnlyLinear(10, 4)
    with pytest.raises(ValueError, match=r"gemm: expected in_features = in_channels·kh·kw = 2·3·3 = 18, got 10"):
        GemmConv2d(linear, 2, 3)
    with pytest.raises(ValueError, match="class: unknown quantized layer 'Nope'"):
        layers.build_layer({"class": "Nope"})

"""The depthwise forward's (k, k, C) weight copy and vector widths (issue 10 item 5): the exact (C, 1, k, k)
<-> (k, k, C_pad) round trip, the channel vector each layout gets, the kernel on channel counts that are no
multiple of 16 (ShuffleNetV2's 58, MobileNetV3's 72 at small odd images), the layer's cached copy (reused,
invalidated by an optimizer step, load_state_dict and .to()), gradients still in (C, 1, k, k), and
dispatch by measurement between our kernel and cuDNN (fake timers, no GPU)."""

import pytest
import torch
import torch.fx
import torch.nn.functional as F

from slimtorch.convops._layout import (
    KKC_CHANNEL_ALIGN,
    channel_vector,
    depthwise_weight_from_kkc,
    depthwise_weight_kkc,
)
from slimtorch.convops.depthwise import depthwise_conv2d, launch_depthwise_conv2d
from slimtorch.convops.layers import DepthwiseConv2d
from slimtorch.core import measured
from slimtorch.core.testing import assert_exact, assert_rel_close, order_measurer, randn, rel_bound


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("channels,k", [(5, 3), (13, 5), (58, 3), (16, 1)])
def test_kkc_round_trip_is_exact(channels, k, dtype):
    w = randn((channels, 1, k, k), dtype=dtype, seed=channels)
    kkc = depthwise_weight_kkc(w)
    c_pad = -(-channels // KKC_CHANNEL_ALIGN) * KKC_CHANNEL_ALIGN
    assert kkc.shape == (k, k, c_pad) and kkc.dtype == torch.float32 and kkc.is_contiguous()
    assert_exact(kkc[:, :, :channels], w[:, 0].permute(1, 2, 0).float())  # kkc[kh, kw, c] = w[c, 0, kh, kw]
    assert not kkc[:, :, channels:].any(), "the channel padding is zero"
    back = depthwise_weight_from_kkc(kkc, channels, dtype)
    assert back.dtype == dtype and back.shape == w.shape
    assert_exact(back, w)


def test_kkc_rejects_a_non_depthwise_weight():
    with pytest.raises(ValueError, match=r"weight: expected a depthwise weight \(C, 1, kh, kw\)"):
        depthwise_weight_kkc(torch.zeros(4, 2, 3, 3))
    with pytest.raises(ValueError, match=r"kkc: expected \(kh, kw, C_pad >= 20\)"):
        depthwise_weight_from_kkc(torch.zeros(3, 3, 16), 20, torch.float32)


@pytest.mark.parametrize(
    "channels,dtype,expected",
    [(58, torch.float16, 2), (72, torch.float16, 8), (116, torch.float16, 4), (120, torch.float16, 8),
     (232, torch.float16, 8), (144, torch.float16, 8), (72, torch.float32, 4), (58, torch.float32, 2)],
)  # fmt: skip
def test_channel_vector_of_channels_last(channels, dtype, expected):
    x = torch.empty(2, channels, 5, 7, dtype=dtype).contiguous(memory_format=torch.channels_last)
    assert channel_vector((x,), channels) == expected
    assert channel_vector((torch.empty(2, channels, 5, 7, dtype=dtype),), channels) == 1  # NCHW: W is contiguous
    # a channel slice of a wider tensor: the pixel pitch decides (232 channels of which 116 are read)
    wide = torch.empty(1, 2 * channels, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    assert channel_vector((wide[:, :channels],), channels) == expected


def _double(*tensors):
    return [None if t is None else t.double() for t in tensors]


@pytest.mark.parametrize(
    "channels,k,stride,padding,dilation,dtype,layout",
    [
        (58, 3, 1, [1, 1, 1, 1], 1, torch.float16, "nhwc"),
        (58, 3, 2, [1, 1, 1, 1], 1, torch.float32, "nhwc"),
        (72, 5, 2, [2, 2, 2, 2], 1, torch.float16, "nhwc"),
        (72, 3, 1, [2, 1, 0, 2], 2, torch.bfloat16, "nhwc"),
        (72, 3, 1, [2, 1, 0, 2], 2, torch.bfloat16, "nchw"),
        (13, 3, 2, [1, 1, 1, 1], 1, torch.float16, "nchw"),
    ],
    ids=["c58-fp16-s1", "c58-fp32-s2", "c72-fp16-k5s2", "c72-bf16-asym-d2", "c72-bf16-asym-d2-nchw", "c13-fp16-nchw"],
)
def test_kernel_on_channel_counts_off_sixteen(device, channels, k, stride, padding, dilation, dtype, layout):
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    x = randn((1, channels, 9, 7), dtype=dtype, device=device, seed=channels + k).contiguous(memory_format=fmt)
    w = randn((channels, 1, k, k), dtype=dtype, device=device, seed=3, scale=0.3)
    scale = randn((channels,), dtype=dtype, device=device, seed=4)
    shift = randn((channels,), dtype=dtype, device=device, seed=5)
    geometry = ([stride] * 2, padding, [dilation] * 2)
    out = depthwise_conv2d(x, w, scale, shift, None, *geometry, "relu6", depthwise_weight_kkc(w))
    ref = depthwise_conv2d.get_reference()(*_double(x, w, scale, shift), None, *geometry, "relu6")
    assert_rel_close(out, ref, rel_bound(dtype, k * k, device=device))
    assert out.is_contiguous(memory_format=fmt)
    derived = depthwise_conv2d(x, w, scale, shift, None, *geometry, "relu6")  # the launcher derives the copy
    assert_exact(derived, out)


def test_nan_in_gives_nan_out(device):
    x = randn((1, 58, 6, 5), device=device, seed=1).contiguous(memory_format=torch.channels_last)
    x[0, 7, 2, 3] = float("nan")
    w = randn((58, 1, 3, 3), device=device, seed=2)
    out = depthwise_conv2d(x, w, None, None, None, [1, 1], [1, 1, 1, 1], [1, 1], "none")
    assert bool(out[0, 7, 1:4, 2:5].isnan().all()) and not bool(out[0, 6].isnan().any())


def test_bad_kkc_is_named(device):
    x = randn((1, 5, 6, 6), device=device, seed=1)
    w = randn((5, 1, 3, 3), device=device, seed=2)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], "none")
    with pytest.raises(ValueError, match=r"weight_kkc: expected shape \(3, 3, C_pad\) with C_pad >= 5"):
        depthwise_conv2d(x, w, None, None, None, *geometry, torch.zeros(3, 3, 8, device=device))
    with pytest.raises((TypeError, ValueError), match="weight_kkc"):
        depthwise_conv2d(x, w, None, None, None, *geometry, torch.zeros(3, 3, 16, dtype=torch.float16, device=device))
    with pytest.raises(ValueError, match="weight_kkc: expected None without a weight"):
        depthwise_conv2d(x, None, None, None, None, *geometry, torch.zeros(1, 1, 16, device=device))


def _layer(device, channels=13):
    torch.manual_seed(0)
    return DepthwiseConv2d(channels, 3, stride=2, bias=True, activation="relu").to(device)


def _layer_ref(layer, x):
    return F.relu(F.conv2d(x.double(), layer.weight.double(), layer.bias.double(), 2, 1, 1, layer.in_channels))


def test_layer_caches_the_copy_until_the_weight_changes(device):
    layer = _layer(device)
    x = randn((2, 13, 9, 7), device=device, seed=7).contiguous(memory_format=torch.channels_last)
    kkc = layer.weight_kkc()
    assert layer.weight_kkc() is kkc, "cached: derived once"
    assert_exact(kkc, depthwise_weight_kkc(layer.weight))
    assert "_kkc_cache" not in str(layer.state_dict().keys()) and set(layer.state_dict()) == {"weight", "bias"}
    assert layer.weight.shape == (13, 1, 3, 3), "the parameter keeps torch's layout"

    # training: the gradient arrives in (C, 1, k, k), an optimizer step invalidates the copy
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    out = layer(x)
    assert_rel_close(out, _layer_ref(layer, x), rel_bound(torch.float32, 9, device=device))
    out.square().sum().backward()
    w64 = layer.weight.detach().double().requires_grad_()
    ref = F.relu(F.conv2d(x.double(), w64, layer.bias.detach().double(), 2, 1, 1, 13))
    ref.square().sum().backward()
    assert layer.weight.grad.shape == (13, 1, 3, 3)
    assert_rel_close(layer.weight.grad, w64.grad, rel_bound(torch.float32, 2 * 5 * 4 * 9, device=device))
    opt.step()
    after = layer.weight_kkc()
    assert after is not kkc
    assert_exact(after, depthwise_weight_kkc(layer.weight))
    assert_rel_close(layer(x), _layer_ref(layer, x), rel_bound(torch.float32, 9, device=device))

    # load_state_dict copies in place (a version bump)
    state = {k: v * 0.5 for k, v in layer.state_dict().items()}
    layer.load_state_dict(state)
    assert layer.weight_kkc() is not after
    assert_exact(layer.weight_kkc(), depthwise_weight_kkc(state["weight"]))

    # .to(dtype): a new storage
    half = layer.to(torch.float16)
    x16 = x.half()
    assert_exact(half.weight_kkc(), depthwise_weight_kkc(half.weight))
    assert_rel_close(half(x16), _layer_ref(half, x16), rel_bound(torch.float16, 9, device=device))

    # writes through .data bypass the version counter: clear_weight_cache() is the documented way
    cached = half.weight_kkc()
    half.weight.data.mul_(2)
    half.clear_weight_cache()
    assert half.weight_kkc() is not cached
    assert_exact(half.weight_kkc(), depthwise_weight_kkc(half.weight))


def test_layer_traces_with_torch_fx(device):
    """torch.fx symbolic tracing (timm's feature extraction) sees ``weight`` as a proxy: no cache lookup,
    the op derives the copy itself, and the traced graph computes what the layer does."""
    layer = _layer(device)
    x = randn((2, 13, 9, 7), device=device, seed=3).contiguous(memory_format=torch.channels_last)
    eager = layer(x)  # the cache is filled: the traced forward must not compare proxies with it
    graph = torch.fx.symbolic_trace(layer)
    assert_exact(graph(x), eager)


def test_launcher_stays_our_kernel():
    assert depthwise_conv2d.launcher is launch_depthwise_conv2d


@pytest.mark.parametrize(
    "times,expected", [((2.0, 1.0), "torch cudnn conv2d+epilogue"), ((1.0, 1.0), "triton"), ((1.0, 3.0), "triton")]
)
@pytest.mark.parametrize("padding", [[1, 1, 1, 1], [1, 0, 2, 1]], ids=["sym", "asym"])
def test_measured_choice_matches_the_reference(device, times, expected, padding):
    x = randn((3, 13, 9, 7), device=device, seed=11).contiguous(memory_format=torch.channels_last)
    w = randn((13, 1, 3, 3), device=device, seed=12, scale=0.3)
    scale, shift = randn((13,), device=device, seed=13), randn((13,), device=device, seed=14)
    geometry = ([2, 1], padding, [1, 1], "hardswish")
    ref = depthwise_conv2d.get_reference()(*_double(x, w, scale, shift), None, *geometry)
    m = order_measurer(*times)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        out = depthwise_conv2d(x, w, scale, shift, None, *geometry)
        ((slot, choice),) = m.choices.items()
        assert choice.choice == expected and not choice.errors
        assert slot[0] == "slimtorch::depthwise_conv2d" and slot[2].startswith("4,13,9,7,13,3,3,")  # batch 3 -> 4
        assert_rel_close(out, ref, rel_bound(torch.float32, 9, device=device))
        assert out.is_contiguous(memory_format=torch.channels_last)
        calls = m.timer.calls  # batch 4: the same bucket, not timed again
        again = depthwise_conv2d(torch.cat([x, x[:1]]), w, scale, shift, None, *geometry)
        assert m.timer.calls == calls and len(m.choices) == 1
        assert_rel_close(again[:3], ref, rel_bound(torch.float32, 9, device=device))


def test_shift_paths_are_not_measured(device):
    x = randn((1, 6, 5, 5), device=device, seed=1)
    offsets = torch.tensor([[1, 0], [0, -1], [0, 0], [-1, 1], [2, 0], [0, 2]], dtype=torch.int32, device=device)
    m = order_measurer()
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        depthwise_conv2d(x, None, None, None, offsets, [1, 1], [0] * 4, [1, 1], "none")
    assert not m.choices and m.timer.calls == 0

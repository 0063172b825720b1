"""Layers: equal to the torch modules they replace, state_dict-compatible with them (also through
safetensors), .to(dtype) / channels_last, torch.compile(fullgraph=True) and training."""

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.convops import (
    ActiveShift2d,
    ChannelShuffle,
    DepthwiseConv2d,
    GroupedPointwiseConv2d,
    Shift2d,
    ShiftConv2d,
    SparseShift2d,
    grouped_shift_offsets,
    integer_shift,
)
from slimtorch.core.dispatch import use_kernel
from slimtorch.core.testing import assert_exact, assert_rel_close, randn, rel_bound


def bound(k: int, device) -> float:
    """Two fp32 computations (ours and torch's, or eager and compiled) of K-long reductions: each is
    within rel_bound(fp32, K) of the exact result, so they are within twice that of each other."""
    return 2 * rel_bound(torch.float32, k, device=device)


def test_this_suite_runs_the_kernels(device):
    """Without a GPU the suite runs every Triton kernel in the interpreter (never silently the reference)."""
    assert use_kernel("triton", torch.zeros(1, device=device))


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module


def _roundtrip(layer: nn.Module, fresh: nn.Module) -> nn.Module:
    """state_dict -> safetensors bytes -> fresh module."""
    blob = safetensors.torch.save({k: v.contiguous() for k, v in layer.state_dict().items()})
    fresh.load_state_dict(safetensors.torch.load(blob))
    return fresh


@pytest.mark.parametrize("layout_name", ["nchw", "nhwc"])
def test_depthwise_layer_is_torch_conv_plus_activation(layout_name, layout, memory_format, device):
    conv = _seeded(nn.Conv2d(6, 12, 5, stride=2, padding=2, groups=6, bias=True)).to(device)
    layer = DepthwiseConv2d.from_dense(conv, activation="hardswish")
    assert layer.padding == (2, 2) and layer.weight.shape == (12, 1, 5, 5)
    x = layout(randn((2, 6, 9, 11), device=device, seed=1), layout_name)
    out = layer(x)
    assert_rel_close(out, F.hardswish(conv(x)), bound(25, device))  # K = 5·5 taps
    assert out.is_contiguous(memory_format=memory_format(layout_name))
    assert_rel_close(layer.to_dense()(x), out, bound(25, device))
    assert set(layer.state_dict()) == set(conv.state_dict()) == {"weight", "bias"}


def test_depthwise_layer_defaults_and_state_dict(device):
    layer = _seeded(DepthwiseConv2d(7, 3, dilation=2, bias=True)).to(device)
    assert layer.padding == (2, 2) and layer.groups == 7
    torch_conv = nn.Conv2d(7, 7, 3, padding=2, dilation=2, groups=7).to(device)
    torch_conv.load_state_dict(layer.state_dict())
    x = randn((1, 7, 9, 9), device=device, seed=2)
    assert_rel_close(layer(x), torch_conv(x), bound(9, device))
    fresh = _roundtrip(layer, DepthwiseConv2d(7, 3, dilation=2, bias=True).to(device))
    assert_exact(fresh(x), layer(x))


def test_depthwise_layer_to_half_and_channels_last(device):
    layer = _seeded(DepthwiseConv2d(8, 3, bias=True, activation="relu6")).to(device)
    x = randn((2, 8, 7, 7), device=device, seed=3)
    expected = layer(x)
    half = layer.to(torch.float16)
    out = half(x.half().contiguous(memory_format=torch.channels_last))
    assert out.dtype == torch.float16 and out.is_contiguous(memory_format=torch.channels_last)
    # x, the weights and the output each rounded to fp16 once (3 roundings; rel_bound allows 2·u per side)
    assert_rel_close(out, expected, 2 * rel_bound(torch.float16, 9, device=device))


def test_depthwise_layer_trains_with_torch_batchnorm(device):
    """DepthwiseConv2d → BatchNorm2d (training mode, torch) → ReLU6: the same gradients as torch's conv."""
    ours = nn.Sequential(_seeded(DepthwiseConv2d(6, 3, stride=2)), nn.BatchNorm2d(6), nn.ReLU6()).to(device)
    ref = nn.Sequential(nn.Conv2d(6, 6, 3, 2, 1, groups=6, bias=False), nn.BatchNorm2d(6), nn.ReLU6()).to(device)
    ref.load_state_dict(ours.state_dict())
    x = randn((3, 6, 9, 9), device=device, seed=4)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    (ours(x_ours) ** 2).sum().backward()
    (ref(x_ref) ** 2).sum().backward()
    pixels = 3 * 5 * 5  # the weight and BatchNorm gradients (and BN's statistics) sum over N·Ho·Wo
    assert_rel_close(x_ours.grad, x_ref.grad, bound(pixels, device), name="grad x")
    assert_rel_close(ours[0].weight.grad, ref[0].weight.grad, bound(pixels, device), name="grad weight")
    assert_rel_close(ours[1].weight.grad, ref[1].weight.grad, bound(pixels, device), name="grad bn weight")


def test_grouped_pointwise_layer_is_shuffle_conv_act_shuffle(device):
    layer = _seeded(
        GroupedPointwiseConv2d(12, 18, 3, shuffle_groups=4, out_shuffle_groups=3, bias=True, activation="relu")
    )
    layer = layer.to(device)
    dense = layer.to_dense()
    assert [type(m) for m in dense] == [nn.ChannelShuffle, nn.Sequential, nn.ChannelShuffle]
    x = randn((2, 12, 5, 7), device=device, seed=5).contiguous(memory_format=torch.channels_last)
    assert_rel_close(layer(x), dense(x), bound(4, device))  # K = 12 / 3 groups
    conv = nn.Conv2d(12, 18, 1, groups=3, bias=True).to(device)
    conv.load_state_dict(layer.state_dict())
    again = GroupedPointwiseConv2d.from_dense(conv, "relu", shuffle_groups=4, out_shuffle_groups=3)
    assert_exact(again(x), layer(x))
    fresh = _roundtrip(layer, GroupedPointwiseConv2d(12, 18, 3, 4, 3, bias=True, activation="relu").to(device))
    assert_exact(fresh(x), layer(x))


def test_channel_shuffle_module(device):
    x = randn((2, 12, 3, 5), device=device, seed=6)
    assert_exact(ChannelShuffle(4)(x), nn.ChannelShuffle(4)(x))
    assert ChannelShuffle(4).state_dict() == {}


def test_shift_modules(device):
    x = randn((2, 10, 7, 9), device=device, seed=7)
    shift = Shift2d(10, 3).to(device)
    assert shift.state_dict() == {} and torch.equal(shift.offsets.cpu(), grouped_shift_offsets(10, 3))
    assert_exact(shift(x), integer_shift(x, grouped_shift_offsets(10, 3).to(device)))

    active = ActiveShift2d(10).to(device)
    assert set(active.state_dict()) == {"offsets"}
    active(x).sum().backward()
    assert active.offsets.grad is not None and bool(active.offsets.grad.abs().sum() > 0)
    half = active.to(torch.float16)(x.half())
    assert half.dtype == torch.float16

    sparse = SparseShift2d(10, init_range=1.4).to(device)
    with torch.no_grad():
        sparse.offsets[:4] = 0.2  # rounds to (0, 0)
    assert sparse.num_shifted_channels() == int((torch.round(sparse.offsets[4:]) != 0).any(1).sum())
    trained = sparse(x)
    (trained.sum() + 0.1 * sparse.sparsity_loss()).backward()
    assert bool(sparse.offsets.grad[:4].abs().sum() > 0), "the L1 penalty and the shift reach every offset"
    with torch.no_grad():
        assert_exact(sparse.eval()(x), integer_shift(x, sparse.integer_offsets()))
        assert_exact(trained.detach(), sparse(x))


@pytest.mark.parametrize("stride", [1, 2])
def test_shift_conv_is_shift_then_1x1(stride, device):
    layer = _seeded(ShiftConv2d(9, 13, 3, stride=stride, bias=True, activation="relu")).to(device)
    assert set(layer.state_dict()) == {"weight", "bias"}, "a grouped ShiftConv2d stores what a 1x1 Conv2d does"
    x = randn((2, 9, 7, 8), device=device, seed=8).contiguous(memory_format=torch.channels_last)
    expected = F.relu(F.conv2d(layer.shift(x), layer.weight, layer.bias, stride=stride))
    assert_rel_close(layer(x), expected, bound(9, device))  # K = C_in
    x_grad, ref_grad = x.clone().requires_grad_(), x.clone().requires_grad_()
    layer(x_grad).square().sum().backward()
    fused_w_grad = layer.weight.grad.clone()
    layer.weight.grad = None
    F.relu(F.conv2d(layer.shift(ref_grad), layer.weight, layer.bias, stride=stride)).square().sum().backward()
    assert_rel_close(x_grad.grad, ref_grad.grad, bound(13, device), name="grad x")  # sums over C_out
    assert_rel_close(fused_w_grad, layer.weight.grad, bound(2 * 7 * 8, device), name="grad weight")  # N·H·W


@pytest.mark.parametrize("kind", ["sparse", "active"])
def test_shift_conv_learnable_shifts(kind, device):
    layer = _seeded(ShiftConv2d(6, 5, shift=kind)).to(device)
    assert set(layer.state_dict()) == {"weight", "shift.offsets"}
    x = randn((1, 6, 5, 7), device=device, seed=9)
    out = layer(x)
    assert_rel_close(out, F.conv2d(layer.shift(x), layer.weight), bound(6, device))
    out.sum().backward()
    assert layer.shift.offsets.grad is not None
    if kind == "sparse":  # the eval / no-grad path fuses the rounded shift into the GEMM
        with torch.no_grad():
            assert_rel_close(layer(x), out, bound(6, device))


LAYERS = {
    "depthwise": lambda: DepthwiseConv2d(6, 3, stride=2, bias=True, activation="silu"),
    "pointwise": lambda: GroupedPointwiseConv2d(6, 9, 3, shuffle_groups=2, out_shuffle_groups=3, activation="relu"),
    "shuffle": lambda: ChannelShuffle(3),
    "shift": lambda: Shift2d(6),
    "active_shift": lambda: ActiveShift2d(6),
    "shift_conv": lambda: ShiftConv2d(6, 4, activation="relu6"),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_compiles_fullgraph_and_trains(name, device):
    torch._dynamo.reset()
    layer = _seeded(LAYERS[name]()).to(device)
    x = randn((2, 6, 5, 7), device=device, seed=10).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x_eager, x_compiled = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected = layer(x_eager)
    assert_rel_close(compiled(x_compiled), expected, bound(25, device))  # K ≤ 3·3 taps, 6 channels
    expected.square().sum().backward()
    compiled(x_compiled).square().sum().backward()
    assert_rel_close(x_compiled.grad, x_eager.grad, bound(2 * 5 * 7, device))  # a backward sums ≤ N·H·W


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"kernel_size: expected odd sizes between 1 and 11, got 4x4"):
        DepthwiseConv2d(8, 4)
    with pytest.raises(ValueError, match=r"kernel_size: expected odd sizes between 1 and 11, got 13x13"):
        DepthwiseConv2d(8, 13)
    with pytest.raises(ValueError, match=r"activation: expected one of"):
        DepthwiseConv2d(8, 3, activation="tanh")
    with pytest.raises(ValueError, match=r"conv: expected a depthwise conv \(groups == in_channels"):
        DepthwiseConv2d.from_dense(nn.Conv2d(8, 8, 3, groups=2))
    with pytest.raises(ValueError, match=r"conv: padding_mode 'reflect' is not supported"):
        DepthwiseConv2d.from_dense(nn.Conv2d(8, 8, 3, groups=8, padding_mode="reflect"))
    with pytest.raises(ValueError, match=r"shuffle_groups: channels: expected a multiple of 5, got 12"):
        GroupedPointwiseConv2d(12, 12, 3, shuffle_groups=5)
    with pytest.raises(ValueError, match=r"conv: expected a 1x1 conv without padding"):
        GroupedPointwiseConv2d.from_dense(nn.Conv2d(8, 8, 3))
    with pytest.raises(ValueError, match=r"shift: expected one of \('grouped', 'sparse', 'active'\)"):
        ShiftConv2d(8, 8, shift="dense")
    with pytest.raises(ValueError, match=r"backend: expected one of"):
        Shift2d(8, backend="cupy")

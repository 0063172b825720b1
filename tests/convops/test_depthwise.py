"""Depthwise conv2d kernels (forward + epilogue, input and weight gradients) against
torch.nn.functional.conv2d(groups=C), in both layouts, over every stride / dilation / padding
combination (kernel, layout, dtype, activation, multiplier and epilogue rotated through them)."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from slimtorch.convops.depthwise import (
    depthwise_conv2d,
    depthwise_conv2d_grad_input,
    depthwise_conv2d_grad_weight,
)
from slimtorch.core import reference_only
from slimtorch.core.activations import ACTIVATIONS
from slimtorch.core.testing import assert_rel_close, randn, rel_bound

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PADDINGS = ("same", "zero", "asym")


def _case(i, stride, dilation, padding):
    k = (3, 5, 7)[(i // 2) % 3]
    pad = {"same": [k // 2 * dilation] * 4, "zero": [0] * 4, "asym": [1, 0, 2, 1]}[padding]
    h = 7 + (k - 1) * dilation  # odd and large enough for the unpadded kernel
    return dict(
        k=k,
        stride=stride,
        dilation=dilation,
        padding=pad,
        dtype=DTYPES[i % 3],
        layout=("nhwc", "nchw")[(i // 3) % 2],
        activation=ACTIVATIONS[i % len(ACTIVATIONS)],
        mult=2 if i % 4 == 3 else 1,
        epilogue=("bn", "bias", "none")[i % 3],
        c=5 + i % 8,
        hw=(h, h + 2),
        seed=i,
    )


CASES = [_case(i, *geometry) for i, geometry in enumerate(itertools.product((1, 2), (1, 2), PADDINGS))]


def _ids(case):
    geometry = f"k{case['k']}s{case['stride']}d{case['dilation']}p{''.join(map(str, case['padding']))}"
    rest = (case["layout"], str(case["dtype"])[6:], case["activation"], f"m{case['mult']}", case["epilogue"])
    return "-".join((geometry, *rest))


def _inputs(case, layout, device):
    dtype, c, m = case["dtype"], case["c"], case["mult"]
    x = layout(randn((2, c, *case["hw"]), dtype=dtype, device=device, seed=case["seed"]), case["layout"])
    w = randn((c * m, 1, case["k"], case["k"]), dtype=dtype, device=device, seed=case["seed"] + 100, scale=0.3)
    scale = shift = None
    if case["epilogue"] == "bn":
        scale = randn((c * m,), dtype=dtype, device=device, seed=case["seed"] + 200)
    if case["epilogue"] in ("bn", "bias"):
        shift = randn((c * m,), dtype=dtype, device=device, seed=case["seed"] + 300)
    return x, w, scale, shift


def _double(*tensors):
    return [None if t is None else t.double() for t in tensors]


def _geometry(case):
    return [case["stride"]] * 2, case["padding"], [case["dilation"]] * 2


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_forward_matches_conv2d(case, layout, memory_format, device):
    x, w, scale, shift = _inputs(case, layout, device)
    out = depthwise_conv2d(x, w, scale, shift, None, *_geometry(case), case["activation"])
    ref = depthwise_conv2d.get_reference()(*_double(x, w, scale, shift), None, *_geometry(case), case["activation"])
    assert_rel_close(out, ref, rel_bound(case["dtype"], case["k"] ** 2, device=device))  # K = kh·kw taps
    assert out.is_contiguous(memory_format=memory_format(case["layout"])), "the output keeps the input's layout"


def test_reference_is_conv2d_plus_epilogue():
    """The oracle itself: F.conv2d on the padded input, then scale, shift and activation."""
    x, w = randn((2, 6, 9, 11), seed=1).double(), randn((12, 1, 3, 3), seed=2).double()
    scale, shift = randn((12,), seed=3).double(), randn((12,), seed=4).double()
    ref = depthwise_conv2d.get_reference()(x, w, scale, shift, None, [2, 1], [1, 0, 2, 1], [1, 2], "relu6")
    z = F.conv2d(F.pad(x, (2, 1, 1, 0)), w, stride=(2, 1), dilation=(1, 2), groups=6)
    assert_rel_close(ref, (z * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)).clamp(0, 6), 1e-12)


def _offset_oracle(x, w, offsets, stride, padding, dilation):
    """Per-channel offsets by cropping a generously padded input per channel, then F.conv2d."""
    border = 16
    big = F.pad(x, (border,) * 4)
    h, w_in = x.shape[2] + padding[0] + padding[1], x.shape[3] + padding[2] + padding[3]
    crops = []
    for c, (dy, dx) in enumerate(offsets.tolist()):
        top, left = border - padding[0] + dy, border - padding[2] + dx
        crops.append(big[:, c : c + 1, top : top + h, left : left + w_in])
    return F.conv2d(torch.cat(crops, 1), w, stride=stride, dilation=dilation, groups=x.shape[1])


@pytest.mark.parametrize(
    "stride,padding,dilation,mult,layout_name",
    [([1, 1], [1, 1, 1, 1], [1, 1], 1, "nhwc"), ([2, 1], [0, 1, 2, 0], [1, 2], 2, "nchw")],
)
def test_per_channel_offsets(stride, padding, dilation, mult, layout_name, layout, device):
    x = layout(randn((2, 7, 9, 11), device=device, seed=7), layout_name)
    w = randn((7 * mult, 1, 3, 3), device=device, seed=8)
    offsets = torch.randint(-3, 4, (7, 2), generator=torch.Generator().manual_seed(9), dtype=torch.int32)
    out = depthwise_conv2d(x, w, None, None, offsets.to(device), stride, padding, dilation, "none")
    ref = depthwise_conv2d.get_reference()(
        x.double(), w.double(), None, None, offsets, stride, padding, dilation, "none"
    )
    assert_rel_close(ref, _offset_oracle(x.double().cpu(), w.double().cpu(), offsets, stride, padding, dilation), 1e-12)
    assert_rel_close(out, ref, rel_bound(torch.float32, 9, device=device))


GRAD_CASES = [
    # stride, padding, dilation, mult, offsets, layout, dtype
    ([1, 1], [1, 1, 1, 1], [1, 1], 1, False, "nhwc", torch.float32),
    ([2, 2], [1, 1, 1, 1], [1, 1], 2, False, "nchw", torch.float32),
    ([2, 1], [2, 0, 1, 2], [2, 1], 1, True, "nhwc", torch.float16),
    ([1, 2], [0, 0, 0, 0], [1, 1], 1, True, "nchw", torch.bfloat16),
]


@pytest.mark.parametrize("stride,padding,dilation,mult,with_offsets,layout_name,dtype", GRAD_CASES)
def test_gradient_kernels(
    stride, padding, dilation, mult, with_offsets, layout_name, dtype, layout, device, monkeypatch
):
    from slimtorch.convops import depthwise
    from slimtorch.core import gemm

    if dtype != torch.float32:  # split-K over the pixels for the weight gradient (few pixels per split)
        monkeypatch.setattr(depthwise, "_GRAD_WEIGHT_MIN_PIXELS", 16)
    c = 6
    x = layout(randn((2, c, 9, 7), dtype=dtype, device=device, seed=11), layout_name)
    w = randn((c * mult, 1, 3, 3), dtype=dtype, device=device, seed=12)
    offsets = None
    if with_offsets:
        offsets = torch.randint(-2, 3, (c, 2), generator=torch.Generator().manual_seed(13), dtype=torch.int32)
    geometry = (stride, padding, dilation)
    out_shape = depthwise_conv2d.get_reference()(x, w, None, None, offsets, *geometry, "none").shape
    g = layout(randn(out_shape, dtype=dtype, device=device, seed=14), layout_name)
    dx = depthwise_conv2d_grad_input(g, w, offsets, list(x.shape), *geometry)
    ref = depthwise_conv2d_grad_input.get_reference()(g.double(), w.double(), offsets, list(x.shape), *geometry)
    assert_rel_close(dx, ref, rel_bound(dtype, 9 * mult, device=device), name="grad_input")  # taps × multiplier
    dw = depthwise_conv2d_grad_weight(x, g, offsets, [3, 3], *geometry)
    ref = depthwise_conv2d_grad_weight.get_reference()(x.double(), g.double(), offsets, [3, 3], *geometry)
    assert_rel_close(dw, ref, rel_bound(dtype, g.numel() // g.shape[1], device=device), name="grad_weight")  # N·Ho·Wo
    assert int(gemm.splitk_counters(device, 1).abs().sum()) == 0


def test_gradient_references_agree_with_and_without_zero_offsets():
    """The tap gather/scatter references (offsets) equal torch.nn.grad's conv gradients at zero offsets."""
    x, w = randn((2, 4, 9, 8), seed=1).double(), randn((8, 1, 3, 5), seed=2).double()
    geometry = ([2, 1], [1, 2, 0, 2], [1, 2])
    g = randn((2, 8, 5, 2), seed=3).double()  # the conv's output size
    zero = torch.zeros(4, 2, dtype=torch.int32)
    for op, args in (
        (depthwise_conv2d_grad_input, (g, w, "OFF", list(x.shape), *geometry)),
        (depthwise_conv2d_grad_weight, (x, g, "OFF", [3, 5], *geometry)),
        (depthwise_conv2d, (x, w, None, None, "OFF", *geometry, "none")),
    ):
        with_zero = op.get_reference()(*[zero if a == "OFF" else a for a in args])
        with_none = op.get_reference()(*[None if a == "OFF" else a for a in args])
        assert_rel_close(with_zero, with_none, 1e-12, name=str(op))


@pytest.mark.parametrize(
    "layout_name,with_offsets,activation", [("nhwc", False, "silu"), ("nchw", True, "gelu"), ("nhwc", True, "none")]
)
def test_autograd_matches_reference(layout_name, with_offsets, activation, layout, grads_match, device):
    c = 5
    x = layout(randn((2, c, 9, 7), device=device, seed=21), layout_name).requires_grad_()
    w = randn((2 * c, 1, 3, 3), device=device, seed=22).requires_grad_()
    scale = randn((2 * c,), device=device, seed=23).requires_grad_(activation != "none")
    shift = randn((2 * c,), device=device, seed=24).requires_grad_()
    offsets = torch.tensor([[1, -1], [0, 2], [-2, 0], [0, 0], [3, 1]], dtype=torch.int32) if with_offsets else None
    args = (x, w, scale if activation != "none" else None, shift, offsets, [2, 1], [1, 1, 0, 2], [1, 1], activation)
    grads_match(depthwise_conv2d, depthwise_conv2d.get_reference(), args)


@pytest.mark.parametrize("with_offsets", [False, True])
def test_gradcheck_reference_path(with_offsets):
    """The backward formulas (epilogue derivative, input and weight gradients) against finite
    differences, in float64 on the reference path."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    scale = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
    shift = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
    offsets = torch.tensor([[1, -2], [0, 1]], dtype=torch.int32) if with_offsets else None
    with reference_only():
        assert torch.autograd.gradcheck(
            lambda *t: depthwise_conv2d(*t, offsets, [2, 1], [1, 1, 0, 1], [1, 2], "silu"), (x, w, scale, shift)
        )


def test_bad_arguments_are_named():
    x, w = torch.zeros(1, 4, 8, 8), torch.zeros(4, 1, 3, 3)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1])
    with pytest.raises(ValueError, match=r"weight: depthwise conv output channels must be a multiple of the input"):
        depthwise_conv2d(x, torch.zeros(6, 1, 3, 3), None, None, None, *geometry, "none")
    with pytest.raises(ValueError, match=r"weight: expected shape \(C_out, 1, kh, kw\) of a depthwise conv"):
        depthwise_conv2d(x, torch.zeros(4, 2, 3, 3), None, None, None, *geometry, "none")
    with pytest.raises(ValueError, match=r"weight: kernel size must be between 1 and 11, got 13x3"):
        depthwise_conv2d(x, torch.zeros(4, 1, 13, 3), None, None, None, *geometry, "none")
    with pytest.raises(TypeError, match=r"x: expected dtype one of \(float16, bfloat16, float32, float64\), got int32"):
        depthwise_conv2d(x.int(), w, None, None, None, *geometry, "none")
    with pytest.raises(TypeError, match=r"weight: expected dtype float32, got float16"):
        depthwise_conv2d(x, w.half(), None, None, None, *geometry, "none")
    with pytest.raises(ValueError, match=r"weight: expected a tensor on cpu \(the device of x\), got one on meta"):
        depthwise_conv2d(x, w.to("meta"), None, None, None, *geometry, "none")
    with pytest.raises(ValueError, match=r"shift: expected shape \(4\)"):
        depthwise_conv2d(x, w, None, torch.zeros(5), None, *geometry, "none")
    with pytest.raises(TypeError, match=r"offsets: expected dtype int32, got int64"):
        depthwise_conv2d(x, w, None, None, torch.zeros(4, 2, dtype=torch.int64), *geometry, "none")
    with pytest.raises(ValueError, match=r"stride: expected 2 positive ints, got \[0, 1\]"):
        depthwise_conv2d(x, w, None, None, None, [0, 1], [1, 1, 1, 1], [1, 1], "none")
    with pytest.raises(ValueError, match=r"x: spatial size \(2, 2\) is too small for kernel \(3, 3\)"):
        depthwise_conv2d(torch.zeros(1, 4, 2, 2), w, None, None, None, [1, 1], [0] * 4, [1, 1], "none")
    with pytest.raises(ValueError, match=r"activation: expected one of"):
        depthwise_conv2d(x, w, None, None, None, *geometry, "tanh")
    with pytest.raises(ValueError, match=r"grad: expected spatial size \(8, 8\)"):
        depthwise_conv2d_grad_input(torch.zeros(1, 4, 7, 8), w, None, [1, 4, 8, 8], *geometry)
    with pytest.raises(ValueError, match=r"kernel_size: expected 2 ints between 1 and 11"):
        depthwise_conv2d_grad_weight(x, torch.zeros(1, 4, 8, 8), None, [3], *geometry)


def test_meta_output_keeps_channels_last():
    x = torch.empty(2, 6, 9, 9, device="meta").contiguous(memory_format=torch.channels_last)
    out = depthwise_conv2d(
        x, torch.empty(12, 1, 5, 5, device="meta"), None, None, None, [2, 2], [2] * 4, [1, 1], "relu"
    )
    assert out.shape == (2, 12, 5, 5) and out.is_contiguous(memory_format=torch.channels_last)


def test_opcheck(device):
    x = randn((1, 3, 5, 5), device=device, seed=1).contiguous(memory_format=torch.channels_last)
    w, shift = randn((3, 1, 3, 3), device=device, seed=2), randn((3,), device=device, seed=3)
    torch.library.opcheck(
        depthwise_conv2d,
        (x, w, None, shift, None, [1, 1], [1, 1, 1, 1], [1, 1], "relu"),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


def test_autotune_keys_bucket_the_batch(monkeypatch):
    """Batch sizes 3 and 4 share every depthwise kernel's tuned config; 5 (next bucket) does not."""
    from slimtorch.convops import depthwise
    from slimtorch.core.tuning import autotune_key

    keys = {}
    for name in ("_depthwise_fwd_kernel", "_depthwise_grad_input_kernel", "_depthwise_grad_weight_kernel"):
        kernel = getattr(depthwise, name)
        record = lambda *a, kernel=kernel, name=name, **kw: keys.setdefault(name, []).append(
            autotune_key(kernel, a, kw)
        )
        monkeypatch.setattr(kernel, "run", record)
    weight = torch.ones(6, 1, 3, 3)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1])
    for n in (3, 4, 5):
        x = torch.ones(n, 6, 9, 11)
        depthwise_conv2d(x, weight, None, None, None, *geometry, "none")
        depthwise_conv2d_grad_input(x, weight, None, list(x.shape), *geometry)
        depthwise_conv2d_grad_weight(x, x, None, [3, 3], *geometry)
    assert len(keys) == 3 and all(k[0] == k[1] != k[2] for k in keys.values()), keys

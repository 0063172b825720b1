"""Grouped pointwise GEMM kernel (groups, input / output channel shuffles, fused shift, stride,
epilogue) and its weight-gradient kernel against the torch references, both layouts."""

import pytest
import torch
import torch.nn.functional as F

from slimtorch.convops.pointwise import pointwise_conv2d, pointwise_conv2d_grad_weight, transpose_groups
from slimtorch.core import reference_only
from slimtorch.core.testing import assert_rel_close, randn, rel_bound

OFFSETS = torch.tensor([[(c % 3) - 1, (c * 7 % 5) - 2] for c in range(12)], dtype=torch.int32)

CASES = [
    # c_in, c_out, groups, in_shuffle, out_shuffle, shifted, stride, layout, dtype, activation, epilogue
    (13, 21, 1, 1, 1, False, 1, "nhwc", torch.float16, "relu6", "bias"),
    (12, 18, 3, 1, 3, False, 1, "nchw", torch.float32, "relu", "bn"),
    (12, 20, 2, 4, 1, False, 1, "nhwc", torch.bfloat16, "none", "none"),
    (12, 17, 1, 1, 1, True, 2, "nchw", torch.float32, "hardswish", "bias"),
    (12, 18, 3, 3, 6, True, 2, "nhwc", torch.float32, "silu", "bn"),
]


def _ids(case):
    c_in, c_out, g, s_in, s_out, shifted, stride, layout, dtype, act, epi = case
    shift = "shift" if shifted else "noshift"
    return f"{c_in}to{c_out}-g{g}-in{s_in}-out{s_out}-{shift}-s{stride}-{layout}-{str(dtype)[6:]}-{act}-{epi}"


def _inputs(case, layout, device, seed=0):
    c_in, c_out, groups, _, _, shifted, _, layout_name, dtype, _, epilogue = case
    x = layout(randn((2, c_in, 9, 7), dtype=dtype, device=device, seed=seed), layout_name)
    w = randn((c_out, c_in // groups, 1, 1), dtype=dtype, device=device, seed=seed + 1, scale=0.3)
    scale = randn((c_out,), dtype=dtype, device=device, seed=seed + 2) if epilogue == "bn" else None
    shift = randn((c_out,), dtype=dtype, device=device, seed=seed + 3) if epilogue != "none" else None
    offsets = OFFSETS[:c_in].to(device) if shifted else None
    return x, w, scale, shift, offsets


def _double(*tensors):
    return [t.double() if t is not None and t.is_floating_point() else t for t in tensors]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_forward_matches_reference(case, layout, memory_format, device):
    x, w, scale, shift, offsets = _inputs(case, layout, device)
    groups, s_in, s_out, _, stride, _, dtype, activation, _ = case[2:]
    out = pointwise_conv2d(x, w, scale, shift, offsets, groups, s_in, s_out, stride, activation)
    ref = pointwise_conv2d.get_reference()(
        *_double(x, w, scale, shift, offsets), groups, s_in, s_out, stride, activation
    )
    assert_rel_close(out, ref, rel_bound(dtype, x.shape[1] // groups, device=device))  # K = C_in / groups
    assert out.is_contiguous(memory_format=memory_format(case[7]))


def test_reference_is_shift_shuffle_conv_shuffle():
    """The oracle: shift by cropping a padded input, torch's nn.ChannelShuffle, F.conv2d, activation."""
    x = randn((2, 12, 9, 7), seed=4).double()
    w, bias = randn((18, 4, 1, 1), seed=5).double(), randn((18,), seed=6).double()
    ref = pointwise_conv2d.get_reference()(x, w, None, bias, OFFSETS, 3, 3, 6, 2, "relu")
    big = F.pad(x, (4, 4, 4, 4))
    crops = [big[:, c : c + 1, 4 + dy : 4 + dy + 9, 4 + dx : 4 + dx + 7] for c, (dy, dx) in enumerate(OFFSETS.tolist())]
    shifted = torch.cat(crops, 1)
    z = F.relu(F.conv2d(torch.nn.ChannelShuffle(3)(shifted), w, bias, stride=2, groups=3))
    assert_rel_close(ref, torch.nn.ChannelShuffle(6)(z), 1e-12)


@pytest.mark.parametrize("case, split", [(CASES[1], True), (CASES[3], False), (CASES[4], True)], ids=str)
def test_grad_weight_kernel(case, split, layout, device, monkeypatch):
    """Split-K over the pixels (few pixels per split here, so the CPU suite reaches it) or not."""
    from slimtorch.convops import pointwise
    from slimtorch.core import gemm

    if split:
        monkeypatch.setattr(pointwise, "_GRAD_WEIGHT_MIN_PIXELS", 16)
    x, *_, offsets = _inputs(case, layout, device, seed=10)
    groups, s_in, _, _, stride, _, dtype = case[2:9]
    out_hw = ((x.shape[2] - 1) // stride + 1, (x.shape[3] - 1) // stride + 1)
    g = randn((2, case[1], *out_hw), dtype=dtype, device=device, seed=11)
    dw = pointwise_conv2d_grad_weight(x, g, offsets, groups, s_in, stride)
    ref = pointwise_conv2d_grad_weight.get_reference()(x.double(), g.double(), offsets, groups, s_in, stride)
    assert_rel_close(dw, ref, rel_bound(dtype, g.numel() // g.shape[1], device=device))  # K = N·Ho·Wo pixels
    assert int(gemm.splitk_counters(device, 1).abs().sum()) == 0


@pytest.mark.parametrize("case", [CASES[1], CASES[4]], ids=_ids)
def test_autograd_matches_reference(case, layout, grads_match, device):
    x, w, scale, shift, offsets = _inputs(case, layout, device, seed=20)
    groups, s_in, s_out, _, stride, _, _, activation, _ = case[2:]
    args = [t.requires_grad_() if t is not None else None for t in (x, w, scale, shift)]
    grads_match(
        pointwise_conv2d,
        pointwise_conv2d.get_reference(),
        (*args, offsets, groups, s_in, s_out, stride, activation),
    )


def test_gradcheck_reference_path():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 6, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(4, 3, 1, 1, dtype=torch.float64, generator=gen, requires_grad=True)
    scale = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
    shift = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
    with reference_only():
        assert torch.autograd.gradcheck(
            lambda *t: pointwise_conv2d(*t, OFFSETS[:6], 2, 3, 2, 2, "gelu"), (x, w, scale, shift)
        )


def test_transpose_groups():
    w = torch.arange(2 * 3 * 4).float().view(6, 4, 1, 1)  # 2 groups of 3 outputs x 4 inputs
    t = transpose_groups(w, 2)
    assert t.shape == (8, 3, 1, 1)
    assert torch.equal(t[:4, :, 0, 0], w[:3, :, 0, 0].t()) and torch.equal(t[4:, :, 0, 0], w[3:, :, 0, 0].t())


def test_bad_arguments_are_named():
    x, w = torch.zeros(1, 12, 5, 5), torch.zeros(6, 4, 1, 1)
    with pytest.raises(ValueError, match=r"x channels \(for groups\): expected a multiple of 5, got 12"):
        pointwise_conv2d(x, torch.zeros(5, 2, 1, 1), None, None, None, 5, 1, 1, 1, "none")
    with pytest.raises(ValueError, match=r"weight: expected shape \(C_out, 4, 1, 1\) of a 1x1 conv with 3 groups"):
        pointwise_conv2d(x, torch.zeros(6, 4, 3, 3), None, None, None, 3, 1, 1, 1, "none")
    with pytest.raises(ValueError, match=r"weight output channels \(for groups\): expected a multiple of 3, got 5"):
        pointwise_conv2d(x, torch.zeros(5, 4, 1, 1), None, None, None, 3, 1, 1, 1, "none")
    with pytest.raises(ValueError, match=r"x channels \(for in_shuffle groups\): expected a multiple of 5, got 12"):
        pointwise_conv2d(x, w, None, None, None, 3, 5, 1, 1, "none")
    with pytest.raises(
        ValueError, match=r"weight output channels \(for out_shuffle groups\): expected a multiple of 4"
    ):
        pointwise_conv2d(x, w, None, None, None, 3, 1, 4, 1, "none")
    with pytest.raises(ValueError, match=r"stride: expected a positive value, got 0"):
        pointwise_conv2d(x, w, None, None, None, 3, 1, 1, 0, "none")
    with pytest.raises(TypeError, match=r"weight: expected dtype float32, got bfloat16"):
        pointwise_conv2d(x, w.bfloat16(), None, None, None, 3, 1, 1, 1, "none")
    with pytest.raises(ValueError, match=r"offsets: expected shape \(12, 2\)"):
        pointwise_conv2d(x, w, None, None, torch.zeros(6, 2, dtype=torch.int32), 3, 1, 1, 1, "none")
    with pytest.raises(ValueError, match=r"grad: expected shape \(N=1, a multiple of groups=3, 3, 3\)"):
        pointwise_conv2d_grad_weight(x, torch.zeros(1, 6, 5, 5), None, 3, 1, 2)


def test_opcheck(device):
    x = randn((1, 6, 3, 5), device=device, seed=1).contiguous(memory_format=torch.channels_last)
    w = randn((4, 3, 1, 1), device=device, seed=2)
    torch.library.opcheck(
        pointwise_conv2d,
        (x, w, None, None, OFFSETS[:6].to(device), 2, 3, 2, 1, "relu"),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


def test_autotune_keys_bucket_the_pixels(monkeypatch):
    """N·OH·OW = 3·63 and 4·63 pixels share the tuned configs (bucket 256); 5·63 does not."""
    from slimtorch.convops import pointwise
    from slimtorch.core.tuning import autotune_key

    keys = {}
    for name in ("_pointwise_fwd_kernel", "_pointwise_grad_weight_kernel"):
        kernel = getattr(pointwise, name)
        record = lambda *a, kernel=kernel, name=name, **kw: keys.setdefault(name, []).append(
            autotune_key(kernel, a, kw)
        )
        monkeypatch.setattr(kernel, "run", record)
    weight = torch.ones(8, 4, 1, 1)
    for n in (3, 4, 5):
        x = torch.ones(n, 4, 7, 9)
        pointwise_conv2d(x, weight, None, None, None, 1, 1, 1, 1, "none")
        pointwise_conv2d_grad_weight(x, torch.ones(n, 8, 7, 9), None, 1, 1, 1)
    assert len(keys) == 2 and all(k[0] == k[1] != k[2] for k in keys.values()), keys

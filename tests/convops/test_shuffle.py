"""Channel shuffle and ShuffleNet V2's concat + shuffle kernels: exact against torch's
nn.ChannelShuffle / cat, both layouts, every dtype; gradients; errors."""

import pytest
import torch

from slimtorch.convops.shuffle import channel_shuffle, channel_split, shuffle_concat
from slimtorch.core.testing import assert_exact, randn

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("layout_name", ["nchw", "nhwc"])
@pytest.mark.parametrize("channels,groups", [(12, 3), (10, 2), (7, 7)])
def test_channel_shuffle_is_exact(channels, groups, layout_name, dtype, layout, memory_format, device):
    x = layout(randn((2, channels, 5, 7), dtype=dtype, device=device, seed=channels), layout_name)
    out = channel_shuffle(x, groups)
    assert_exact(out, torch.nn.ChannelShuffle(groups)(x.cpu()).to(out.device))
    assert_exact(out, channel_shuffle.get_reference()(x, groups))
    assert out.is_contiguous(memory_format=memory_format(layout_name))


@pytest.mark.parametrize("layout_name", ["nchw", "nhwc"])
@pytest.mark.parametrize("c_a,c_b,groups", [(6, 6, 2), (5, 7, 3)])
def test_shuffle_concat_is_exact(c_a, c_b, groups, layout_name, layout, memory_format, device):
    a = layout(randn((2, c_a, 7, 5), device=device, seed=1), layout_name)
    b = randn((2, c_b, 7, 5), device=device, seed=2)  # b in NCHW whatever a's layout
    out = shuffle_concat(a, b, groups)
    assert_exact(out, torch.nn.ChannelShuffle(groups)(torch.cat([a, b], 1)))
    assert out.is_contiguous(memory_format=memory_format(layout_name))


def test_shuffle_concat_interleaves_halves():
    a, b = torch.arange(3.0).view(1, 3, 1, 1), 10 + torch.arange(3.0).view(1, 3, 1, 1)
    assert shuffle_concat(a, b, 2).flatten().tolist() == [0, 10, 1, 11, 2, 12]


def test_gradients_are_the_inverse_shuffle(device):
    a = randn((2, 6, 3, 5), device=device, seed=3).requires_grad_()
    b = randn((2, 4, 3, 5), device=device, seed=4).requires_grad_()
    g = randn((2, 10, 3, 5), device=device, seed=5)
    shuffle_concat(a, b, 5).backward(g)
    a_ref, b_ref = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    torch.nn.ChannelShuffle(5)(torch.cat([a_ref, b_ref], 1)).backward(g)
    assert_exact(a.grad, a_ref.grad)
    assert_exact(b.grad, b_ref.grad)
    x = randn((1, 6, 2, 3), dtype=torch.float64, seed=6).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: channel_shuffle(t, 3), (x,))


def test_channel_split_gives_views():
    x = torch.randn(2, 8, 3, 3)
    left, right = channel_split(x)
    assert left.data_ptr() == x.data_ptr() and torch.equal(right, x[:, 4:])
    with pytest.raises(ValueError, match=r"x channels \(for channel split\): expected a multiple of 3, got 8"):
        channel_split(x, 3)


def test_bad_arguments_are_named():
    x = torch.zeros(1, 6, 2, 2)
    with pytest.raises(ValueError, match=r"x channels \(for channel shuffle groups\): expected a multiple of 4, got 6"):
        channel_shuffle(x, 4)
    with pytest.raises(ValueError, match=r"groups: expected a positive value, got 0"):
        channel_shuffle(x, 0)
    with pytest.raises(ValueError, match=r"x: expected a 4-d tensor"):
        channel_shuffle(torch.zeros(6, 2, 2), 2)
    with pytest.raises(TypeError, match=r"b: expected dtype float32 \(the dtype of a\), got float16"):
        shuffle_concat(x, x.half(), 2)
    with pytest.raises(ValueError, match=r"b: expected shape \(N=1, \*, H=2, W=2\) \(a's\), got \(1, 6, 3, 2\)"):
        shuffle_concat(x, torch.zeros(1, 6, 3, 2), 2)
    with pytest.raises(ValueError, match=r"a \+ b channels \(for channel shuffle groups\): expected a multiple of 5"):
        shuffle_concat(x, x, 5)


def test_opcheck(device):
    x = randn((1, 6, 3, 5), device=device, seed=1).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(channel_shuffle, (x, 3))
    torch.library.opcheck(shuffle_concat, (x, randn((1, 4, 3, 5), device=device, seed=2), 2))


@pytest.mark.parametrize("kernel_name,groups", [("_channel_gather_kernel", 3), ("_interleave_kernel", 2)])
def test_autotune_key_buckets_the_image_size(monkeypatch, kernel_name, groups):
    from slimtorch.convops import shuffle
    from slimtorch.core.tuning import autotune_key

    keys = []
    kernel = getattr(shuffle, kernel_name)  # groups = 2 interleaves the halves, other groups gather
    monkeypatch.setattr(kernel, "run", lambda *a, **kw: keys.append(autotune_key(kernel, a, kw)))
    for h in (5, 7, 11):  # H·W = 35 and 49 (bucket 64), 77 (bucket 128); NCHW: the channel stride is H·W
        channel_shuffle(torch.ones(2, 6, h, 7), groups)
    channel_shuffle(torch.ones(2, 6, 5, 7).contiguous(memory_format=torch.channels_last), groups)
    assert len(keys) == 4 and keys[0] == keys[1] != keys[2] and keys[3] != keys[0]  # the layout is in the key

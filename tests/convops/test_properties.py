"""Property-based checks for slimtorch.convops (hypothesis, the suite's derandomized "ci" profile):
the depthwise and grouped pointwise kernels against their references on random small odd shapes,
kernel sizes, strides, paddings, dilations, groups, dtypes, memory formats (NCHW, channels_last,
a strided view) and a random NaN pixel (the same outputs NaN on both paths), bounds derived from
the reduction length and the dtype (core.testing.rel_bound)."""

import torch
from hypothesis import assume, event, given
from hypothesis import strategies as st

from slimtorch.convops.depthwise import depthwise_conv2d
from slimtorch.convops.pointwise import pointwise_conv2d
from slimtorch.core.testing import assert_forward_error, rel_bound

DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])
LAYOUTS = st.sampled_from(["nchw", "channels_last", "strided"])


def _image(n, c, h, w, dtype, layout, seed, nan):
    g = torch.Generator().manual_seed(seed)
    if layout == "strided":
        x = torch.randn(n, c, h, 2 * w, generator=g)[..., ::2]
    else:
        x = torch.randn(n, c, h, w, generator=g)
    x = x.to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if nan:
        x[n - 1, c // 2, h // 2, w // 2] = float("nan")
    return x


def _compare(out, ref, scale, k, dtype):
    """The same NaN outputs; the others by the forward-error bound ‖out − ref‖ ≤ rel_bound(dtype, k) ·
    ‖conv(|x|, |w|)‖ (``scale``: the reference on |x| and |w|), robust where outputs cancel."""
    assert out.shape == ref.shape and out.dtype == dtype
    event("NaN pixel" if bool(ref.isnan().any()) else "finite")
    assert torch.equal(out.isnan(), ref.isnan()), "the same outputs must be NaN on both paths"
    keep = ~ref.isnan()
    assert_forward_error(out[keep], ref[keep], scale[keep], rel_bound(dtype, k))


@given(
    n=st.integers(1, 2),
    c=st.integers(1, 11),
    mult=st.integers(1, 2),
    hw=st.tuples(st.integers(1, 11), st.integers(1, 11)),
    kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dtype=DTYPES,
    layout=LAYOUTS,
    nan=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_depthwise_kernel_matches_reference(
    n, c, mult, hw, kernel, stride, padding, dilation, dtype, layout, nan, seed
):
    (h, w), (kh, kw) = hw, kernel
    assume(h + padding[0] + padding[1] >= dilation[0] * (kh - 1) + 1)
    assume(w + padding[2] + padding[3] >= dilation[1] * (kw - 1) + 1)
    assume(max(padding[:2]) < kh * dilation[0] and max(padding[2:]) < kw * dilation[1])
    x = _image(n, c, h, w, dtype, layout, seed, nan)
    weight = torch.randn(c * mult, 1, kh, kw, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    geometry = (list(stride), list(padding), list(dilation))
    out = depthwise_conv2d(x, weight, None, None, None, *geometry, "none")
    reference = depthwise_conv2d.get_reference()
    ref = reference(x.double(), weight.double(), None, None, None, *geometry, "none")
    scale = reference(x.double().abs(), weight.double().abs(), None, None, None, *geometry, "none")
    _compare(out, ref, scale, kh * kw, dtype)


@given(
    n=st.integers(1, 2),
    groups=st.integers(1, 3),
    cin_per_group=st.integers(1, 13),
    cout_per_group=st.integers(1, 9),
    hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    stride=st.integers(1, 2),
    in_shuffle=st.booleans(),
    dtype=DTYPES,
    layout=LAYOUTS,
    nan=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_pointwise_kernel_matches_reference(
    n, groups, cin_per_group, cout_per_group, hw, stride, in_shuffle, dtype, layout, nan, seed
):
    c_in, c_out = groups * cin_per_group, groups * cout_per_group
    shuffle = groups if in_shuffle else 1
    x = _image(n, c_in, *hw, dtype, layout, seed, nan)
    weight = torch.randn(c_out, cin_per_group, 1, 1, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    args = (None, None, None, groups, shuffle, 1, stride, "none")
    out = pointwise_conv2d(x, weight, *args)
    ref = pointwise_conv2d.get_reference()(x.double(), weight.double(), *args)
    scale = pointwise_conv2d.get_reference()(x.double().abs(), weight.double().abs(), *args)
    _compare(out, ref, scale, cin_per_group, dtype)

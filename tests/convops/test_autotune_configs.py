"""Every autotune config of the convops kernels (depthwise forward / grad-input / grad-weight,
pointwise forward / grad-weight, channel gather), numerically, in the interpreter too (core.tuning
keeps only the first config there; ``use_config`` runs each other one), against the references."""

import pytest
import torch

from slimtorch.convops import depthwise, pointwise, shuffle
from slimtorch.core.testing import assert_exact, assert_rel_close, randn, rel_bound
from slimtorch.core.tuning import all_configs, use_config

GEOMETRY = ([2, 1], [1, 1, 0, 2], [1, 2])  # stride, padding (top, bottom, left, right), dilation
X = randn((2, 6, 9, 7), seed=1)
DW = randn((12, 1, 3, 3), seed=2)  # channel multiplier 2
PW = randn((9, 2, 1, 1), seed=3)  # 3 groups of 2 -> 3


def _double(*tensors):
    return [t.double() for t in tensors]


def _depthwise_fwd():
    out = depthwise.depthwise_conv2d(X, DW, None, None, None, *GEOMETRY, "none")
    ref = depthwise.depthwise_conv2d.get_reference()(*_double(X, DW), None, None, None, *GEOMETRY, "none")
    return out, ref, 9


def _depthwise_fwd_nhwc():  # channels_last, multiplier 1: 2-channel vectors (VEC = 2) through every tile shape
    x = X.contiguous(memory_format=torch.channels_last)
    out = depthwise.depthwise_conv2d(x, DW[::2], None, None, None, *GEOMETRY, "none")
    ref = depthwise.depthwise_conv2d.get_reference()(*_double(x, DW[::2]), None, None, None, *GEOMETRY, "none")
    return out, ref, 9


def _depthwise_grads(which):
    out_shape = depthwise.depthwise_conv2d.get_reference()(X, DW, None, None, None, *GEOMETRY, "none").shape
    g = randn(tuple(out_shape), seed=4)
    if which == "input":
        out = depthwise.depthwise_conv2d_grad_input(g, DW, None, list(X.shape), *GEOMETRY)
        ref = depthwise.depthwise_conv2d_grad_input.get_reference()(*_double(g, DW), None, list(X.shape), *GEOMETRY)
        return out, ref, 9
    out = depthwise.depthwise_conv2d_grad_weight(X, g, None, [3, 3], *GEOMETRY)
    ref = depthwise.depthwise_conv2d_grad_weight.get_reference()(*_double(X, g), None, [3, 3], *GEOMETRY)
    return out, ref, g.shape[0] * g.shape[2] * g.shape[3]


def _pointwise_fwd():
    args = (None, None, None, 3, 3, 1, 2, "none")
    return (
        pointwise.pointwise_conv2d(X, PW, *args),
        pointwise.pointwise_conv2d.get_reference()(*_double(X, PW), *args),
        2,
    )


def _pointwise_grad_weight():
    g = randn((2, 9, 5, 4), seed=5)
    out = pointwise.pointwise_conv2d_grad_weight(X, g, None, 3, 3, 2)
    ref = pointwise.pointwise_conv2d_grad_weight.get_reference()(*_double(X, g), None, 3, 3, 2)
    return out, ref, 2 * 5 * 4


KERNELS = {
    "depthwise fwd": (depthwise._depthwise_fwd_kernel, _depthwise_fwd),
    "depthwise fwd nhwc": (depthwise._depthwise_fwd_kernel, _depthwise_fwd_nhwc),
    "depthwise grad input": (depthwise._depthwise_grad_input_kernel, lambda: _depthwise_grads("input")),
    "depthwise grad weight": (depthwise._depthwise_grad_weight_kernel, lambda: _depthwise_grads("weight")),
    "pointwise fwd": (pointwise._pointwise_fwd_kernel, _pointwise_fwd),
    "pointwise grad weight": (pointwise._pointwise_grad_weight_kernel, _pointwise_grad_weight),
}
CASES = [(name, i) for name, (kernel, _) in KERNELS.items() for i in range(len(all_configs(kernel)))]
SHUFFLE_CASES = range(len(all_configs(shuffle._channel_gather_kernel)))
INTERLEAVE_CASES = range(len(all_configs(shuffle._interleave_kernel)))


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_every_config_matches_reference(name, index):
    kernel, case = KERNELS[name]
    config = all_configs(kernel)[index]
    with use_config(kernel, config):
        out, ref, k = case()
        assert kernel.best_config == config
    assert_rel_close(out, ref, rel_bound(torch.float32, k), name=f"{name} config {config}")


@pytest.mark.parametrize("index", SHUFFLE_CASES)
def test_every_channel_gather_config_is_exact(index):
    kernel = shuffle._channel_gather_kernel
    with use_config(kernel, all_configs(kernel)[index]):
        out = shuffle.shuffle_concat(X, X[:, :4] * 2, 2)
        assert kernel.best_config == all_configs(kernel)[index]
    assert_exact(out, shuffle.shuffle_concat.get_reference()(X, X[:, :4] * 2, 2))


@pytest.mark.parametrize("index", INTERLEAVE_CASES)
def test_every_interleave_config_is_exact(index):
    kernel = shuffle._interleave_kernel
    x = X.contiguous(memory_format=torch.channels_last)  # 6 channels: halves of 3 (VEC_IN 1, VEC_OUT 2)
    with use_config(kernel, all_configs(kernel)[index]):
        concat = shuffle.shuffle_concat(x, x * 2, 2)
        alone = shuffle.channel_shuffle(x, 2)
        assert kernel.best_config == all_configs(kernel)[index]
    assert_exact(concat, shuffle.shuffle_concat.get_reference()(x, x * 2, 2))
    assert_exact(alone, shuffle.channel_shuffle.get_reference()(x, 2))

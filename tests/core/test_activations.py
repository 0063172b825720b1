import pytest
import torch
import triton
import triton.language as tl
from torch import nn

from slimtorch.core.activations import (
    ACTIVATIONS,
    activation_backward,
    activation_of,
    activation_reference,
    apply_activation,
)
from slimtorch.core.testing import assert_rel_close, randn


@triton.jit
def _activation_kernel(x_ptr, out_ptr, n, ACTIVATION: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    tl.store(out_ptr + offs, apply_activation(x, ACTIVATION), mask=mask)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_triton_epilogue_matches_reference(device, activation):
    x = randn((301,), device=device, scale=4.0)
    out = torch.full_like(x, float("nan"))
    _activation_kernel[(triton.cdiv(301, 128),)](x, out, 301, ACTIVATION=activation, BLOCK=128)
    assert_rel_close(out, activation_reference(x.double(), activation), 1e-5)


@pytest.mark.parametrize(
    "module, name",
    [
        (nn.ReLU(), "relu"),
        (nn.ReLU6(), "relu6"),
        (nn.Hardswish(), "hardswish"),
        (nn.SiLU(), "silu"),
        (nn.GELU(), "gelu"),
    ],
)
def test_reference_matches_torch_modules(module, name):
    x = randn((64,), scale=4.0, seed=3)
    assert activation_of(module) == name
    assert_rel_close(activation_reference(x, name), module(x.clone()), 1e-6)


def test_unsupported():
    assert activation_of(nn.GELU(approximate="tanh")) is None
    assert activation_of(nn.Sigmoid()) is None
    with pytest.raises(ValueError, match=r"activation: expected one of \('none', 'relu'"):
        activation_reference(torch.zeros(1), "swish")


TORCH_MODULES = {
    "none": nn.Identity(),
    "relu": nn.ReLU(),
    "relu6": nn.ReLU6(),
    "hardswish": nn.Hardswish(),
    "silu": nn.SiLU(),
    "gelu": nn.GELU(),
}


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_backward_matches_torch_modules(activation, dtype):
    """The derivative agrees with autograd through torch's own modules (an independent definition)."""
    pre = (torch.linspace(-8, 8, 161, dtype=torch.float64) + 0.013).requires_grad_()  # off the kinks
    grad = torch.randn(161, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    (expected,) = torch.autograd.grad(TORCH_MODULES[activation](pre), pre, grad)
    out = activation_backward(grad.to(dtype), pre.detach().to(dtype), activation)
    assert out.dtype == dtype
    assert_rel_close(out, expected, 1e-12 if dtype == torch.float64 else 2e-3)
    assert activation_backward(grad, pre.detach(), activation, dtype=torch.float32).dtype == torch.float32

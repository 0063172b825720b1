"""The fused epilogue's torch side: activation derivatives and the epilogue backward."""

import pytest
import torch

from slimtorch.convops._epilogue import activation_grad, epilogue_backward, epilogue_reference
from slimtorch.core.activations import ACTIVATIONS, activation_reference
from slimtorch.core.testing import assert_rel_close


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_grad_matches_autograd(activation):
    pre = (torch.linspace(-8, 8, 161, dtype=torch.float64) + 0.013).requires_grad_()  # avoids the kinks
    grad = torch.randn(161, dtype=torch.float64)
    (expected,) = torch.autograd.grad(activation_reference(pre, activation), pre, grad)
    assert_rel_close(activation_grad(pre.detach(), grad, activation), expected, 1e-12)


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match=r"activation: expected one of .* got 'tanh'"):
        activation_grad(torch.zeros(1), torch.zeros(1), "tanh")


@pytest.mark.parametrize("with_scale,activation", [(True, "hardswish"), (False, "none"), (False, "gelu")])
def test_epilogue_backward_matches_autograd(with_scale, activation):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    scale = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True) if with_scale else None
    shift = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
    grad = torch.randn(2, 4, 3, 5, dtype=torch.float64, generator=gen)
    epilogue_reference(z, scale, shift, activation).backward(grad)
    g_z, g_scale, g_shift = epilogue_backward(grad, z.detach(), scale, shift, activation)
    assert_rel_close(g_z, z.grad, 1e-12)
    assert_rel_close(g_shift, shift.grad, 1e-12)
    if with_scale:
        assert_rel_close(g_scale, scale.grad, 1e-12)
    else:
        assert g_scale is None

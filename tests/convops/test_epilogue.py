"""The fused epilogue's torch side: the epilogue backward."""

import pytest
import torch

from slimtorch.convops._epilogue import epilogue_backward, epilogue_reference
from slimtorch.core.testing import assert_rel_close


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

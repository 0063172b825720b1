"""Helpers shared by the convops tests (as fixtures, so test modules need no imports from here)."""

import pytest
import torch

from slimtorch.core.testing import assert_rel_close, rel_bound

LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


@pytest.fixture
def layout():
    """Tensor in a named layout: layout(x, "nhwc")."""

    def to_layout(x: torch.Tensor, name: str) -> torch.Tensor:
        return x.contiguous(memory_format=LAYOUTS[name])

    return to_layout


@pytest.fixture
def memory_format():
    """The torch memory format of a layout name: memory_format("nhwc") is torch.channels_last."""
    return LAYOUTS.__getitem__


@pytest.fixture
def grads_match():
    """Gradients of ``op`` (the kernels' backward) against autograd through ``reference`` (pure
    torch, float64) for the same float32 inputs and a random output gradient.

    ``inputs``: tensors (grads compared where ``requires_grad``) and other arguments.
    """

    def check(op, reference, inputs, *, bound=None, seed=0):
        kernel_in = [t.detach().clone().requires_grad_(t.requires_grad) if torch.is_tensor(t) else t for t in inputs]
        ref_in = [
            t.detach().double().requires_grad_(t.requires_grad) if torch.is_tensor(t) and t.is_floating_point() else t
            for t in inputs
        ]
        out = op(*kernel_in)
        if bound is None:  # the longest reduction of a conv's backward: the weight (and BN) gradients sum over
            # N·Ho·Wo pixels, the input gradient over C_out (and the window); fp32 inputs
            k = max(out.numel() // max(out.shape[1], 1), out.shape[1] * 49)
            bound = rel_bound(torch.float32, k, device=out.device)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
        out.backward(grad.to(out.dtype))
        reference(*ref_in).backward(grad.double())
        checked = 0
        for i, (k, r) in enumerate(zip(kernel_in, ref_in, strict=True)):
            if torch.is_tensor(k) and k.requires_grad:
                assert_rel_close(k.grad, r.grad, bound, name=f"grad of input {i}")
                checked += 1
        assert checked, "no input required a gradient"

    return check

"""Helpers shared by the convops tests (as fixtures, so test modules need no imports from here),
and a compatibility shim for the Triton interpreter (belongs in slimtorch.core; see below)."""

import pytest
import torch

from slimtorch.core.testing import REL_BOUND, assert_rel_close


def _fix_interpreter_scalar_index() -> None:
    """Triton 3.6's interpreter turns a scalar tensor into a Python int with ``int(data)`` where
    ``data`` is a 1-element 1-d array, which NumPy >= 2.4 refuses ("only 0-dimensional arrays can
    be converted"), so any ``range(0, N, BLOCK)`` over a kernel argument fails in the interpreter.
    Triton 3.9 squeezes first; do the same for older interpreters. Compiled kernels are unaffected."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "squeezes_scalars", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.squeezes_scalars = True
    interpreter._patch_lang_tensor = patch_lang_tensor


_fix_interpreter_scalar_index()

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

    def check(op, reference, inputs, *, bound=REL_BOUND[torch.float32], seed=0):
        kernel_in = [t.detach().clone().requires_grad_(t.requires_grad) if torch.is_tensor(t) else t for t in inputs]
        ref_in = [
            t.detach().double().requires_grad_(t.requires_grad) if torch.is_tensor(t) and t.is_floating_point() else t
            for t in inputs
        ]
        out = op(*kernel_in)
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

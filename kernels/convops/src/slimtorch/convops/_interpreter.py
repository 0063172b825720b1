"""Workarounds for the Triton interpreter (CPU test runs only; private, meant for slimtorch.core).

Compiled kernels never go through here: both fixes apply only when ``TRITON_INTERPRET=1``.

1. Triton 3.6's interpreter converts a scalar to a Python int with ``int(data)`` where ``data`` is
   a 1-element 1-d array, which NumPy >= 2.4 refuses ("only 0-dimensional arrays can be converted
   to Python scalars"): every ``range(0, N, BLOCK)`` over a kernel argument fails. Triton 3.9
   squeezes first; :func:`patch_interpreter` does the same for older interpreters.
2. The interpreter (3.6 and 3.9) computes ``tl.dot`` on bfloat16 operands wrongly; kernels
   multiply bf16 tiles in fp32 there (:func:`upcast_dot`), compiled kernels use bf16 dots.
"""

import torch

from slimtorch.core.dispatch import interpreter_enabled


def patch_interpreter() -> None:
    """Make the interpreter's scalar -> int conversion NumPy-2.4-safe (idempotent, no-op when compiling)."""
    if not interpreter_enabled():
        return
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "squeezes_scalars", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.squeezes_scalars = True
    interpreter._patch_lang_tensor = patch_lang_tensor


def upcast_dot(dtype: torch.dtype) -> bool:
    """True where tl.dot operands must be upcast to fp32 (bf16 in the interpreter)."""
    return dtype == torch.bfloat16 and interpreter_enabled()

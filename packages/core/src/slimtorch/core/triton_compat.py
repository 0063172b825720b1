"""Differences between Triton versions and the Triton interpreter, handled in one place.

1. Loop bounds in the 3.6 interpreter. Triton 3.6's interpreter turns a runtime loop bound
   (``for k in range(0, tl.cdiv(K, BLOCK_K))``) into a Python int with ``int(array of shape
   (1,))``, which NumPy >= 2.3 rejects ("only 0-dimensional arrays can be converted to Python
   scalars"); Triton 3.9 squeezes the array first. :func:`install_interpreter_fixes` gives the 3.6
   interpreter the 3.9 behaviour. :func:`slimtorch.core.dispatch.use_kernel` installs it the first
   time it sends an op to a Triton kernel in the interpreter (never at import time, never for
   compiled kernels); it is idempotent, and code that launches a kernel directly in the
   interpreter (tests) calls it first.

2. bf16 ``tl.dot`` in the interpreter (3.6 and 3.9) multiplies raw bit patterns (errors ~1e10).
   Kernels pass ``UPCAST=upcast_dot_operands(x.dtype)`` as a constexpr (one name, ``UPCAST``, in
   every kernel) and call :func:`dot_acc`, which converts both tiles to fp32 before the dot only
   in that case. Compiled kernels always use native bf16 tensor-core dots.
"""

import torch
import triton
import triton.language as tl

from slimtorch.core.dispatch import interpreter_enabled


def install_interpreter_fixes() -> None:
    """Patch the Triton interpreter (only when TRITON_INTERPRET=1); safe to call repeatedly."""
    if not interpreter_enabled():
        return
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "slimtorch_squeezes_index", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.slimtorch_squeezes_index = True
    interpreter._patch_lang_tensor = patch_lang_tensor


def upcast_dot_operands(dtype: torch.dtype) -> bool:
    """True where ``tl.dot`` operands of ``dtype`` must be upcast to fp32: bf16 in the interpreter."""
    return interpreter_enabled() and dtype == torch.bfloat16


@triton.jit
def dot_acc(a, b, acc, UPCAST: tl.constexpr):
    """``acc + a @ b`` with fp32 accumulation; UPCAST (interpreter + bf16 only) multiplies in fp32."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc)

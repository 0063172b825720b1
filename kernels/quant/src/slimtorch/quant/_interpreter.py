"""Workarounds for the Triton interpreter (CPU test runs only; nothing here acts on a GPU run).

1. bf16 ``tl.dot``: the interpreter keeps bfloat16 tensors as raw uint16 and its ``tl.dot``
   multiplies those raw bits (triton 3.6 and 3.9: ``InterpreterBuilder.create_dot`` converts only
   8-bit floats), so a bf16 × bf16 dot returns garbage there. Kernels take a ``DOT_IN_FP32``
   constexpr from :func:`dot_in_fp32` and, when set, upcast both operands to fp32 before the dot
   (bf16 ⊂ fp32: the products are exact); compiled kernels keep feeding bf16 to the tensor cores.
2. Loops with runtime bounds (``for k in range(0, n)``): triton 3.6's interpreter turns a scalar
   into ``int(array of shape (1,))``, which NumPy ≥ 2.4 refuses ("only 0-dimensional arrays can
   be converted to Python scalars"); triton 3.9 squeezes first. :func:`patch_interpreter_index`
   installs 3.9's behaviour when the interpreter is on.

Candidates for slimtorch.core: every package whose Triton kernels use a bf16 ``tl.dot`` or a
runtime-bounded loop needs them to run its CPU tests on triton 3.6.
"""

import torch

from slimtorch.core.dispatch import interpreter_enabled


def dot_in_fp32(dtype: torch.dtype) -> bool:
    """True when a kernel's bf16 ``tl.dot`` must run in fp32: under the Triton interpreter only."""
    return dtype == torch.bfloat16 and interpreter_enabled()


def patch_interpreter_index() -> None:
    """Make interpreter scalars usable as loop bounds (``__index__`` squeezes), as triton 3.9 does."""
    if not interpreter_enabled():
        return
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "slimtorch_index_fix", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.slimtorch_index_fix = True
    interpreter._patch_lang_tensor = patch_lang_tensor

"""Triton 3.6 interpreter compatibility (for core: every package with K loops needs it).

Triton 3.6's interpreter turns a runtime loop bound (``for i in range(0, tl.cdiv(K, BLOCK))``)
into an int with ``int(array_of_shape_(1,))``, which NumPy >= 2.3 rejects ("only 0-dimensional
arrays can be converted to Python scalars"); Triton 3.9 squeezes the array first. Under
``TRITON_INTERPRET=1`` we install the 3.9 behaviour. Compiled kernels are never affected.
"""

from slimtorch.core.dispatch import interpreter_enabled


def squeeze_loop_bounds_in_interpreter() -> None:
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

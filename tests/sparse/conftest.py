"""Test-environment shim for the Triton 3.6 interpreter (the version of the GPU machines).

Triton 3.6's interpreter turns a runtime loop bound (``for i in range(0, tl.cdiv(K, BLOCK))``)
into an int with ``int(array_of_shape_(1,))``, which NumPy >= 2.3 rejects; Triton 3.9 squeezes
the array first. We install the 3.9 behaviour when the 3.6 one is present. Compiled kernels
(real GPUs) are unaffected. Candidate for tests/conftest.py in core.
"""

from triton.runtime import interpreter


def _squeeze_index_on_old_interpreters() -> None:
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "slimtorch_squeezes_index", False):
        return

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.slimtorch_squeezes_index = True
    interpreter._patch_lang_tensor = patch_lang_tensor


_squeeze_index_on_old_interpreters()

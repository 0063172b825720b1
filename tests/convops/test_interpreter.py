"""The interpreter workarounds are confined to the interpreter and idempotent."""

import torch

from slimtorch.convops import _interpreter
from slimtorch.core.dispatch import interpreter_enabled


def test_bf16_dots_upcast_only_in_the_interpreter():
    assert _interpreter.upcast_dot(torch.bfloat16) == interpreter_enabled()
    assert not _interpreter.upcast_dot(torch.float16) and not _interpreter.upcast_dot(torch.float32)


def test_patch_is_idempotent():
    from triton.runtime import interpreter

    _interpreter.patch_interpreter()
    patched = interpreter._patch_lang_tensor
    _interpreter.patch_interpreter()
    assert interpreter._patch_lang_tensor is patched

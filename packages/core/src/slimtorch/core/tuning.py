"""Autotuning that also works in the Triton interpreter.

The interpreter would run (and try to time) every autotune candidate, which is slow and
meaningless on CPU, so under ``TRITON_INTERPRET=1`` only the first candidate is kept: put the
config that is correct for every shape first.

    @triton.autotune(configs=autotune_configs([triton.Config({...}, num_warps=4), ...]), key=["N", "K"])
    @triton.jit
    def _kernel(...): ...
"""

import triton

import slimtorch.core.triton_compat  # noqa: F401  (interpreter fixes for every kernel module)
from slimtorch.core.dispatch import interpreter_enabled


def autotune_configs(configs: list[triton.Config]) -> list[triton.Config]:
    if not configs:
        raise ValueError("configs: expected at least one triton.Config")
    return configs[:1] if interpreter_enabled() else list(configs)

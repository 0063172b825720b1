"""Autotuning that also works in the Triton interpreter.

The interpreter would run (and try to time) every autotune candidate, which is slow and
meaningless on CPU, so under ``TRITON_INTERPRET=1`` only the first candidate is kept: put the
config that is correct for every shape first.

    @triton.autotune(configs=autotune_configs([triton.Config({...}, num_warps=4), ...]), key=["M_BUCKET", "N", "K"])
    @triton.jit
    def _kernel(...): ...

Batch-dependent sizes enter keys bucketed (``M_BUCKET = slimtorch.core.gemm.m_bucket(M)``, passed
as a kernel argument), so a new batch size of the same bucket reuses the tuned config.
:func:`autotune_key` gives the key a launch is cached under (tests check the bucketing with it).
"""

import triton

from slimtorch.core.dispatch import interpreter_enabled


def autotune_configs(configs: list[triton.Config]) -> list[triton.Config]:
    if not configs:
        raise ValueError("configs: expected at least one triton.Config")
    return configs[:1] if interpreter_enabled() else list(configs)


def autotune_key(kernel: triton.runtime.Autotuner, args: tuple, kwargs: dict) -> tuple:
    """The values of ``kernel``'s autotune key for a launch ``kernel[grid](*args, **kwargs)``
    (tensor dtypes, which Triton appends, left out)."""
    if not isinstance(kernel, triton.runtime.Autotuner):
        raise TypeError(f"kernel: expected a @triton.autotune kernel, got {type(kernel).__name__}")
    named = {**dict(zip(kernel.arg_names, args, strict=False)), **kwargs}
    return tuple(named[name] for name in kernel.keys)

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

Every config is still checked numerically in the interpreter: :func:`all_configs` gives a
kernel's full list and ``with use_config(kernel, config):`` runs the kernel with that one config
(tests/core/test_tuning_configs.py walks every list)::

    for config in all_configs(_int4_mm_kernel):
        with use_config(_int4_mm_kernel, config):
            assert_rel_close(int4_weight_mm(x, ...), reference, bound)
"""

import contextlib
from collections.abc import Iterator

import triton

from slimtorch.core.dispatch import interpreter_enabled


class ConfigList(list):
    """The configs an autotuner tries, remembering the full list (``.all``) it was cut from."""

    all: tuple[triton.Config, ...]


def autotune_configs(configs: list[triton.Config]) -> list[triton.Config]:
    if not configs:
        raise ValueError("configs: expected at least one triton.Config")
    kept = ConfigList(configs[:1] if interpreter_enabled() else configs)
    kept.all = tuple(configs)
    return kept


def _autotuner(kernel: object) -> triton.runtime.Autotuner:
    if not isinstance(kernel, triton.runtime.Autotuner):
        raise TypeError(f"kernel: expected a @triton.autotune kernel, got {type(kernel).__name__}")
    return kernel


def all_configs(kernel: triton.runtime.Autotuner) -> tuple[triton.Config, ...]:
    """Every config ``kernel`` was declared with (also those the interpreter drops)."""
    configs = _autotuner(kernel).configs
    return tuple(getattr(configs, "all", configs))


@contextlib.contextmanager
def use_config(kernel: triton.runtime.Autotuner, config: triton.Config) -> Iterator[None]:
    """Run ``kernel`` with ``config`` only inside the block (its tuning cache is set aside and restored)."""
    tuner = _autotuner(kernel)
    if not isinstance(config, triton.Config):
        raise TypeError(f"config: expected a triton.Config, got {type(config).__name__}")
    saved_configs, saved_cache = tuner.configs, tuner.cache
    kept = ConfigList([config])
    kept.all = all_configs(tuner)
    tuner.configs, tuner.cache = kept, {}
    try:
        yield
    finally:
        tuner.configs, tuner.cache = saved_configs, saved_cache


def autotune_key(kernel: triton.runtime.Autotuner, args: tuple, kwargs: dict) -> tuple:
    """The values of ``kernel``'s autotune key for a launch ``kernel[grid](*args, **kwargs)``
    (tensor dtypes, which Triton appends, left out)."""
    if not isinstance(kernel, triton.runtime.Autotuner):
        raise TypeError(f"kernel: expected a @triton.autotune kernel, got {type(kernel).__name__}")
    named = {**dict(zip(kernel.arg_names, args, strict=False)), **kwargs}
    return tuple(named[name] for name in kernel.keys)

"""Where an op runs: the one dispatch rule of slimtorch.

Every slimtorch op has a GPU kernel (Triton or CUDA C) and a pure-torch reference. The rule:

- a CUDA tensor among the inputs          -> the GPU kernel;
- only CPU tensors                        -> the reference (it is the CPU implementation);
- ``SLIMTORCH_FORCE_TRITON=1`` and CPU    -> the Triton kernel, run by the Triton interpreter
  (needs ``TRITON_INTERPRET=1`` set before triton is imported); this is how the test suite runs
  every Triton kernel on a machine without a GPU. CUDA-C kernels cannot be interpreted and keep
  using the reference on CPU.
- ``SLIMTORCH_REFERENCE_ONLY=1`` or :func:`reference_only` -> the reference everywhere
  (debugging, A/B comparisons on the GPU).

Launchers allocate their outputs with :func:`empty_output`; under ``SLIMTORCH_POISON_OUTPUTS=1``
(set by the test suite) those buffers start as NaN / sentinel integers, so an element a kernel
forgets to write fails the comparison with the reference instead of passing by luck.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Literal

import torch

Backend = Literal["triton", "cuda"]
BACKENDS: tuple[str, ...] = ("triton", "cuda")

_state = threading.local()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def force_triton() -> bool:
    """True when Triton kernels must run on CPU tensors (in the interpreter)."""
    return _env_flag("SLIMTORCH_FORCE_TRITON")


def interpreter_enabled() -> bool:
    return _env_flag("TRITON_INTERPRET")


def poison_outputs() -> bool:
    return _env_flag("SLIMTORCH_POISON_OUTPUTS")


def reference_forced() -> bool:
    return getattr(_state, "reference_only", False) or _env_flag("SLIMTORCH_REFERENCE_ONLY")


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Run every slimtorch op through its pure-torch reference inside this block."""
    previous = getattr(_state, "reference_only", False)
    _state.reference_only = True
    try:
        yield
    finally:
        _state.reference_only = previous


def _tensors(values: Iterable[object]) -> Iterator[torch.Tensor]:
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _tensors(value)


def use_kernel(backend: Backend, *args: object) -> bool:
    """Decide between the GPU kernel (True) and the reference (False) for these arguments.

    ``args`` may hold tensors, lists of tensors and anything else (ignored).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if reference_forced():
        return False
    tensors = list(_tensors(args))
    if any(t.is_cuda for t in tensors):
        return True
    if backend == "triton" and force_triton():
        if not interpreter_enabled():
            raise RuntimeError(
                "SLIMTORCH_FORCE_TRITON=1 runs Triton kernels on CPU tensors, which needs the "
                "Triton interpreter: set TRITON_INTERPRET=1 before importing triton"
            )
        return True
    return False


def empty_output(shape: Iterable[int], *, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Allocate a kernel's output; poisoned (NaN / sentinel) under SLIMTORCH_POISON_OUTPUTS=1."""
    out = torch.empty(tuple(shape), dtype=dtype, device=device)
    if poison_outputs():
        out.fill_(poison_value(dtype))
    return out


def poison_value(dtype: torch.dtype) -> float | int | bool:
    """A value no correct kernel writes by accident: NaN for floats, an extreme for integers."""
    if dtype.is_floating_point or dtype.is_complex:
        return float("nan")
    if dtype == torch.bool:
        return True
    return torch.iinfo(dtype).min

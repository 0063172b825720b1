"""Where an op runs: the one backend rule of slimtorch.

Every slimtorch op has one or more GPU kernels (``triton``, ``cuda`` for CUDA C, ``torch`` for a
path of torch's own such as cuSPARSELt) and a pure-torch ``reference``. Which one a call takes:

1. ``reference`` when chosen globally: ``SLIMTORCH_BACKEND=reference`` or inside
   :func:`reference_only` / ``use_backend("reference")`` (debugging, A/B comparisons on a GPU);
2. else the op's (or layer's) ``backend=`` argument when it is not ``"auto"``: it must be one the op
   has, else ``ValueError``;
3. else the global preference, ``SLIMTORCH_BACKEND`` (parsed once) or :func:`use_backend`, where
   the op has that backend (ops without it use their default);
4. ``auto``: a CUDA tensor among the inputs -> the op's default kernel (the first it lists); only
   CPU tensors -> the reference, which is the CPU implementation.

``triton`` with CPU tensors runs the Triton interpreter: it needs ``TRITON_INTERPRET=1`` set
before triton is imported. The CPU test suite runs ``SLIMTORCH_BACKEND=triton TRITON_INTERPRET=1``
so that every Triton kernel is tested on a machine without a GPU. ``cuda`` and ``torch`` need CUDA
tensors (chosen explicitly on CPU: ``ValueError``; preferred globally: the reference serves CPU).
The ``cuda`` backend needs CuPy, the ``[cuda]`` extra (:func:`slimtorch.core.cuda.require_cupy`).

Launchers allocate their outputs with :func:`empty_output`; under ``SLIMTORCH_POISON_OUTPUTS=1``
(set by the test suite) those buffers start as NaN / sentinel integers, so an element a kernel
forgets to write fails the comparison with the reference instead of passing by luck.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import torch

Backend = Literal["auto", "triton", "cuda", "torch", "reference"]
BACKENDS: tuple[str, ...] = ("auto", "triton", "cuda", "torch", "reference")
KERNEL_BACKENDS: tuple[str, ...] = ("triton", "cuda", "torch")
BACKEND_ENV = "SLIMTORCH_BACKEND"

# Module globals, not thread-locals: layers call choose_backend inside forward, which
# torch.compile traces (it guards on globals).
_settings: dict[str, str | None] = {"env": None, "override": None}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def interpreter_enabled() -> bool:
    return _env_flag("TRITON_INTERPRET")


def poison_outputs() -> bool:
    return _env_flag("SLIMTORCH_POISON_OUTPUTS")


def reload_env() -> str:
    """Parse ``SLIMTORCH_BACKEND`` (done once, at first use; call again after changing it)."""
    value = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}: expected one of {BACKENDS}, got {value!r}")
    _settings["env"] = value
    return value


def preferred_backend() -> str:
    """The global choice: the innermost :func:`use_backend` block, else ``SLIMTORCH_BACKEND``."""
    override, env = _settings["override"], _settings["env"]
    if override is not None:
        return override
    return env if env is not None else reload_env()


@contextlib.contextmanager
def use_backend(backend: Backend) -> Iterator[None]:
    """Prefer ``backend`` for every op inside this block (rule 3; ``reference``: rule 1)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    previous = _settings["override"]
    _settings["override"] = backend
    try:
        yield
    finally:
        _settings["override"] = previous


def reference_only() -> contextlib.AbstractContextManager[None]:
    """Run every slimtorch op through its pure-torch reference inside this block."""
    return use_backend("reference")


def check_backend(backend: str, available: Sequence[str], op: str = "this op") -> None:
    """A ``backend=`` argument: one of BACKENDS, and "auto", "reference" or one ``available``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend in KERNEL_BACKENDS and backend not in available:
        choices = ("auto", *available, "reference")
        raise ValueError(f"backend: {op} has no {backend!r} kernel; expected one of {choices}, got {backend!r}")


def _any_cuda(values: Iterable[object]) -> bool:
    for value in values:
        if isinstance(value, torch.Tensor) and value.is_cuda:
            return True
        if isinstance(value, (list, tuple)) and _any_cuda(value):
            return True
    return False


def choose_backend(backend: str | None, available: Sequence[str], *args: object, op: str = "this op") -> str:
    """The path one call takes, by the module docstring's rule: "reference" or one of
    ``available`` (the op's kernels, its default first). ``args`` may hold tensors, lists of
    tensors and anything else (ignored)."""
    backend = "auto" if backend is None else backend
    check_backend(backend, available, op)
    preferred = preferred_backend()
    if preferred == "reference" or backend == "reference":
        return "reference"
    explicit = backend != "auto"
    choice = backend if explicit else preferred
    if choice == "auto" or choice not in available:
        choice = "auto"
    on_cuda = _any_cuda(args)
    if choice == "auto":
        return available[0] if on_cuda and available else "reference"
    if not on_cuda:
        if choice == "triton":
            if not interpreter_enabled():
                raise RuntimeError(
                    f"backend 'triton' on CPU tensors runs the Triton interpreter: set TRITON_INTERPRET=1 before "
                    f"importing triton (or {BACKEND_ENV}=auto to use the reference on CPU)"
                )
            return "triton"
        if explicit:
            raise ValueError(f"backend: {choice!r} runs on CUDA tensors only, got inputs on CPU")
        return "reference"
    if choice == "cuda":
        from slimtorch.core.cuda import require_cupy

        require_cupy()
    return choice


def reference_on_cpu(kind: str) -> bool:
    """:func:`choose_backend`'s answer for an op whose one kernel is ``kind`` and whose inputs are
    all on the CPU, without looking at them (no CUDA tensor among no arguments): the reference,
    unless ``triton`` (the interpreter) is the global preference and the op's kind."""
    return choose_backend(None, (kind,)) == "reference"


def use_kernel(kind: str, *args: object) -> bool:
    """For an op with one kernel of ``kind`` ("triton" or "cuda"): run it (True) or the reference."""
    if kind not in KERNEL_BACKENDS:
        raise ValueError(f"kind: expected one of {KERNEL_BACKENDS}, got {kind!r}")
    if choose_backend(None, (kind,), *args) == "reference":
        return False
    _install_interpreter_fixes()  # a no-op unless TRITON_INTERPRET=1
    return True


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


def _install_interpreter_fixes() -> None:
    """The interpreter workarounds (slimtorch.core.triton_compat), installed the first time an op
    runs a Triton kernel in the interpreter; never on import, never for compiled kernels."""
    if not getattr(_install_interpreter_fixes, "done", False):
        from slimtorch.core.triton_compat import install_interpreter_fixes

        install_interpreter_fixes()
        _install_interpreter_fixes.done = True

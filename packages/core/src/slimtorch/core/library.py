"""Register a kernel launcher as a ``torch.library`` custom op that dispatches by the core rule.

    @kernel_op("slimtorch::int4_mm", reference="int4_mm_reference", check=_check_int4_mm)
    def int4_mm(x: Tensor, qweight: Tensor, scales: Tensor, group_size: int) -> Tensor:
        ...  # allocate with empty_output, launch the Triton kernel

gives ``int4_mm``, a custom op (schema inferred from the annotations) whose body:

1. runs ``check`` (argument validation shared by every path, also under ``torch.compile``);
2. calls the launcher when :func:`slimtorch.core.dispatch.use_kernel` says so (core's backend
   rule: CUDA tensors, or CPU tensors under ``SLIMTORCH_BACKEND=triton`` in the interpreter), else
   the reference.

``row_input="x"`` declares a row-shaped op (x (M, K) → out (M, N)): the NaN/Inf policy of
:mod:`slimtorch.core.reference` (a non-finite x row gives an all-NaN out row) is applied to the
kernel's output, so kernels that skip weights agree with their references.

The reference is named by a string and looked up in the launcher's module at first use, so the
file keeps the conventional order (launcher above, reference at the bottom). Unless ``fake`` is
given, the reference itself serves as the fake (meta) implementation: it is pure torch, so on
fake tensors it yields the output's shape and dtype. Give ``fake`` when the reference has
data-dependent shapes or is too slow to trace.

Eager calls that take the reference skip the custom op: on plain CPU tensors, outside
``torch.compile`` and with no gradient to record, :class:`KernelOp` runs ``check`` and the
reference directly. The dispatcher round trip costs about as much as a small layer's reference
(tens of µs), which is what a zoo model's CPU path would otherwise pay per layer over torch's own
model. Anything else (the kernel path, autograd, fake tensors, tracing) goes through the op.

Custom ops may not return a view of an input: launchers and references return fresh tensors.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import torch

from slimtorch.core.dispatch import Backend, reference_on_cpu, use_kernel
from slimtorch.core.reference import nonfinite_rows_to_nan


class KernelOp(torch.library.CustomOpDef):
    """The custom op :func:`kernel_op` returns, with the eager reference shortcut of the module
    docstring. ``launcher`` (the kernel path, for benchmarks and static reports) and
    ``get_reference`` are attributes of every instance."""

    _check: Callable[..., None] | None
    _backend: Backend
    launcher: Callable[..., Any]
    get_reference: Callable[[], Callable[..., Any]]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _eager_reference(self._backend, args, kwargs):
            if self._check is not None:
                self._check(*args, **kwargs)
            return self.get_reference()(*args, **kwargs)
        return super().__call__(*args, **kwargs)


_PLAIN = (torch.Tensor, torch.nn.Parameter)  # not fake, functional or other subclass tensors


def _eager_reference(backend: Backend, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """True when this call may run the reference without the dispatcher: every tensor argument
    is a plain CPU tensor, nothing is being compiled or traced, no gradient would be recorded,
    and core's backend rule picks the reference."""
    values = (*args, *kwargs.values())
    # fx proxies and torch-function modes (tracers) must see the op, not the reference's insides
    if not reference_on_cpu(backend) or torch.compiler.is_compiling() or torch.overrides.has_torch_function(values):
        return False
    grad = torch.is_grad_enabled()
    for value in values:
        if isinstance(value, torch.Tensor) and (
            type(value) not in _PLAIN or not value.is_cpu or (grad and value.requires_grad)
        ):
            return False
    return True


def _resolve(fn_or_name: Callable[..., Any] | str, module_name: str) -> Callable[..., Any]:
    if callable(fn_or_name):
        return fn_or_name
    module = sys.modules[module_name]
    try:
        return getattr(module, fn_or_name)
    except AttributeError:
        raise AttributeError(f"kernel_op: module {module_name} has no reference function {fn_or_name!r}") from None


def kernel_op(
    qualname: str,
    *,
    reference: Callable[..., Any] | str,
    check: Callable[..., None] | None = None,
    fake: Callable[..., Any] | None = None,
    backend: Backend = "triton",
    mutates_args: tuple[str, ...] = (),
    row_input: str | None = None,
) -> Callable[[Callable[..., Any]], Any]:
    """Decorator: launcher -> ``torch.library`` custom op ``qualname`` ("namespace::name")."""
    if "::" not in qualname:
        raise ValueError(f"qualname: expected 'namespace::name', got {qualname!r}")

    def decorate(launcher: Callable[..., Any]) -> Any:
        module_name = launcher.__module__
        signature = inspect.signature(launcher)
        get_reference = functools.cache(lambda: _resolve(reference, module_name))
        if row_input is not None and row_input not in signature.parameters:
            raise ValueError(f"row_input: {launcher.__name__} has no argument {row_input!r}")

        @functools.wraps(launcher)
        def dispatching(*args: Any, **kwargs: Any) -> Any:
            if check is not None:
                check(*args, **kwargs)
            if not use_kernel(backend, *args, *kwargs.values()):
                return get_reference()(*args, **kwargs)
            out = launcher(*args, **kwargs)
            if row_input is not None:
                x = signature.bind(*args, **kwargs).arguments[row_input]
                out = nonfinite_rows_to_nan(x, out)
            return out

        op = torch.library.custom_op(qualname, dispatching, mutates_args=mutates_args)
        op.__class__ = KernelOp  # the eager reference shortcut (module docstring)
        op._check, op._backend = check, backend

        def fake_impl(*args: Any, **kwargs: Any) -> Any:
            if check is not None:
                check(*args, **kwargs)
            return (fake or get_reference())(*args, **kwargs)

        fake_impl.__signature__ = signature  # type: ignore[attr-defined]
        op.register_fake(fake_impl)
        # Benchmarks time the launcher directly; tests reach the reference through the op.
        op.launcher = launcher
        op.get_reference = get_reference
        return op

    return decorate

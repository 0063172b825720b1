"""Argument checks with messages that name the argument, what was expected and what came.

Types and dtypes that are wrong raise ``TypeError``; shapes, devices, strides, divisibility and
values that are wrong raise ``ValueError``. Launchers call these before allocating or launching,
so bad input never reaches a kernel (no crash, no silent wrong answer, no hang).

Shapes are given as tuples whose entries are an ``int`` (that size exactly), ``None`` (any size)
or a ``str`` (a named size that must agree everywhere it appears in one ``dims`` dict)::

    dims: dict[str, int] = {}
    check_tensor(x, "x", shape=("M", "K"), dims=dims)
    check_tensor(w, "weight", shape=("N", "K"), dims=dims)   # K must match x's K
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

ShapeSpec = Sequence["int | str | None"]

# The activation dtypes every slimtorch kernel takes (fp32 accumulation throughout).
KERNEL_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32)
FLOAT_DTYPES: tuple[torch.dtype, ...] = (*KERNEL_DTYPES, torch.float64)


def _fmt_dtypes(dtypes: Iterable[torch.dtype]) -> str:
    names = [str(d).replace("torch.", "") for d in dtypes]
    return names[0] if len(names) == 1 else "one of (" + ", ".join(names) + ")"


def _fmt_spec(spec: ShapeSpec) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in spec) + ")"


def check_tensor(
    t: object,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    shape: ShapeSpec | None = None,
    dims: dict[str, int] | None = None,
    dtype: torch.dtype | Iterable[torch.dtype] | None = None,
    device: torch.device | str | None = None,
    contiguous: bool = False,
) -> torch.Tensor:
    """Check one tensor argument; return it (typed) so callers can write ``x = check_tensor(...)``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dtype is not None:
        allowed = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if t.dtype not in allowed:
            raise TypeError(f"{name}: expected dtype {_fmt_dtypes(allowed)}, got {_fmt_dtypes([t.dtype])}")
    if ndim is not None:
        allowed_ndim = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed_ndim:
            want = " or ".join(str(n) for n in allowed_ndim)
            raise ValueError(f"{name}: expected a {want}-d tensor, got shape {tuple(t.shape)}")
    if shape is not None:
        check_shape(t, name, shape, dims)
    if device is not None:
        check_device(t, name, device)
    if contiguous and not t.is_contiguous():
        raise ValueError(
            f"{name}: expected a contiguous tensor, got shape {tuple(t.shape)} with strides "
            f"{t.stride()}; call .contiguous() first"
        )
    return t


def check_shape(t: torch.Tensor, name: str, spec: ShapeSpec, dims: dict[str, int] | None = None) -> None:
    """Check ``t.shape`` against ``spec`` (ints, None wildcards, named sizes bound in ``dims``)."""
    got = tuple(t.shape)
    if len(got) != len(spec):
        raise ValueError(f"{name}: expected shape {_fmt_spec(spec)}, got {got}")
    bound = {} if dims is None else dims
    for axis, (want, size) in enumerate(zip(spec, got, strict=True)):
        if want is None:
            continue
        if isinstance(want, int):
            if size != want:
                raise ValueError(f"{name}: expected shape {_fmt_spec(spec)}, got {got} (dim {axis} must be {want})")
        elif want in bound and bound[want] != size:
            raise ValueError(
                f"{name}: expected shape {_fmt_spec(spec)} with {want}={bound[want]} "
                f"(from an earlier argument), got {got}"
            )
        else:
            bound[want] = size


def check_device(t: torch.Tensor, name: str, device: torch.device | str) -> None:
    want = torch.device(device)
    if t.device.type != want.type or (want.index is not None and t.device.index != want.index):
        raise ValueError(f"{name}: expected a tensor on {want}, got one on {t.device}")


def _against_first(tensors: dict[str, torch.Tensor | None]) -> list[tuple[str, torch.Tensor, str, torch.Tensor]]:
    """(name, tensor, first_name, first) for every non-None tensor after the first one."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    return [(name, t, *items[0]) for name, t in items[1:]]


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """All given tensors (None entries skipped) must live on one device."""
    for name, t, first_name, first in _against_first(tensors):
        if t.device != first.device:
            raise ValueError(
                f"{name}: expected a tensor on {first.device} (the device of {first_name}), got one on {t.device}"
            )


def check_same_dtype(**tensors: torch.Tensor | None) -> None:
    """All given tensors (None entries skipped) must share one dtype."""
    for name, t, first_name, first in _against_first(tensors):
        if t.dtype != first.dtype:
            raise TypeError(
                f"{name}: expected dtype {_fmt_dtypes([first.dtype])} (the dtype of {first_name}), "
                f"got {_fmt_dtypes([t.dtype])}"
            )


def check_divisible(value: int, divisor: int, name: str) -> None:
    if divisor <= 0:
        raise ValueError(f"divisor for {name} must be positive, got {divisor}")
    if value % divisor != 0:
        raise ValueError(f"{name}: expected a multiple of {divisor}, got {value}")


def check_choice(value: object, name: str, choices: Iterable[object]) -> None:
    options = tuple(choices)
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")


def check_positive(value: int | float, name: str) -> None:
    if not value > 0:
        raise ValueError(f"{name}: expected a positive value, got {value!r}")


def check_finite(t: torch.Tensor, name: str) -> None:
    """Reject NaN/Inf (e.g. weights handed to a quantizer). Synchronises on CUDA."""
    if not bool(torch.isfinite(t).all()):
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise ValueError(f"{name}: expected finite values, found {t[tuple(bad)].item()} at index {bad}")


def check_range(t: torch.Tensor, name: str, *, low: float | None = None, high: float | None = None) -> None:
    """Every value of ``t`` in [low, high] (None: unbounded; NaN fails). Reads the data: for
    loaded or user-built structures, not per call of a kernel."""
    if not t.numel():
        return
    values = t.detach()
    ok = torch.ones_like(values, dtype=torch.bool)
    if low is not None:
        ok &= values >= low
    if high is not None:
        ok &= values <= high
    if not bool(ok.all()):
        bad = (~ok).nonzero()[0].tolist()
        want = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ValueError(f"{name}: expected values in {want}, found {values[tuple(bad)].item()} at index {bad}")


def check_positive_int(value: object, name: str) -> int:
    """A size: a Python int (not bool) >= 1 (zero-size layers are refused at construction)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return value


def is_fake(t: torch.Tensor) -> bool:
    """True for tensors without data (meta, or the fake tensors torch.compile traces with): checks
    that read values (index ranges) skip them; the real call checks."""
    from torch._subclasses.fake_tensor import is_fake as _is_fake

    return t.device.type == "meta" or _is_fake(t)

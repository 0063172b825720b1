"""Pieces shared by the pure-torch references of every kernel family.

References compute in float32 (float64 for float64 inputs, which is how tests build their
oracle) and round to the input's dtype once at the end, as the kernels do with their fp32
accumulators; :func:`compute_dtype` is that rule, :func:`linear_reference` the dense
``act(x · Wᵀ + b)`` every matmul-shaped reference ends in once its weight is decompressed.

NaN/Inf policy (every format, reference and kernel alike): a row of x holding a NaN or ±Inf gives an
all-NaN output row; finite rows are untouched. Dense arithmetic alone would not do this uniformly:
kernels that skip pruned weights (2:4, BSR) never multiply the offending column (0·NaN never
happens), and an Inf times finite weights gives ±Inf, not NaN. :func:`nonfinite_rows_to_nan`
is the one implementation; :func:`linear_reference` applies it, and ``core.library.kernel_op(...,
row_input="x")`` applies it to a kernel's output (a post-pass: one read of x and a masked write
of the bad rows, O(M·K + M·N) bytes, next to the kernel's O(N·K) weight reads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slimtorch.core.activations import activation_reference


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)`` without the dispatcher round trip when it already is ``dtype`` (the
    references' CPU path calls this on every layer)."""
    return t if t.dtype == dtype else t.to(dtype)


def linear_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
) -> torch.Tensor:
    """``act(x @ weight.T + bias)`` in :func:`compute_dtype` of x, returned in x's dtype."""
    dt = compute_dtype(x.dtype)
    y = F.linear(cast(x, dt), cast(weight, dt), None if bias is None else cast(bias, dt))
    return nonfinite_rows_to_nan(x, cast(activation_reference(y, activation), x.dtype))


def nonfinite_rows(x: torch.Tensor) -> torch.Tensor:
    """(*, K) → (*,) bool: True where the row holds a NaN or ±Inf."""
    return ~torch.isfinite(x).all(dim=-1)


def nonfinite_rows_to_nan(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The NaN/Inf policy (module doc): ``out`` (*, N) with every row whose x (*, K) row is
    non-finite set to NaN. In place (``out`` returned), except where ``out`` needs grad (autograd may
    have saved it): then a new tensor. Rows of x and out correspond one to one."""
    if out.shape[:-1] != x.shape[:-1]:
        raise ValueError(f"out: expected leading dims {tuple(x.shape[:-1])} (those of x), got {tuple(out.shape)}")
    if not (out.numel() and x.dtype.is_floating_point):
        return out
    bad = nonfinite_rows(x).unsqueeze(-1)
    return out.masked_fill(bad, float("nan")) if out.requires_grad else out.masked_fill_(bad, float("nan"))

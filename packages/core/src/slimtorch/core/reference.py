"""Pieces shared by the pure-torch references of every kernel family.

References compute in float32 (float64 for float64 inputs, which is how tests build their
oracle) and round to the input's dtype once at the end, as the kernels do with their fp32
accumulators; :func:`compute_dtype` is that rule, :func:`linear_reference` the dense
``act(x · Wᵀ + b)`` every matmul-shaped reference ends in once its weight is decompressed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slimtorch.core.activations import activation_reference


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def linear_reference(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
) -> torch.Tensor:
    """``act(x @ weight.T + bias)`` in :func:`compute_dtype` of x, returned in x's dtype."""
    dt = compute_dtype(x.dtype)
    y = F.linear(x.to(dt), weight.to(dt), None if bias is None else bias.to(dt))
    return activation_reference(y, activation).to(x.dtype)

"""The dense math behind every sparse linear op, y = act(x @ W.T + bias), once W is decompressed:
the reference forward (the ops' CPU path and test oracle) and the backward.

The backward works on the decompressed dense weight: correct and simple, not a fast path
(fine-tuning a pruned model runs through MaskedSparseLinear, see layers.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from slimtorch.core.activations import activation_backward
from slimtorch.core.reference import compute_dtype


def linear_grads(
    ctx,
    grad_out: torch.Tensor,
    x: torch.Tensor,
    dense_weight: torch.Tensor,
    activation: str,
    pre_activation: Callable[[], torch.Tensor],
    *,
    weight_index: int,
    bias_index: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(grad_x in x's dtype, grad of the dense weight (N, K) in the accumulation dtype, grad_bias),
    each None unless ``ctx.needs_input_grad`` asks for it (x is input 0)."""
    needs = ctx.needs_input_grad
    acc_dtype = compute_dtype(x.dtype)
    g = (
        grad_out
        if activation == "none"
        else activation_backward(grad_out, pre_activation(), activation, dtype=acc_dtype)
    )
    g = g.to(acc_dtype)
    grad_x = (g @ dense_weight.to(acc_dtype)).to(x.dtype) if needs[0] else None
    grad_w = g.t() @ x.to(acc_dtype) if needs[weight_index] else None
    grad_bias = g.sum(0).to(x.dtype) if needs[bias_index] else None
    return grad_x, grad_w, grad_bias

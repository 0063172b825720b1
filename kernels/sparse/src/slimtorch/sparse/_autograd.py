"""Backward of the sparse linear ops (y = act(x @ W.T + bias)), shared by the 2:4 and BSR ops.

The compressed weight is decompressed to dense for the backward: it is correct and simple, not a
fast path (fine-tuning a pruned model runs through MaskedSparseLinear, see layers.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from slimtorch.core.activations import activation_reference


def activation_backward(grad_out: torch.Tensor, pre_activation: torch.Tensor, activation: str) -> torch.Tensor:
    """grad_out · act'(pre_activation), through autograd on the one torch activation definition."""
    if activation == "none":
        return grad_out
    acc_dtype = torch.float64 if pre_activation.dtype == torch.float64 else torch.float32
    with torch.enable_grad():
        z = pre_activation.detach().to(acc_dtype).requires_grad_()
        (grad,) = torch.autograd.grad(activation_reference(z, activation), z, grad_out.to(acc_dtype))
    return grad


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
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    g = grad_out if activation == "none" else activation_backward(grad_out, pre_activation(), activation)
    g = g.to(acc_dtype)
    grad_x = (g @ dense_weight.to(acc_dtype)).to(x.dtype) if needs[0] else None
    grad_w = g.t() @ x.to(acc_dtype) if needs[weight_index] else None
    grad_bias = g.sum(0).to(x.dtype) if needs[bias_index] else None
    return grad_x, grad_w, grad_bias

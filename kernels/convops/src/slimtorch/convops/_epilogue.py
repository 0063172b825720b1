"""The fused per-channel epilogue of the convops kernels, in torch (private).

    y[n, c, h, w] = act(z[n, c, h, w] · scale[c] + shift[c])

``scale`` / ``shift`` are optional (folded eval BatchNorm: scale = γ/√(var+ε), shift = β − mean·scale;
a bias is a shift). The Triton side is core's one epilogue store, ``slimtorch.core.gemm.store_tile``
(``shift`` is its bias; the kernels pass their fp32 accumulator tile, channels along axis 1, and
their output pointers). Here: :func:`epilogue_reference`, the torch side used by every reference,
and :func:`epilogue_backward`, the derivative used by the autograd formulas (the kernels'
backward recomputes ``z`` instead of storing it).
"""

from __future__ import annotations

import torch

from slimtorch.core.activations import activation_backward, activation_reference


def _per_channel(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.dtype).view(1, -1, 1, 1)


def is_identity(scale: torch.Tensor | None, activation: str) -> bool:
    """True when the epilogue is at most a shift (its backward needs no recomputed ``z``)."""
    return scale is None and activation == "none"


def epilogue_reference(
    z: torch.Tensor, scale: torch.Tensor | None, shift: torch.Tensor | None, activation: str
) -> torch.Tensor:
    """act(z · scale + shift) over channel dim 1, in ``z``'s dtype."""
    if scale is not None:
        z = z * _per_channel(scale, z)
    if shift is not None:
        z = z + _per_channel(shift, z)
    return activation_reference(z, activation)


def epilogue_backward(
    grad: torch.Tensor,
    z: torch.Tensor | None,
    scale: torch.Tensor | None,
    shift: torch.Tensor | None,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of y = act(z·scale + shift) w.r.t. z, scale and shift (None where absent).

    ``z`` may be None only when :func:`is_identity` holds.
    """
    if is_identity(scale, activation):
        g_pre = grad
    else:
        if z is None:
            raise ValueError("z: the epilogue's input is needed for a scale or an activation")
        pre = z if scale is None else z * _per_channel(scale, z)
        if shift is not None:
            pre = pre + _per_channel(shift, z)
        g_pre = activation_backward(grad, pre, activation)
    reduce_dims = (0, 2, 3)
    g_shift = None if shift is None else g_pre.sum(reduce_dims).to(shift.dtype)
    g_scale = None
    g_z = g_pre
    if scale is not None:
        g_scale = (g_pre * z).sum(reduce_dims).to(scale.dtype)
        g_z = g_pre * _per_channel(scale, g_pre)
    return g_z, g_scale, g_shift

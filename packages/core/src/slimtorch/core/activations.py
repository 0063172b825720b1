"""Activations fused into kernel epilogues, defined once for every kernel family.

:func:`activation_backward` gives their derivative for the ops' backward passes.

``ACTIVATIONS`` names what the fused epilogues support; :func:`apply_activation` is the Triton
side (``@triton.jit``, the name a ``tl.constexpr`` so the branch is resolved at compile time)
and :func:`activation_reference` the pure-torch side used by every reference:

    none       x
    relu       max(x, 0)
    relu6      min(max(x, 0), 6)
    hardswish  x · relu6(x + 3) / 6
    silu       x · sigmoid(x)
    gelu       x · Φ(x) = 0.5·x·(1 + erf(x/√2))   (exact, as torch's default)
"""

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

ACTIVATIONS: tuple[str, ...] = ("none", "relu", "relu6", "hardswish", "silu", "gelu")

# torch modules whose effect an epilogue reproduces (used by converters that fuse conv → act).
MODULE_TO_ACTIVATION: dict[type, str] = {
    torch.nn.Identity: "none",
    torch.nn.ReLU: "relu",
    torch.nn.ReLU6: "relu6",
    torch.nn.Hardswish: "hardswish",
    torch.nn.SiLU: "silu",
    torch.nn.GELU: "gelu",
}


_INPLACE = ("relu", "relu6", "hardswish", "silu")


def activation_module(name: str, *, inplace: bool = False) -> torch.nn.Module:
    """A fresh torch module computing the epilogue activation ``name`` (nn.Identity for "none");
    ``inplace`` where torch's module has the option (ReLU, ReLU6, Hardswish, SiLU)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {name!r}")
    module_type = next(t for t, n in MODULE_TO_ACTIVATION.items() if n == name)
    return module_type(inplace=True) if inplace and name in _INPLACE else module_type()


@triton.jit
def apply_activation(x, ACTIVATION: tl.constexpr):
    """Epilogue activation on an fp32 block."""
    if ACTIVATION == "relu":
        x = tl.maximum(x, 0.0)
    elif ACTIVATION == "relu6":
        x = tl.minimum(tl.maximum(x, 0.0), 6.0)
    elif ACTIVATION == "hardswish":
        x = x * tl.minimum(tl.maximum(x + 3.0, 0.0), 6.0) / 6.0
    elif ACTIVATION == "silu":
        x = x / (1.0 + tl.exp(-x))
    elif ACTIVATION == "gelu":
        x = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    return x


def activation_reference(x: torch.Tensor, activation: str) -> torch.Tensor:
    """The same activations in torch (any dtype; references usually run in fp32/fp64)."""
    if activation == "none":
        return x
    if activation == "relu":
        return F.relu(x)
    if activation == "relu6":
        return x.clamp(0.0, 6.0)
    if activation == "hardswish":
        return x * (x + 3.0).clamp(0.0, 6.0) / 6.0
    if activation == "silu":
        return x * torch.sigmoid(x)
    if activation == "gelu":
        return F.gelu(x)
    raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")


def activation_backward(
    grad: torch.Tensor, pre_activation: torch.Tensor, activation: str, *, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``grad · act'(pre_activation)``, by autograd through :func:`activation_reference` (so the
    derivative never drifts from the one definition), computed in fp32 (fp64 for fp64 inputs) and
    returned in ``dtype`` (default: ``grad``'s)."""
    out_dtype = dtype or grad.dtype
    if activation == "none":
        return grad.to(out_dtype)
    work = torch.float64 if torch.float64 in (grad.dtype, pre_activation.dtype) else torch.float32
    with torch.enable_grad():
        z = pre_activation.detach().to(work).requires_grad_()
        (g,) = torch.autograd.grad(activation_reference(z, activation), z, grad.to(work))
    return g.to(out_dtype)


def activation_of(module: torch.nn.Module) -> str | None:
    """The epilogue name reproducing ``module`` (None if no epilogue does; GELU only if exact)."""
    if isinstance(module, torch.nn.GELU) and module.approximate != "none":
        return None
    return MODULE_TO_ACTIVATION.get(type(module))

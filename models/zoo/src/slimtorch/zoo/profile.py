"""Model statistics: parameters, multiply-adds, weight bytes and activation memory.

``profile(model, input_size)`` runs one forward pass (in eval mode, without gradients; on the
model's device and dtype, ``meta`` included, which makes it free) with hooks on the leaf
modules and counts, as the papers do:

- **MACs** of convolutions and linear layers only: a convolution producing ``out`` elements
  with weight ``(cout, cin/groups, kh, kw)`` costs ``out · cin/groups · kh · kw`` (depthwise
  and grouped convolutions are therefore counted correctly); a linear layer ``out · in``.
  ``flops = 2 · macs``. Shifts and channel shuffles cost nothing (0 FLOPs, 0 parameters).
- **other_flops**, reported separately: BatchNorm 2 per element, activations 1 per element,
  pooling 1 per input element. Functional operations inside blocks (residual additions, the SE
  product) are not counted.
- **Compressed layers**: a module defining ``compressed_macs(input_shape) -> int`` (the MACs it
  performs on an input of that shape, e.g. half for a 2:4-sparse layer) is counted by that
  hook and not descended into; ``params`` uses ``compressed_num_params()`` the same way
  (:func:`slimtorch.core.model_stats.count_parameters`). A leaf module that holds parameters
  but is neither a convolution, a linear layer nor a norm and has no hook is listed in
  ``uncounted`` instead of being guessed.
- **conv_linear_params**: the parameters of convolutions and linear layers only (TF-slim's
  count, which several papers report), beside ``params`` (all, compressed-aware).
- **Weight bytes** in the stored format: ``memory_bytes`` (parameters and buffers as held) and
  ``disk_bytes`` (the safetensors state_dict; None on the meta device).
- **Activation memory**: ``activation_bytes`` sums the output bytes of every leaf module for
  one forward (in-place outputs, which allocate nothing, are skipped); ``peak_activation_bytes``
  is the largest input + output of a single leaf, a lower bound of the live memory at inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from slimtorch.core.model_stats import count_parameters, disk_bytes, layer_macs, memory_bytes

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.SiLU, nn.GELU, nn.Tanh)
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.MaxPool2d)


@dataclass
class LayerProfile:
    name: str
    kind: str
    macs: int
    other_flops: int
    output_shape: tuple[int, ...]
    output_bytes: int


@dataclass
class ModelProfile:
    input_size: tuple[int, ...]
    params: int
    conv_linear_params: int
    macs: int
    flops: int
    other_flops: int
    memory_bytes: int
    disk_bytes: Optional[int]
    activation_bytes: int
    peak_activation_bytes: int
    layers: list[LayerProfile] = field(default_factory=list)
    uncounted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.params / 1e6:.3f}M params, {self.macs / 1e6:.1f}M MACs ({self.flops / 1e9:.3f} GFLOPs) "
            f"at {'x'.join(map(str, self.input_size))}, weights {self.memory_bytes / 2**20:.2f} MiB, "
            f"activations {self.activation_bytes / 2**20:.2f} MiB (peak layer {self.peak_activation_bytes / 2**20:.2f})"
        )


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules, convolutions and linear layers (a fused shift + 1x1 conv holds its shift as a
    parameter-free child), and modules with a ``compressed_macs`` hook; none descended into."""
    units, stack = [], [("", model)]
    while stack:
        name, module = stack.pop()
        children = list(module.named_children())
        whole = callable(getattr(module, "compressed_macs", None)) or isinstance(module, _WEIGHTED)
        if whole or not children:
            units.append((name, module))
            continue
        stack.extend((f"{name}.{child}" if name else child, sub) for child, sub in reversed(children))
    return units


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _cost(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> tuple[str, Optional[int], int]:
    """(kind, MACs or None when unknown, other FLOPs) of one call."""
    macs = layer_macs(module, tuple(x.shape), out)
    if macs is not None:
        kind = "conv" if isinstance(module, nn.modules.conv._ConvNd) else "linear"
        return (type(module).__name__ if callable(getattr(module, "compressed_macs", None)) else kind), macs, 0
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return "norm", 0, 2 * out.numel()
    if isinstance(module, _ACTIVATIONS):
        return "act", 0, out.numel()
    if isinstance(module, _POOLS):
        return "pool", 0, x.numel()
    has_params = any(True for _ in module.parameters(recurse=False))
    return type(module).__name__, None if has_params else 0, 0


def _meta_bytes(model: nn.Module) -> int:
    """memory_bytes on the meta device, where storages cannot tell shared tensors apart."""
    return sum(_nbytes(t) for t in [*model.parameters(), *model.buffers()])


def profile(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 224, 224)) -> ModelProfile:
    """Parameters, MACs/FLOPs, weight bytes and activation memory of ``model`` for one input of
    ``input_size`` (see the module docstring for what is counted). The model is left as found."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    sizes = tuple(input_size) if isinstance(input_size, (tuple, list, torch.Size)) else None
    if not sizes or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise ValueError(f"input_size: expected a tuple of positive ints such as (1, 3, 224, 224), got {input_size!r}")
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    layers: list[LayerProfile] = []
    uncounted: list[str] = []
    peak = [0]

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, out: object) -> None:
            x = next(t for t in inputs if isinstance(t, torch.Tensor))
            if not isinstance(out, torch.Tensor):
                return
            kind, macs, other = _cost(module, x, out)
            if macs is None:
                uncounted.append(name)
            out_bytes = 0 if out is x else _nbytes(out)  # an in-place op returns its input
            peak[0] = max(peak[0], _nbytes(x) + out_bytes)
            layers.append(LayerProfile(name, kind, macs or 0, other, tuple(out.shape), out_bytes))

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in _units(model)]
    modes = {module: module.training for module in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    on_meta = any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    macs = sum(layer.macs for layer in layers)
    return ModelProfile(
        input_size=tuple(input_size),
        params=count_parameters(model),
        conv_linear_params=sum(
            p.numel() for m in model.modules() if isinstance(m, _WEIGHTED) for p in m.parameters(recurse=False)
        ),
        macs=macs,
        flops=2 * macs,
        other_flops=sum(layer.other_flops for layer in layers),
        memory_bytes=_meta_bytes(model) if on_meta else memory_bytes(model),
        disk_bytes=None if on_meta else disk_bytes(model),
        activation_bytes=sum(layer.output_bytes for layer in layers),
        peak_activation_bytes=peak[0],
        layers=layers,
        uncounted=uncounted,
    )

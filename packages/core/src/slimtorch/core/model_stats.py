"""What a (compressed) model costs: parameters it represents, multiply-accumulates, bytes in
memory and on disk.

Compressed layers store weights in packed or partial form, so counting tensor elements would
mislead (eight int4 weights in one int32, half the values of a 2:4 weight). A module may define
``compressed_num_params()`` returning how many weights it still represents (the non-zero,
stored ones); :func:`count_parameters` uses it for that module instead of its tensors' sizes.
Likewise ``compressed_macs(input_shape)`` gives the MACs a compressed layer performs
(:func:`layer_macs`, :func:`count_macs`).
"""

from __future__ import annotations

from typing import Any

import safetensors.torch
import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Weights the model represents: ``compressed_num_params()`` where a module defines it,
    else the elements of its own parameters."""
    total = 0
    stack = [model]
    while stack:
        module = stack.pop()
        counter = getattr(module, "compressed_num_params", None)
        if callable(counter):
            total += int(counter())
            continue
        total += sum(p.numel() for p in module.parameters(recurse=False))
        stack.extend(module.children())
    return total


def layer_macs(module: nn.Module, input_shape: tuple[int, ...], out: torch.Tensor) -> int | None:
    """Multiply-accumulates of one call of ``module`` (as the papers count them): its
    ``compressed_macs(input_shape)`` hook where it has one; a convolution producing ``out`` with
    weight (C_out, C_in/groups, kh, kw) costs out.numel() · C_in/groups · kh · kw (depthwise and
    grouped convolutions included); a linear out.numel() · in_features; None for anything else."""
    hook = getattr(module, "compressed_macs", None)
    if callable(hook):
        return int(hook(tuple(input_shape)))
    if isinstance(module, nn.modules.conv._ConvNd):
        return out.numel() * module.weight[0].numel()
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return None


def count_macs(model: nn.Module, *inputs: Any) -> int:
    """MACs of one forward ``model(*inputs)`` (no gradients) in its convolutions, linear layers and
    compressed layers (:func:`layer_macs`; a layer with a hook is not descended into). Functional
    matmuls (attention's) are not counted."""
    total = [0]

    def hook(module: nn.Module, args: tuple, out: Any) -> None:
        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if x is not None and isinstance(out, torch.Tensor):
            total[0] += layer_macs(module, tuple(x.shape), out) or 0

    handles, stack = [], [model]
    while stack:
        module = stack.pop()
        if callable(getattr(module, "compressed_macs", None)) or isinstance(
            module, nn.modules.conv._ConvNd | nn.Linear
        ):
            handles.append(module.register_forward_hook(hook))
        else:
            stack.extend(module.children())
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def _unique_tensors(model: nn.Module) -> list[torch.Tensor]:
    seen: set[tuple[int, int]] = set()
    tensors = []
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (id(t), 0)
        if key not in seen:
            seen.add(key)
            tensors.append(t)
    return tensors


def memory_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (shared tensors counted once)."""
    return sum(t.numel() * t.element_size() for t in _unique_tensors(model))


def state_dict_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict's tensors, detached, contiguous and on CPU, shared storage duplicated, ready
    for safetensors (which refuses aliasing tensors)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            continue
        t = value.detach().to("cpu")
        ptr = t.untyped_storage().data_ptr() if t.numel() else -1
        out[key] = t.clone().contiguous() if ptr in seen or not t.is_contiguous() else t
        if ptr >= 0:
            seen.add(ptr)
    return out


def disk_bytes(model: nn.Module) -> int:
    """Size of the model's state_dict serialised as safetensors."""
    return len(safetensors.torch.save(state_dict_tensors(model)))

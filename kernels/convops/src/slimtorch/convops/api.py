"""Model-level conversions: fold eval BatchNorm into convolutions, swap torch modules for the
fused convops layers.

Which modules feed which is read from a ``torch.fx`` trace of the model in which convolutions,
norms, activations, shuffles and shifts are leaves: module B *consumes* module A when B's only
input is A's output, A's output goes nowhere else, and both are called once per forward. Those
edges are the only places where folding and fusing keep the model's function, whatever the
model's forward does (residual adds, shared activations such as torchvision ResNet's ``relu``
are left alone). A model that cannot be traced falls back to consecutive children of
``nn.Sequential`` containers.

    fold_bn(model)                  Conv2d → BatchNorm2d (eval): BN folded into the conv's weight and
                                    bias, the BN replaced by nn.Identity (timm's BatchNormAct2d by its
                                    activation)
    convert(model, ConvertConfig()) Conv2d(groups == in_channels, odd k)   → DepthwiseConv2d
                                    Conv2d 1x1 (any groups)                 → GroupedPointwiseConv2d
                                    … → activation                          → fused activation
                                    1x1 → [act →] ChannelShuffle            → fused output shuffle
                                    ChannelShuffle → 1x1                    → fused input shuffle
                                    other ChannelShuffle                    → convops ChannelShuffle
Conversions keep outputs equal in eval mode (up to floating-point rounding); modules are changed
in place and the model is returned (a new object only when the root itself is replaced).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools

import torch
import torch.fx
from torch import nn

from slimtorch.convops.depthwise import MAX_KERNEL_SIZE
from slimtorch.convops.formats import batchnorm_scale_shift, fold_scale_shift
from slimtorch.convops.layers import (
    ActiveShift2d,
    ChannelShuffle,
    DepthwiseConv2d,
    GroupedPointwiseConv2d,
    Shift2d,
    ShiftConv2d,
    SparseShift2d,
)
from slimtorch.core.activations import MODULE_TO_ACTIVATION, activation_of
from slimtorch.core.modules import replace_submodule

_OURS = (DepthwiseConv2d, GroupedPointwiseConv2d, ShiftConv2d)
# A "depthwise" conv with a larger channel multiplier is a dense conv of few input channels (a
# 1-channel stem has groups == in_channels == 1); the depthwise kernels unroll the multiplier.
MAX_CONVERTED_MULTIPLIER = 4
_LEAF_TYPES = (
    nn.Conv2d,
    nn.modules.batchnorm._BatchNorm,
    nn.ChannelShuffle,
    Shift2d,
    ActiveShift2d,
    SparseShift2d,
    *MODULE_TO_ACTIVATION,
)


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """What :func:`convert` swaps and fuses."""

    depthwise: bool = True  # Conv2d with groups == in_channels (odd kernel ≤ 11, zero padding)
    pointwise: bool = True  # 1x1 Conv2d, any groups (dense ones too: the fused epilogue saves two passes)
    fuse_activation: bool = True  # a consuming ReLU / ReLU6 / Hardswish / SiLU / GELU into the layer
    fuse_shuffle: bool = True  # ChannelShuffle next to a 1x1 into the layer's index maps


class _LeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _LEAF_TYPES) or super().is_leaf_module(m, module_qualified_name)


def _sequential_consumers(model: nn.Module) -> dict[str, str]:
    edges = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            names = [f"{name}.{child}" if name else child for child, _ in module.named_children()]
            edges.update(itertools.pairwise(names))
    return edges


def consumers(model: nn.Module) -> dict[str, str]:
    """{module name: name of the module that alone consumes its output} (module docstring)."""
    try:
        graph = _LeafTracer().trace(model)
    except Exception:  # not symbolically traceable (data-dependent control flow, ...)
        return _sequential_consumers(model)
    calls = collections.Counter(node.target for node in graph.nodes if node.op == "call_module")
    edges = {}
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1 or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op == "call_module" and calls[user.target] == 1 and user.args == (node,) and not user.kwargs:
            edges[node.target] = user.target
    return edges


def _follow(edges: dict[str, str], model: nn.Module, name: str | None) -> str | None:
    """The first module along ``edges`` from ``name`` that is not an nn.Identity."""
    while name is not None and isinstance(model.get_submodule(name), nn.Identity):
        name = edges.get(name)
    return name


def _bn_replacement(bn: nn.Module) -> nn.Module:
    """What remains of a norm once folded: timm's BatchNormAct2d keeps its dropout + activation."""
    parts = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
    parts = [m for m in parts if not isinstance(m, nn.Identity)]
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts) if parts else nn.Identity()


def fold_bn(model: nn.Module) -> nn.Module:
    """Fold every eval BatchNorm2d that alone consumes a Conv2d (torch's or ours without a fused
    activation) into that conv's weight and bias. Needs the BNs in eval mode."""
    edges = consumers(model)
    for conv_name, bn_name in edges.items():
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
            continue
        if getattr(conv, "activation", "none") != "none" or bn.num_features != conv.out_channels:
            continue
        if bn.training:
            raise ValueError(f"{bn_name}: fold_bn folds running statistics; call model.eval() first")
        scale, shift = batchnorm_scale_shift(bn)
        weight, bias = fold_scale_shift(conv.weight, conv.bias, scale, shift)
        with torch.no_grad():
            conv.weight.copy_(weight)
        conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)
        model = replace_submodule(model, bn_name, _bn_replacement(bn))
    return model


def _convertible(module: nn.Module, config: ConvertConfig) -> str | None:
    """'depthwise' / 'pointwise' for a torch Conv2d that convert() swaps, else None."""
    if type(module) is not nn.Conv2d or module.padding_mode != "zeros":
        return None
    k = module.kernel_size
    if (
        config.depthwise
        and module.groups == module.in_channels
        and module.out_channels % module.in_channels == 0
        and module.out_channels // module.in_channels <= MAX_CONVERTED_MULTIPLIER
        and all(s % 2 == 1 and s <= MAX_KERNEL_SIZE for s in k)
    ):
        return "depthwise"
    if (
        config.pointwise
        and k == (1, 1)
        and module.padding in ((0, 0), "valid")
        and module.stride[0] == module.stride[1]
    ):
        return "pointwise"
    return None


def _swap(conv: nn.Conv2d, kind: str) -> nn.Conv2d:
    return DepthwiseConv2d.from_dense(conv) if kind == "depthwise" else GroupedPointwiseConv2d.from_dense(conv)


def convert(model: nn.Module, config: ConvertConfig | None = None) -> nn.Module:
    """Swap matching torch modules for convops layers and fuse their neighbours (module docstring).
    Run :func:`fold_bn` first so that Conv → BN → act chains fuse completely."""
    config = config or ConvertConfig()
    edges = consumers(model)
    producers = {b: a for a, b in edges.items()}
    for name, _ in list(model.named_modules()):
        module = model.get_submodule(name)
        kind = _convertible(module, config)
        if kind is not None:
            module = _swap(module, kind)
            model = replace_submodule(model, name, module)
        if isinstance(module, _OURS):
            _fuse_neighbours(model, name, module, edges, producers, config)
        elif type(module) is nn.ChannelShuffle:
            model = replace_submodule(model, name, ChannelShuffle(module.groups))
    return model


def _fuse_neighbours(
    model: nn.Module,
    name: str,
    layer: nn.Conv2d,
    edges: dict[str, str],
    producers: dict[str, str],
    config: ConvertConfig,
) -> None:
    after = _follow(edges, model, edges.get(name))
    if config.fuse_activation and after is not None and layer.activation == "none":
        act = activation_of(model.get_submodule(after))
        if act not in (None, "none"):
            layer.activation = act
            replace_submodule(model, after, nn.Identity())
            after = _follow(edges, model, edges.get(after))
    if not (config.fuse_shuffle and isinstance(layer, GroupedPointwiseConv2d)):
        return
    if after is not None and layer.out_shuffle_groups is None:
        shuffle = model.get_submodule(after)
        if isinstance(shuffle, nn.ChannelShuffle) and layer.out_channels % shuffle.groups == 0:
            layer.out_shuffle_groups = shuffle.groups
            replace_submodule(model, after, nn.Identity())
    before = _follow(producers, model, producers.get(name))
    if before is not None and layer.shuffle_groups is None:
        shuffle = model.get_submodule(before)
        if isinstance(shuffle, nn.ChannelShuffle) and layer.in_channels % shuffle.groups == 0:
            layer.shuffle_groups = shuffle.groups
            replace_submodule(model, before, nn.Identity())

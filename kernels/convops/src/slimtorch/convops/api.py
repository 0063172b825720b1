"""Model-level conversion: ``fuse_`` folds eval BatchNorm into convolutions and swaps torch
modules for the fused convops layers, through core's conversion walk.

Which modules feed which is read from a ``torch.fx`` trace of the model in which convolutions,
norms, activations, shuffles and shifts are leaves: module B *consumes* module A when B's only
input is A's output, A's output goes nowhere else, and both are called once per forward. Those
edges are the only places where folding and fusing keep the model's function, whatever the
model's forward does (residual adds, shared activations such as torchvision ResNet's ``relu``
are left alone). A model that cannot be traced falls back to consecutive children of
``nn.Sequential`` containers.

    report = fuse_(model, FuseConfig())     report.model: the fused model; report.converted / .skipped

For each convolution (a torch ``nn.Conv2d``, or one of ours to fuse more into), in order:

    fold_bn         Conv2d → BatchNorm2d (eval): BN folded into the conv's weight and bias, the BN
                    replaced by nn.Identity (timm's BatchNormAct2d by its activation)
    depthwise       Conv2d(groups == in_channels, odd k)   → DepthwiseConv2d
    pointwise       Conv2d 1x1 (any groups)                 → GroupedPointwiseConv2d
    fuse_activation … → activation                          → fused activation
    fuse_shuffle    1x1 → [act →] ChannelShuffle            → fused output shuffle
                    ChannelShuffle → 1x1                    → fused input shuffle
and every other ``nn.ChannelShuffle`` → convops :class:`ChannelShuffle`. Outputs stay equal in eval
mode (up to floating-point rounding). Folding needs the BatchNorms in eval mode (``model.eval()``).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools

import torch
import torch.fx
from torch import nn

from slimtorch.convops.bn_folding import batchnorm_scale_shift, fold_scale_shift
from slimtorch.convops.depthwise import MAX_KERNEL_SIZE
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
from slimtorch.core.conversions import ConversionConfig, ConversionReport, FilterFn, Replace, Skip, convert_model

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
class FuseConfig(ConversionConfig):
    """What :func:`fuse_` folds, swaps and fuses."""

    fold_bn: bool = True  # eval BatchNorm2d consuming a conv, folded into its weight and bias
    depthwise: bool = True  # Conv2d with groups == in_channels (odd kernel ≤ 11, zero padding)
    pointwise: bool = True  # 1x1 Conv2d, any groups (dense ones too: the fused epilogue saves two passes)
    fuse_activation: bool = True  # a consuming ReLU / ReLU6 / Hardswish / SiLU / GELU into the layer
    fuse_shuffle: bool = True  # ChannelShuffle next to a 1x1 into the layer's index maps

    def plan(self, model: nn.Module) -> _Plan:
        edges = consumers(model)
        return _Plan(model, edges, {b: a for a, b in edges.items()})

    def convert_module(self, module: nn.Module, fqn: str, plan: _Plan) -> nn.Module | Replace | Skip | None:
        if type(module) is nn.ChannelShuffle:
            return ChannelShuffle(module.groups)
        if type(module) is not nn.Conv2d and not isinstance(module, _OURS):
            return None
        pending: dict[str, nn.Module] = {}
        notes: list[str] = []
        if self.fold_bn:
            _fold_bn(module, fqn, plan, pending, notes)
        kind = _convertible(module, self)
        layer = _swap(module, kind) if kind is not None else module
        if isinstance(layer, _OURS):
            _fuse_neighbours(layer, fqn, plan, pending, notes, self)
        if layer is module and not pending:
            return None
        return Replace(layer, tuple(pending.items()), note=", ".join(notes))


def fuse_(model: nn.Module, config: FuseConfig | None = None, filter_fn: FilterFn | None = None) -> ConversionReport:
    """Fold, swap and fuse (module docstring) in place; returns the report (``report.model``)."""
    config = FuseConfig() if config is None else config
    if not isinstance(config, FuseConfig):
        raise TypeError(f"config: expected a FuseConfig, got {type(config).__name__}")
    return convert_model(model, config, filter_fn, conversion="fuse_")


@dataclasses.dataclass
class _Plan:
    root: nn.Module
    edges: dict[str, str]  # producer -> its one consumer
    producers: dict[str, str]

    def module(self, name: str, pending: dict[str, nn.Module]) -> nn.Module:
        return pending[name] if name in pending else self.root.get_submodule(name)

    def follow(self, edges: dict[str, str], name: str | None, pending: dict[str, nn.Module]) -> str | None:
        """The first module along ``edges`` from ``name`` that is not an nn.Identity."""
        while name is not None and isinstance(self.module(name, pending), nn.Identity):
            name = edges.get(name)
        return name


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


def _bn_replacement(bn: nn.Module) -> nn.Module:
    """What remains of a norm once folded: timm's BatchNormAct2d keeps its dropout + activation."""
    parts = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
    parts = [m for m in parts if not isinstance(m, nn.Identity)]
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts) if parts else nn.Identity()


def _fold_bn(conv: nn.Conv2d, fqn: str, plan: _Plan, pending: dict[str, nn.Module], notes: list[str]) -> None:
    """Fold the eval BatchNorm2d that alone consumes ``conv`` into its weight and bias (a conv of
    ours only when it fuses nothing after the convolution: no activation, no output shuffle)."""
    bn_name = plan.edges.get(fqn)
    if bn_name is None:
        return
    bn = plan.module(bn_name, pending)
    if not isinstance(bn, nn.BatchNorm2d) or bn.num_features != conv.out_channels:
        return
    if getattr(conv, "activation", "none") != "none" or getattr(conv, "out_shuffle_groups", None) is not None:
        return
    if bn.training:
        raise ValueError(f"{bn_name}: fuse_ folds BatchNorm running statistics; call model.eval() first")
    scale, shift = batchnorm_scale_shift(bn)
    weight, bias = fold_scale_shift(conv.weight, conv.bias, scale, shift)
    with torch.no_grad():
        conv.weight.copy_(weight)
    conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)
    pending[bn_name] = _bn_replacement(bn)
    notes.append(f"folded {bn_name}")


def _convertible(module: nn.Module, config: FuseConfig) -> str | None:
    """'depthwise' / 'pointwise' for a torch Conv2d that fuse_ swaps, else None."""
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


def _fuse_neighbours(
    layer: nn.Conv2d, fqn: str, plan: _Plan, pending: dict[str, nn.Module], notes: list[str], config: FuseConfig
) -> None:
    after = plan.follow(plan.edges, plan.edges.get(fqn), pending)
    if config.fuse_activation and after is not None and layer.activation == "none":
        act = activation_of(plan.module(after, pending))
        if act not in (None, "none"):
            layer.activation = act
            pending[after] = nn.Identity()
            notes.append(f"fused {act} ({after})")
            after = plan.follow(plan.edges, plan.edges.get(after), pending)
    if not (config.fuse_shuffle and isinstance(layer, GroupedPointwiseConv2d)):
        return
    if after is not None and layer.out_shuffle_groups is None:
        shuffle = plan.module(after, pending)
        if isinstance(shuffle, nn.ChannelShuffle) and layer.out_channels % shuffle.groups == 0:
            layer.out_shuffle_groups = shuffle.groups
            pending[after] = nn.Identity()
            notes.append(f"fused output shuffle ({after})")
    before = plan.follow(plan.producers, plan.producers.get(fqn), pending)
    if before is not None and layer.shuffle_groups is None:
        shuffle = plan.module(before, pending)
        if isinstance(shuffle, nn.ChannelShuffle) and layer.in_channels % shuffle.groups == 0:
            layer.shuffle_groups = shuffle.groups
            pending[before] = nn.Identity()
            notes.append(f"fused input shuffle ({before})")

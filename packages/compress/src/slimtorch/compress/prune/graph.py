"""The channel dependency graph: which channels of which layers must be removed together.

**Channel ids.** The model is traced with ``torch.fx`` and run once on the example inputs. Every
tensor's channel dimension(s) carry an array of integer *ids*: a convolution or linear layer
creates fresh ids for its outputs; elementwise ops pass them on; ``a + b`` (a residual add),
``a * b`` (an SE gate) unify ``a``'s and ``b``'s ids position by position (union-find). Data
movement (``cat``, ``chunk``, ``view``/``reshape``/``flatten``, ``permute``/``transpose``, channel
shuffles, indexing) is run on a tensor holding the ids themselves, so wherever a channel goes its
id follows: ``flatten`` into a Linear gives that Linear's input features the ids of the channels
they came from (each id repeated H·W times), ``cat`` concatenates id arrays, a shuffle permutes them.

**Constraints that keep the pruned model runnable.** A split into equal chunks, a channel shuffle
(``view(N, g, C/g, ...)``, :class:`nn.ChannelShuffle` and convops' ``ChannelShuffle`` /
``ShuffleConcat``) and a grouped convolution need the same positions removed from every chunk /
group, so the ids at the same position of each chunk / group are unified. A depthwise convolution
(``groups == in_channels > 1``; a 1-channel conv is an ordinary conv) ties input channel c to its
output channels c·M … c·M+M-1. A union-find *class* of ids is the unit of removal: removing it
removes every channel holding one of its ids, in every layer (conv/linear outputs and inputs,
BatchNorm, per-channel parameters, shifts).

**Frozen ids** cannot be removed: the model's inputs and outputs, channels selected by fixed
indices (``x[:, :16]``, ``split`` with literal sizes), channels mixed by an op whose coupling is
unknown (attention, LayerNorm/GroupNorm over channels, an unlisted function); the reason is kept.

**Groups.** Classes that live in exactly the same places (the same layers and dimensions) form a
:class:`PruneGroup`: e.g. all 64 channels of a ResNet stage's residual stream, or one conv's 128
filters. Ratios and rounding apply per group.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

__all__ = ["ChannelGraph", "ModuleRecord", "PruneGroup", "UntraceableModelError", "build_graph"]


class UntraceableModelError(RuntimeError):
    """The model cannot be traced with torch.fx; the message names the op and the module."""


def _convops_types() -> dict[str, type]:
    try:
        from slimtorch import convops
    except ImportError:  # slimtorch-convops is optional
        return {}
    names = (
        "DepthwiseConv2d",
        "GroupedPointwiseConv2d",
        "ChannelShuffle",
        "ShuffleConcat",
        "Shift2d",
        "ActiveShift2d",
        "SparseShift2d",
        "ShiftConv2d",
    )
    return {n: getattr(convops, n) for n in names if hasattr(convops, n)}


_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.SiLU,
    nn.GELU,
    nn.Tanh,
    nn.ELU,
    nn.SELU,
    nn.Mish,
    nn.Softplus,
    nn.Hardtanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.AlphaDropout,
)
# spatial-only ops: the channel dim (dim 1) passes through unchanged
_SPATIAL_MODULES = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.Upsample,
)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu,
    torch.relu_,
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.hardswish,
    F.hardsigmoid,
    F.silu,
    F.gelu,
    F.elu,
    F.mish,
    torch.sigmoid,
    torch.tanh,
    F.sigmoid,
    F.tanh,
    F.dropout,
    F.hardtanh,
    torch.nn.functional.dropout2d,
    operator.neg,
    torch.neg,
    torch.exp,
    torch.clamp,
    torch.clip,
}
_BINARY_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.mul,
    operator.imul,
    operator.sub,
    operator.truediv,
    torch.add,
    torch.mul,
    torch.sub,
    torch.div,
    torch.maximum,
    torch.minimum,
}
_SPATIAL_FUNCTIONS = {
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.avg_pool2d,
    F.max_pool2d,
    F.interpolate,
    F.pad,
    torch.roll,
}
_ELEMENTWISE_METHODS = {
    "relu",
    "relu_",
    "sigmoid",
    "sigmoid_",
    "tanh",
    "clamp",
    "clamp_",
    "clamp_min",
    "contiguous",
    "float",
    "to",
    "type_as",
    "clone",
    "detach",
    "neg",
    "exp",
    "hardtanh_",
}
# fx-wrapped functions known by name: per-sample drop (torchvision's stochastic_depth, timm's drop_path)
_ELEMENTWISE_NAMES = {"stochastic_depth", "drop_path"}
_BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_"}
_MOVEMENT_FUNCTIONS = {
    torch.flatten,
    torch.cat,
    torch.concat,
    torch.chunk,
    torch.split,
    torch.transpose,
    torch.permute,
    torch.reshape,
    torch.squeeze,
    torch.unsqueeze,
    torch.stack,
    operator.getitem,
    torch.channel_shuffle,
    F.channel_shuffle if hasattr(F, "channel_shuffle") else torch.channel_shuffle,
    torch.narrow,
    torch.unbind,
}
_MOVEMENT_METHODS = {
    "view",
    "reshape",
    "flatten",
    "permute",
    "transpose",
    "chunk",
    "split",
    "squeeze",
    "unsqueeze",
    "unflatten",
    "expand",
    "expand_as",
    "narrow",
    "unbind",
}
_REDUCTIONS = {"mean", "sum", "amax", "amin"}
_REDUCTION_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}


@dataclass
class Info:
    """Channel ids of one tensor: ``dims`` (positive dims of the tensor) and ``ids`` (an int64
    array whose shape is the sizes of those dims; -1 = a position no channel owns)."""

    dims: tuple[int, ...]
    ids: np.ndarray


@dataclass
class ModuleRecord:
    """One module whose parameters follow channels: ``kind`` conv | linear | norm | shift | param,
    ``slots`` {name: ids of that dimension} (``out``, ``in``, ``channels``)."""

    name: str
    kind: str
    module: Any
    slots: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PruneGroup:
    """Classes of ids that live in the same places. ``classes`` (roots); ``members`` {root: ids};
    ``places`` the (module, slot) names; ``multiplicity``: channels one class holds in its
    largest place (2 for a class tied across a 2-group shuffle)."""

    index: int
    classes: list[int]
    members: dict[int, np.ndarray]
    places: tuple[tuple[str, str], ...]
    multiplicity: int = 1

    @property
    def size(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        names = sorted({m for m, _ in self.places})
        head = ", ".join(names[:4]) + (f", … ({len(names)} layers)" if len(names) > 4 else "")
        return f"group {self.index}: {self.size} channels in {head}"


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def fresh(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, i: int) -> int:
        parent = self.parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True):
            if x < 0 or y < 0:
                continue
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)


class _Tracer(torch.fx.Tracer):
    """Leaves: torch.nn modules (fx's rule), convops layers, and modules naming themselves leaves."""

    def __init__(self, leaf_types: tuple[type, ...]) -> None:
        super().__init__()
        self.leaf_types = leaf_types
        self._stack: list[str] = []
        self.failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self.leaf_types) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        self._stack.append(self.path_of_module(m) or type(m).__name__)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            self.failed_in = self.failed_in or self._stack[-1]  # the innermost module
            raise
        finally:
            self._stack.pop()


def _trace(model: nn.Module, leaf_types: tuple[type, ...]) -> torch.fx.GraphModule:
    tracer = _Tracer(leaf_types)
    try:
        graph = tracer.trace(model)
    except Exception as err:
        where = tracer.failed_in or "<root>"
        module = model.get_submodule(where) if where != "<root>" and _has(model, where) else model
        raise UntraceableModelError(
            f"cannot build the channel dependency graph of {type(model).__name__}: torch.fx could not trace "
            f"module {where!r} ({type(module).__name__}): {type(err).__name__}: {err}"
        ) from err
    return torch.fx.GraphModule(model, graph)


def _has(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


class ChannelGraph:
    """The result of :func:`build_graph` (module docstring)."""

    def __init__(self) -> None:
        self.uf = _UnionFind()
        self.records: dict[str, ModuleRecord] = {}
        self.frozen: dict[int, str] = {}  # id -> reason (resolved to roots in finish())
        self.groups: list[PruneGroup] = []
        self.frozen_groups: list[tuple[PruneGroup, str]] = []
        self.gm: torch.fx.GraphModule | None = None
        self.infos: dict[str, Any] = {}  # fx node name -> Info / list / None
        self.node_module: dict[str, str] = {}  # fx node name -> module that owns it

    # ------------------------------------------------------------------ building
    def freeze(self, ids: np.ndarray | None, reason: str) -> None:
        if ids is None:
            return
        for i in np.asarray(ids).ravel().tolist():
            if i >= 0 and i not in self.frozen:
                self.frozen[i] = reason

    def finish(self, ignored: set[str]) -> None:
        """Resolve classes, places and groups; freeze the out-dims of ``ignored`` modules."""
        for name in ignored:
            record = self.records.get(name)
            if record is not None and "out" in record.slots:
                self.freeze(record.slots["out"], f"{name} is in ignored_layers")
        root = np.asarray(self.uf.parent, dtype=np.int64)
        while True:  # path halving to the fixed point: root[i] is the class of id i
            nxt = root[root]
            if np.array_equal(nxt, root):
                break
            root = nxt
        frozen_roots: dict[int, str] = {}
        if self.frozen:
            ids = np.fromiter(self.frozen.keys(), dtype=np.int64, count=len(self.frozen))
            reasons = list(self.frozen.values())
            for r, k in zip(root[ids].tolist(), range(len(reasons)), strict=True):
                frozen_roots.setdefault(r, reasons[k])
        order = np.argsort(root, kind="stable")
        sorted_roots = root[order]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(sorted_roots)) + 1])
        members_of = dict(zip(sorted_roots[starts].tolist(), np.split(order, starts[1:]), strict=True))
        # every (class, place) pair, vectorised: places[k] = (module, slot)
        slots: list[tuple[str, str]] = []
        pair_r, pair_k, pair_c = [], [], []
        for record in self.records.values():
            for slot, ids in record.slots.items():
                flat = ids.ravel()
                uniq, counts = np.unique(root[flat[flat >= 0]], return_counts=True)
                pair_r.append(uniq)
                pair_k.append(np.full(len(uniq), len(slots), dtype=np.int64))
                pair_c.append(counts if slot != "in" else np.zeros_like(counts))
                slots.append((record.name, slot))
        if not slots:
            return
        all_r, all_k, all_c = np.concatenate(pair_r), np.concatenate(pair_k), np.concatenate(pair_c)
        # classes with the same set of places share a signature (xor of one random word per place)
        words = np.random.default_rng(12345).integers(1, 2**62, size=len(slots), dtype=np.int64)
        signature = np.zeros(len(root), dtype=np.int64)
        np.bitwise_xor.at(signature, all_r, words[all_k])
        by_root = np.argsort(all_r, kind="stable")
        sorted_r = all_r[by_root]
        classes = np.unique(all_r)
        class_order = np.argsort(signature[classes], kind="stable")
        sig_sorted = signature[classes][class_order]
        bounds = np.flatnonzero(np.diff(sig_sorted)) + 1
        for chunk in np.split(classes[class_order], bounds):
            roots = sorted(chunk.tolist())
            lo, hi = np.searchsorted(sorted_r, [roots[0], roots[0] + 1])
            rep = by_root[lo:hi]
            where = sorted(set(all_k[rep].tolist()))
            group = PruneGroup(
                index=len(self.groups) + len(self.frozen_groups),
                classes=roots,
                members={r: members_of[r] for r in roots},
                places=tuple(slots[k] for k in where),
                multiplicity=max(1, int(all_c[rep].max())),
            )
            reasons = [frozen_roots[r] for r in roots if r in frozen_roots]
            if reasons:
                self.frozen_groups.append((group, reasons[0]))
            else:
                self.groups.append(group)

    def removed_ids(self, removed_roots: set[int]) -> np.ndarray:
        parts = [g.members[r] for g in self.groups for r in g.classes if r in removed_roots]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


# ------------------------------------------------------------------ the id-carrying interpreter


def _id_tensor(info: Info | None, shape: Sequence[int]) -> torch.Tensor:
    """A tensor of ``shape`` holding at each element the id of its channel (-1: none)."""
    if info is None:
        return torch.full(tuple(shape), -1, dtype=torch.int64)
    view = [1] * len(shape)
    for d, size in zip(info.dims, info.ids.shape, strict=True):
        view[d] = size
    ids = torch.from_numpy(info.ids)
    order = np.argsort(info.dims)
    ids = ids.permute(*order.tolist()) if len(info.dims) > 1 else ids
    return ids.reshape(view).expand(tuple(shape)).contiguous()


def _decode(t: torch.Tensor) -> Info | None:
    """The inverse of :func:`_id_tensor`: the dims along which ids vary and the ids there; None
    when the tensor carries no ids. Raises ValueError when ids are not a broadcast over other dims."""
    if t.numel() == 0 or bool((t < 0).all()):
        return None
    dims = []
    for d in range(t.dim()):
        if t.shape[d] > 1 and not bool((t == t.narrow(d, 0, 1)).all()):
            dims.append(d)
    index = [slice(None) if d in dims else 0 for d in range(t.dim())]
    ids = t[tuple(index)]
    if len(dims) == 0:
        return Info((0,), ids.reshape(1).numpy().copy()) if t.dim() else None
    return Info(tuple(dims), ids.contiguous().numpy().copy())


def _tree_map(fn, value):
    if isinstance(value, tuple | list):
        return type(value)(_tree_map(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: _tree_map(fn, v) for k, v in value.items()}
    return fn(value)


class _Interp(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule, graph: ChannelGraph, types: dict[str, type]) -> None:
        super().__init__(gm)
        self.g = graph
        self.types = types
        self.infos: dict[str, Any] = graph.infos

    # helpers
    def info(self, arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node):
            return self.infos.get(arg.name)
        if isinstance(arg, tuple | list):
            return type(arg)(self.info(a) for a in arg)
        return None

    def tensor_infos(self, n: torch.fx.Node) -> list[tuple[Info, str]]:
        out = []
        for a in n.all_input_nodes:
            inf = self.infos.get(a.name)
            stack = [inf]
            while stack:
                x = stack.pop()
                if isinstance(x, Info):
                    out.append(x)
                elif isinstance(x, tuple | list):
                    stack.extend(x)
        return out

    def freeze_all(self, n: torch.fx.Node, value: Any, reason: str) -> Any:
        """An op of unknown coupling: its inputs' channels are frozen; its outputs get fresh frozen
        ids on the channel dim of its first input when the shape is unchanged (LayerNorm, attention)."""
        infos = self.tensor_infos(n)
        for inf in infos:
            self.g.freeze(inf.ids, reason)
        dim = None
        first = n.args[0] if n.args else None
        if isinstance(first, torch.fx.Node) and isinstance(value, torch.Tensor):
            inf = self.infos.get(first.name)
            if isinstance(inf, Info) and len(inf.dims) == 1 and first.meta.get("_value_shape") == tuple(value.shape):
                dim = inf.dims[0]
        return self.fresh_like(value, frozen=reason, dim=dim)

    def fresh_like(self, value: Any, frozen: str | None = None, dim: int | None = None) -> Any:
        if isinstance(value, torch.Tensor):
            if value.dim() < 2:
                return None
            d = (1 if value.dim() == 4 else value.dim() - 1) if dim is None else dim
            info = Info((d,), self.g.uf.fresh(value.shape[d]))
            if frozen:
                self.g.freeze(info.ids, frozen)
            return info
        if isinstance(value, tuple | list):
            return type(value)(self.fresh_like(v, frozen, dim) for v in value)
        return None

    def run_node(self, n: torch.fx.Node) -> Any:
        value = super().run_node(n)
        if isinstance(value, torch.Tensor):
            n.meta["_value_shape"] = tuple(value.shape)
        owner = n.meta.get("nn_module_stack")
        if owner:
            self.g.node_module[n.name] = next(reversed(owner))
        try:
            self.infos[n.name] = self.propagate(n, value)
        except _Frozen as frozen:
            self.infos[n.name] = self.freeze_all(n, value, frozen.reason)
        return value

    # the rules
    def propagate(self, n: torch.fx.Node, value: Any) -> Any:
        where = f"{n.op} {n.target if isinstance(n.target, str) else getattr(n.target, '__name__', n.target)}"
        if n.op == "placeholder":
            return self.fresh_like(value, frozen="model input", dim=1)
        if n.op == "output":
            for inf in self.tensor_infos(n):
                self.g.freeze(inf.ids, "model output")
            return None
        if n.op == "get_attr":
            return self.get_attr_info(n, value)
        if not _has_tensor(value):
            return None
        if n.target is operator.getitem and isinstance(n.args[0], torch.fx.Node):
            container = self.infos.get(n.args[0].name)
            if isinstance(container, tuple | list) and isinstance(n.args[1], int):
                return container[n.args[1]]
            if container is None and not isinstance(self.env[n.args[0]], torch.Tensor):
                return None
        if n.op == "call_module":
            return self.call_module_info(n, self.module.get_submodule(n.target), value)
        target = n.target
        if n.op == "call_method":
            if target in _ELEMENTWISE_METHODS:
                return self.elementwise(n, value)
            if target in _BINARY_METHODS:
                return self.binary(n, value)
            if target in _MOVEMENT_METHODS:
                return self.movement(n, value)
            if target in _REDUCTIONS:
                return self.reduction(n, value)
            raise _Frozen(f"{where}: unknown channel coupling")
        if target in _ELEMENTWISE_FUNCTIONS or getattr(target, "__name__", None) in _ELEMENTWISE_NAMES:
            return self.elementwise(n, value)
        if target in _BINARY_FUNCTIONS:
            return self.binary(n, value)
        if target in _SPATIAL_FUNCTIONS:
            return self.spatial(n, value)
        if target in _MOVEMENT_FUNCTIONS:
            return self.movement(n, value)
        if target in _REDUCTION_FUNCTIONS:
            return self.reduction(n, value)
        if target is F.linear:
            raise _Frozen(f"{where}: functional linear (its weight is not a module)")
        raise _Frozen(f"{where}: unknown channel coupling")

    def get_attr_info(self, n: torch.fx.Node, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return None
        non_unit = [d for d, s in enumerate(value.shape) if s > 1]
        if len(non_unit) != 1:
            return self.fresh_like(value, frozen=f"parameter {n.target} of shape {tuple(value.shape)}")
        d = non_unit[0]
        ids = self.g.uf.fresh(value.shape[d])
        owner, _, attr = n.target.rpartition(".")
        self.g.records[n.target] = ModuleRecord(
            n.target, "param", self.module.get_submodule(owner), {"channels": ids}, {"attr": attr, "dim": d}
        )
        return Info((d,), ids)

    def elementwise(self, n: torch.fx.Node, value: Any) -> Any:
        first = n.args[0] if n.args else None
        return self.info(first) if isinstance(first, torch.fx.Node) else None

    def binary(self, n: torch.fx.Node, value: torch.Tensor) -> Any:
        """Broadcast from the right; ids on the same output dim are unified."""
        if not isinstance(value, torch.Tensor):
            return None
        out_ids: dict[int, np.ndarray] = {}
        for a in list(n.args[:2]) + list(n.kwargs.values())[:1]:
            if not isinstance(a, torch.fx.Node):
                continue
            inf = self.infos.get(a.name)
            val = a.meta.get("_value_shape")
            if inf is None or val is None:
                continue
            if len(inf.dims) != 1:
                raise _Frozen("elementwise op on a tensor whose channels span several dims")
            shift = value.dim() - len(val)
            d = inf.dims[0] + shift
            if d in out_ids:
                if out_ids[d].shape != inf.ids.shape:
                    raise _Frozen("elementwise op on channel arrays of different sizes")
                self.g.uf.union(out_ids[d], inf.ids)
            else:
                out_ids[d] = inf.ids
        if not out_ids:
            return None
        if len(out_ids) > 1:
            raise _Frozen("elementwise op mixing channel dims")
        ((d, ids),) = out_ids.items()
        if value.shape[d] != len(ids):
            raise _Frozen("elementwise op broadcasting a channel array")
        return Info((d,), ids)

    def spatial(self, n: torch.fx.Node, value: torch.Tensor) -> Any:
        inf = self.info(n.args[0])
        if inf is None or not isinstance(value, torch.Tensor):
            return None
        if any(d >= 2 for d in inf.dims) or value.dim() != 4:
            raise _Frozen("spatial op applied to a channel dim")
        if value.shape[1] != inf.ids.shape[0]:
            raise _Frozen("spatial op changing the channel count")
        return inf

    def reduction(self, n: torch.fx.Node, value: torch.Tensor) -> Any:
        inf = self.info(n.args[0])
        if inf is None:
            return None
        x_dim = len(n.args[0].meta["_value_shape"])
        dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else None)
        keepdim = n.kwargs.get("keepdim", n.args[2] if len(n.args) > 2 else False)
        if dim is None:
            raise _Frozen("reduction over every dim, channels included")
        dims = {d % x_dim for d in (dim if isinstance(dim, tuple | list) else (dim,))}
        if dims & set(inf.dims):
            raise _Frozen("reduction over the channel dim")
        if keepdim:
            return inf
        new = tuple(d - sum(1 for r in dims if r < d) for d in inf.dims)
        return Info(new, inf.ids)

    def movement(self, n: torch.fx.Node, value: Any) -> Any:
        """Run the op on id tensors (module docstring)."""
        ins = self.tensor_infos(n)
        if not ins:
            return None

        joins = n.target in (torch.cat, torch.concat, torch.stack)

        def to_ids(a: Any) -> Any:
            # tensors with channel ids become id tensors; others (indices) stay, except in a join
            has_ids = isinstance(a, torch.fx.Node) and isinstance(self.infos.get(a.name), Info)
            if isinstance(a, torch.fx.Node) and "_value_shape" in a.meta and (has_ids or joins):
                return _id_tensor(self.infos.get(a.name), a.meta["_value_shape"])
            if isinstance(a, torch.fx.Node):
                value = self.env[a]
                return value.cpu() if isinstance(value, torch.Tensor) and value.device.type != "meta" else value
            return a

        args = _tree_map(to_ids, n.args)
        kwargs = _tree_map(to_ids, n.kwargs)
        fn = getattr(args[0], n.target) if n.op == "call_method" else n.target
        try:
            result = fn(*args[1:], **kwargs) if n.op == "call_method" else fn(*args, **kwargs)
        except Exception as err:
            raise _Frozen(
                f"{getattr(fn, '__name__', fn)}: channels could not be followed ({type(err).__name__})"
            ) from err
        out = _tree_map(lambda t: _decode(t) if isinstance(t, torch.Tensor) else None, result)
        self.check_movement(n, ins, out)
        return out

    def check_movement(self, n: torch.fx.Node, ins: list[Info], out: Any) -> None:
        kept: set[int] = set()
        outs: list[Info] = []
        stack = [out]
        while stack:
            x = stack.pop()
            if isinstance(x, Info):
                outs.append(x)
                kept.update(np.unique(x.ids).tolist())
            elif isinstance(x, tuple | list):
                stack.extend(x)
        before = set().union(*(np.unique(i.ids).tolist() for i in ins)) - {-1}
        if not before <= kept:
            missing = np.array(sorted(before - kept), dtype=np.int64)
            self.g.freeze(missing, f"{n.target}: channels selected by fixed indices")
            for i in ins:
                self.g.freeze(i.ids, f"{n.target}: channels selected by fixed indices")
        name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
        # equal chunks must lose the same positions
        if name in ("chunk", "split", "unbind") and len(outs) > 1:
            split = n.args[1] if len(n.args) > 1 else n.kwargs.get("split_size_or_sections", n.kwargs.get("chunks"))
            if name == "split" and not isinstance(split, torch.fx.Node):
                for i in ins:
                    self.g.freeze(i.ids, "split with literal sizes")
            shapes = {o.ids.shape for o in outs}
            if len(shapes) != 1:
                for i in ins:
                    self.g.freeze(i.ids, f"{name} into unequal chunks")
            else:
                for o in outs[1:]:
                    self.g.uf.union(outs[0].ids, o.ids)
        # a split of the channel dim into (groups, per-group) dims: a channel shuffle / grouped view
        for o in outs:
            if len(o.dims) > 1 and o.ids.ndim > 1:
                self.tie_groups(o.ids)
        # literal sizes in a view of channel dims would break after pruning
        if name in ("view", "reshape", "unflatten") or n.target is torch.reshape:
            shape_args = n.args[1:]
            if len(shape_args) == 1 and isinstance(shape_args[0], tuple | list):
                shape_args = tuple(shape_args[0])
            for o in outs:
                for d in o.dims:
                    if d < len(shape_args) and isinstance(shape_args[d], int) and shape_args[d] != -1:
                        if o.ids.ndim > 1 and d != o.dims[int(np.argmax(o.ids.shape))]:
                            continue  # the group count of a shuffle view is literal: fine
                        self.g.freeze(o.ids, f"{name} with literal size {shape_args[d]} on a channel dim")

    def tie_groups(self, ids: np.ndarray, groups_first: bool | None = None) -> None:
        """(g, C/g) ids of a grouped view: the same per-group position goes together. ``groups_first``
        None: a view of unknown order, the smaller axis is taken as the groups (shuffles use 2-8 groups)."""
        grid = ids.reshape(ids.shape[0], -1)
        if groups_first is False or (groups_first is None and grid.shape[0] > grid.shape[1]):
            grid = grid.T
        for row in grid[1:]:
            self.g.uf.union(grid[0], row)

    def shuffle(self, ids: np.ndarray, groups: int) -> np.ndarray:
        """channel_shuffle on an id array: tie positions across groups, then permute."""
        grid = ids.reshape(groups, -1)
        self.tie_groups(grid, groups_first=True)
        return grid.T.reshape(-1).copy()

    def call_module_info(self, n: torch.fx.Node, m: nn.Module, value: Any) -> Any:
        t = self.types
        x_info = self.info(n.args[0]) if n.args else None
        name = n.target
        if isinstance(m, nn.Conv2d) and not (t.get("ShiftConv2d") and isinstance(m, t["ShiftConv2d"])):
            return self.conv(name, m, x_info, value)
        if t.get("ShiftConv2d") and isinstance(m, t["ShiftConv2d"]):
            info = self.conv(name, m, x_info, value)
            self.g.records[name].kind = "shiftconv"
            return info
        if type(m) is nn.Linear or (isinstance(m, nn.Linear) and type(m).__name__ != "NonDynamicallyQuantizableLinear"):
            if x_info is None or x_info.dims != (len(n.args[0].meta["_value_shape"]) - 1,):
                raise _Frozen(f"{name}: Linear input without channel ids on its last dim")
            out = Info((value.dim() - 1,), self.g.uf.fresh(m.out_features))
            self.g.records[name] = ModuleRecord(name, "linear", m, {"in": x_info.ids.copy(), "out": out.ids})
            return out
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            if x_info is None or x_info.dims != (1,):
                raise _Frozen(f"{name}: BatchNorm input without channel ids on dim 1")
            self.g.records[name] = ModuleRecord(name, "norm", m, {"channels": x_info.ids})
            return x_info
        if (t.get("ChannelShuffle") and isinstance(m, t["ChannelShuffle"])) or isinstance(m, nn.ChannelShuffle):
            return Info((1,), self.shuffle(self._dim1(name, x_info), m.groups))
        if t.get("ShuffleConcat") and isinstance(m, t["ShuffleConcat"]):
            b_info = self.info(n.args[1])
            ids = np.concatenate([self._dim1(name, x_info), self._dim1(name, b_info)])
            return Info((1,), self.shuffle(ids, m.groups))
        shifts = tuple(t[k] for k in ("Shift2d", "ActiveShift2d", "SparseShift2d") if k in t)
        if shifts and isinstance(m, shifts):
            ids = self._dim1(name, x_info)
            self.g.records[name] = ModuleRecord(name, "shift", m, {"channels": ids})
            return x_info
        if isinstance(m, nn.PReLU) and m.num_parameters > 1:
            ids = self._dim1(name, x_info)
            self.g.records[name] = ModuleRecord(name, "prelu", m, {"channels": ids})
            return x_info
        if isinstance(m, _ELEMENTWISE_MODULES):
            return x_info
        if isinstance(m, _SPATIAL_MODULES):
            return self.spatial(n, value)
        if isinstance(m, nn.Flatten):
            return self.movement_module(n, lambda x: torch.flatten(x, m.start_dim, m.end_dim))
        raise _Frozen(f"module {name!r} ({type(m).__name__}): unknown channel coupling")

    def movement_module(self, n: torch.fx.Node, fn) -> Any:
        a = n.args[0]
        out = _decode(fn(_id_tensor(self.infos.get(a.name), a.meta["_value_shape"])))
        self.check_movement(n, self.tensor_infos(n), out)
        return out

    def _dim1(self, name: str, info: Info | None) -> np.ndarray:
        if info is None or info.dims != (1,):
            raise _Frozen(f"{name}: input without channel ids on dim 1")
        return info.ids

    def conv(self, name: str, m: nn.Conv2d, x_info: Info | None, value: torch.Tensor) -> Info:
        if x_info is None or x_info.dims != (1,):
            raise _Frozen(f"{name}: convolution input without channel ids on dim 1")
        in_ids = x_info.ids
        cin, cout, g = m.in_channels, m.out_channels, m.groups
        out_ids = self.g.uf.fresh(cout)
        shuffle_in = getattr(m, "shuffle_groups", None)
        if shuffle_in:  # GroupedPointwiseConv2d's input shuffle
            in_ids = self.shuffle(in_ids, shuffle_in)
        depthwise = g == cin and g > 1
        if depthwise:  # input c feeds outputs c·M .. c·M+M-1
            mult = cout // cin
            for k in range(mult):
                self.g.uf.union(in_ids, out_ids.reshape(cin, mult)[:, k])
        elif g > 1:
            self.tie_groups(in_ids.reshape(g, cin // g), groups_first=True)
            self.tie_groups(out_ids.reshape(g, cout // g), groups_first=True)
        self.g.records[name] = ModuleRecord(
            name, "conv", m, {"in": in_ids.copy(), "out": out_ids}, {"depthwise": depthwise, "groups": g}
        )
        result = out_ids
        shuffle_out = getattr(m, "out_shuffle_groups", None)
        if shuffle_out:
            result = self.shuffle(out_ids, shuffle_out)
        return Info((1,), result)


class _Frozen(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, tuple | list):
        return any(_has_tensor(v) for v in value)
    return False


def build_graph(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    ignored: set[str] | None = None,
) -> ChannelGraph:
    """Trace ``model`` and return its :class:`ChannelGraph` (module docstring)."""
    types = _convops_types()
    leaf_types = tuple(types.values())
    gm = _trace(model, leaf_types)
    graph = ChannelGraph()
    graph.gm = gm
    inputs = example_inputs if isinstance(example_inputs, tuple | list) else (example_inputs,)
    interp = _Interp(gm, graph, types)
    with torch.no_grad():
        interp.run(*inputs)
    graph.finish(ignored or set())
    return graph

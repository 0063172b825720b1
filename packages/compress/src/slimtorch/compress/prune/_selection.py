"""Shared helpers of the criteria that choose removed classes themselves (the ``select`` hook of
:class:`~slimtorch.compress.prune.pruner.PruneConfig`): class scores per group, lowest-n picks,
group names, and the layer records that produce or read a group's channels."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np

from slimtorch.compress.prune.graph import ChannelGraph, PruneGroup
from slimtorch.compress.prune.pruner import keep_count

PRODUCER_SLOTS = {"conv": "out", "shiftconv": "out", "linear": "out"}


def class_scores(graph: ChannelGraph, scores: Mapping[int, float]) -> dict[int, np.ndarray]:
    """{group index: score of each class} (a class scores the sum over its ids, as the pruner ranks)."""
    default = scores.default_factory() if isinstance(scores, defaultdict) else 0.0
    dense = np.full(len(graph.uf.parent), default, dtype=np.float64)
    if scores:
        keys = np.fromiter(scores.keys(), dtype=np.int64, count=len(scores))
        dense[keys] = np.fromiter(scores.values(), dtype=np.float64, count=len(scores))
    return {g.index: np.array([dense[g.members[r]].sum() for r in g.classes]) for g in graph.groups}


def lowest(group: PruneGroup, s: np.ndarray, n: int) -> set[int]:
    """The ``n`` lowest-scoring classes of ``group`` (stable order on ties)."""
    n = max(0, min(int(n), group.size - 1))  # a group always keeps one class
    return {group.classes[k] for k in np.argsort(s, kind="stable")[:n].tolist()}


def drop_count(group: PruneGroup, ratio: float, round_to: int) -> int:
    """Classes the pruner's ratio rule removes from ``group`` (as ``PruneConfig._drop``)."""
    keep_channels = keep_count(group.size * group.multiplicity, ratio, round_to)
    keep = max(1, -(-keep_channels // group.multiplicity))
    return max(0, group.size - keep)


def group_names(graph: ChannelGraph) -> dict[int, str]:
    """{group index: a readable unique name}: the first layer producing the group's channels
    (``layer``, or ``layer#k`` when one layer's outputs fall into several groups)."""
    names: dict[int, str] = {}
    used: dict[str, int] = {}
    for g in graph.groups:
        outs = [m for m, slot in g.places if slot == "out"]
        base = outs[0] if outs else g.places[0][0] + ":" + g.places[0][1]
        k = used.get(base, 0)
        used[base] = k + 1
        names[g.index] = base if k == 0 else f"{base}#{k}"
    return names


def group_key(group: PruneGroup) -> tuple[tuple[str, str], ...]:
    """A key that names the same group in graphs of the model before and after pruning."""
    return tuple(group.places)


def producer_rows(graph: ChannelGraph, ids: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(layer name, output positions) of every conv/linear row producing one of ``ids``."""
    out = []
    for name, record in graph.records.items():
        slot = PRODUCER_SLOTS.get(record.kind)
        if slot is None:
            continue
        rows = np.nonzero(np.isin(record.slots[slot], ids))[0]
        if rows.size:
            out.append((name, rows))
    return out

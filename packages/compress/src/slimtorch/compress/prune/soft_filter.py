"""Soft filter pruning (He et al. 2018, *Soft Filter Pruning for Accelerating Deep Convolutional
Neural Network Acceleration*, IJCAI).

    sfp = SoftFilterPruner(model, x, PruneConfig(importance="l2", ratio=0.3))
    for epoch in range(epochs):
        train_one_epoch(model)
        sfp.epoch_end()          # zero the lowest-norm filters (they keep training and may recover)
    pruned = sfp.finalize()      # the Pruner removes the zeroed filters physically; sfp.report

After every epoch, in each group of coupled channels (:mod:`.graph`) the classes with the lowest
``importance`` (the Lp norm of their filters, p = 2 in the paper; any name of
:data:`~slimtorch.compress.prune.importance.IMPORTANCES` or a criterion object) are chosen exactly
as :class:`~slimtorch.compress.prune.pruner.PruneConfig` chooses them (``ratio``, per-layer
ratios, ``global_``, ``round_to``), and every conv/linear row producing one of their channels is
set to zero, bias included. Nothing is masked: the zeroed filters still receive gradients, so a
filter that training regrows can outrank another at the next epoch (the paper's point against
hard pruning). :meth:`finalize` zeroes once more and hands that set to the pruner (through the
``select`` hook), so what is removed is exactly what was last zeroed. BatchNorms are left as they
are: a zero filter followed by BN outputs the constant β − γ·μ/σ, which the physical removal
drops (fine-tune after, as the paper does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtorch.compress.prune._selection import producer_rows
from slimtorch.compress.prune.graph import ChannelGraph, build_graph
from slimtorch.compress.prune.importance import channel_scores
from slimtorch.compress.prune.pruner import (
    PruneConfig,
    Pruner,
    _ignored_names,
    check_model,
    excluded_layers,
    resolve_config,
)
from slimtorch.core.conversions import ConversionReport, FilterFn

__all__ = ["SoftFilterPruner"]


class _Zeroed:
    """Criterion for :meth:`SoftFilterPruner.finalize`: removes the classes whose producer rows
    were zeroed (found by layer and row in the graph the pruner builds)."""

    def __init__(self, rows: dict[str, np.ndarray]) -> None:
        self.rows = rows

    def __call__(self, graph: ChannelGraph, model: nn.Module) -> dict[int, float]:
        return {}

    def select(self, graph: ChannelGraph, scores: Any, config: PruneConfig) -> set[int]:
        root_of = {int(i): r for g in graph.groups for r in g.classes for i in g.members[r].tolist()}
        removed = set()
        for name, rows in self.rows.items():
            record = graph.records[name]
            for i in record.slots["out"][rows].tolist():
                if i in root_of:
                    removed.add(root_of[i])
        return removed


class SoftFilterPruner:
    """Training-time helper (module docstring). Arguments as :class:`Pruner`'s: a
    :class:`PruneConfig` (default importance "l2") or its options as keywords, ``filter_fn``,
    ``ignored_layers``."""

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        config: PruneConfig | None = None,
        filter_fn: FilterFn | None = None,
        *,
        ignored_layers: Iterable[nn.Module | str] | None = None,
        **options: Any,
    ) -> None:
        check_model(model)
        self.config = resolve_config("SoftFilterPruner", config, options, importance="l2")
        self.model = model
        self.example_inputs = example_inputs
        self.filter_fn = filter_fn
        self.ignored_layers = _ignored_names(model, ignored_layers)
        self.graph = build_graph(model, example_inputs, set(excluded_layers(model, ignored_layers, filter_fn)))
        self.zeroed: dict[str, np.ndarray] = {}  # layer -> output rows zeroed at the last epoch_end
        self.epochs = 0
        self.report: ConversionReport | None = None

    def epoch_end(self) -> dict[str, int]:
        """Zero the lowest-importance filters now; returns {layer: rows zeroed}."""
        scores = channel_scores(self.graph, self.model, self.config.importance, self.config.seed)
        roots = self.config._select(self.graph, scores)
        rows = producer_rows(self.graph, self.graph.removed_ids(roots))
        with torch.no_grad():
            for name, r in rows:
                module = self.model.get_submodule(name)
                idx = torch.as_tensor(r, dtype=torch.long, device=module.weight.device)
                module.weight.index_fill_(0, idx, 0.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.index_fill_(0, idx, 0.0)
        self.zeroed = dict(rows)
        self.epochs += 1
        return {name: len(r) for name, r in rows}

    def finalize(self) -> nn.Module:
        """Zero once more, then remove the zeroed filters physically; returns the pruned model."""
        self.epoch_end()
        config = dataclasses.replace(self.config, importance=_Zeroed(self.zeroed))
        pruner = Pruner(self.model, self.example_inputs, config, self.filter_fn, ignored_layers=self.ignored_layers)
        self.model = pruner.step()
        self.report = pruner.report
        return self.model

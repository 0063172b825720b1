"""slimtorch.compress.prune: unstructured masks and structured (channel) pruning.

- :func:`prune_unstructured_` / :func:`finalize_` / :func:`masks_of`: weight masks that stay applied
  through training (:mod:`.unstructured`).
- :class:`Pruner` / :func:`prune_channels_` / :class:`PruneConfig`: channels removed physically along
  the dependency graph (:mod:`.graph`) by a criterion (:mod:`.importance`).
"""

from slimtorch.compress.prune.graph import ChannelGraph, UntraceableModelError, build_graph
from slimtorch.compress.prune.importance import APoZ, Taylor, bn_l1_penalty, channel_scores
from slimtorch.compress.prune.pruner import PruneConfig, Pruner, keep_count, prune_channels_
from slimtorch.compress.prune.unstructured import (
    MaskParametrization,
    UnstructuredConfig,
    finalize_,
    masked_modules,
    masks_of,
    prune_unstructured_,
    set_masks_,
)

__all__ = [
    "APoZ",
    "ChannelGraph",
    "MaskParametrization",
    "PruneConfig",
    "Pruner",
    "Taylor",
    "UnstructuredConfig",
    "UntraceableModelError",
    "bn_l1_penalty",
    "build_graph",
    "channel_scores",
    "finalize_",
    "keep_count",
    "masked_modules",
    "masks_of",
    "prune_channels_",
    "prune_unstructured_",
    "set_masks_",
]

"""slimtorch.compress.prune: unstructured masks and structured (channel) pruning.

- :func:`prune_unstructured_` / :func:`finalize_` / :func:`masks_of`: weight masks that stay applied
  through training (:mod:`.unstructured`).
- :func:`prune_iteratively_` / :class:`GradualPruner` (gradual cubic schedule, lottery-ticket
  rewinding), :func:`surgery_` (Dynamic Network Surgery), :func:`snip_prune_` / :func:`obd_prune_` /
  :func:`obs_prune_` (saliencies), :func:`prune_semi_structured_` / :func:`export_sparse_` /
  :func:`save_pruned` (2:4 and block masks, export to slimtorch.sparse and the compressed file).
- :class:`Pruner` / :func:`prune_channels_` / :class:`PruneConfig`: channels removed physically along
  the dependency graph (:mod:`.graph`) by a criterion (:mod:`.importance`).
"""

from slimtorch.compress.prune.export import (
    SemiStructuredConfig,
    SparseExportConfig,
    export_sparse_,
    prune_semi_structured_,
    save_pruned,
)
from slimtorch.compress.prune.graph import ChannelGraph, UntraceableModelError, build_graph
from slimtorch.compress.prune.group_lasso import GroupLasso, GroupNormThreshold
from slimtorch.compress.prune.importance import APoZ, Taylor, bn_l1_penalty, channel_scores
from slimtorch.compress.prune.pruner import PruneConfig, Pruner, keep_count, prune_channels_
from slimtorch.compress.prune.reconstruction import Lasso, ThiNet
from slimtorch.compress.prune.saliency import (
    OBDConfig,
    OBSConfig,
    SNIPConfig,
    obd_prune_,
    obd_scores,
    obs_prune_,
    obs_prune_blocked,
    obs_prune_rows,
    obs_saliency,
    snip_prune_,
    snip_scores,
)
from slimtorch.compress.prune.schedule import GradualPruner, IterativeConfig, PruneSchedule, prune_iteratively_
from slimtorch.compress.prune.sensitivity import (
    SensitivityReport,
    netadapt,
    ratios_for_budget,
    sensitivity,
)
from slimtorch.compress.prune.soft_filter import SoftFilterPruner
from slimtorch.compress.prune.surgery import SurgeryConfig, SurgeryMask, surgery_, update_masks_
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
    "GradualPruner",
    "GroupLasso",
    "GroupNormThreshold",
    "IterativeConfig",
    "Lasso",
    "MaskParametrization",
    "OBDConfig",
    "OBSConfig",
    "PruneConfig",
    "PruneSchedule",
    "Pruner",
    "SNIPConfig",
    "SemiStructuredConfig",
    "SensitivityReport",
    "SoftFilterPruner",
    "SparseExportConfig",
    "SurgeryConfig",
    "SurgeryMask",
    "Taylor",
    "ThiNet",
    "UnstructuredConfig",
    "UntraceableModelError",
    "bn_l1_penalty",
    "build_graph",
    "channel_scores",
    "export_sparse_",
    "finalize_",
    "keep_count",
    "masked_modules",
    "masks_of",
    "netadapt",
    "obd_prune_",
    "obd_scores",
    "obs_prune_",
    "obs_prune_blocked",
    "obs_prune_rows",
    "obs_saliency",
    "prune_channels_",
    "prune_iteratively_",
    "prune_semi_structured_",
    "prune_unstructured_",
    "ratios_for_budget",
    "save_pruned",
    "sensitivity",
    "set_masks_",
    "snip_prune_",
    "snip_scores",
    "surgery_",
    "update_masks_",
]

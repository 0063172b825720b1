"""slimtorch.compress.prune: unstructured masks and structured (channel) pruning.

- :func:`prune_unstructured_` / :func:`finalize_` / :func:`masks_of`: weight masks that stay applied
  through training (:mod:`.unstructured`).
"""

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
    "MaskParametrization",
    "UnstructuredConfig",
    "finalize_",
    "masked_modules",
    "masks_of",
    "prune_unstructured_",
    "set_masks_",
]

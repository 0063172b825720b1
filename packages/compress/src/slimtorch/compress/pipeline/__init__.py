"""slimtorch.compress.pipeline: declarative recipes (TOML) and Deep Compression.

- :mod:`.recipe`: ``load_recipe`` / ``parse_recipe`` / ``run_recipe`` (prune, share, quantize,
  convert, distill, finetune steps in any order, each through core's conversion walk).
- :mod:`.sharing`: k-means weight sharing with centroid retraining, exact codebook conversion.
- :mod:`.deep_compression`: prune -> retrain -> share -> retrain centroids -> entropy-coded file.
"""

from slimtorch.compress.pipeline.recipe import (
    Recipe,
    RecipeError,
    RunResult,
    Step,
    load_recipe,
    parse_recipe,
    run_recipe,
)
from slimtorch.compress.pipeline.sharing import (
    ExactCodebookConfig,
    WeightSharingConfig,
    share_weights_,
    to_codebook_,
)

__all__ = [
    "ExactCodebookConfig",
    "Recipe",
    "RecipeError",
    "RunResult",
    "Step",
    "WeightSharingConfig",
    "load_recipe",
    "parse_recipe",
    "run_recipe",
    "share_weights_",
    "to_codebook_",
]

"""Deep Compression (Han, Mao, Dally, ICLR 2016): prune -> retrain -> k-means weight sharing ->
retrain the centroids -> entropy-coded file.

    result = deep_compression(model, task, DeepCompressionConfig(sparsity=0.95))
    result.model            # CodebookLinear layers (indices + codebook), runs through the codebook GEMM
    result.file_bytes       # {"huffman": ..., "ans": ..., "zstd": ..., "raw": ...} of the compressed file
    result.report           # the conversions' reports, added up

The pruning is iterative global magnitude pruning with retraining (the masks stay applied while
retraining); the sharing keeps pruned weights an exact zero (codebook entry 0), so the file's
index streams are dominated by one symbol and the entropy coder (Huffman as in the paper; ANS
closer to the entropy) does the rest. Biases stay float32.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

from torch import nn

from slimtorch.compress.pipeline.recipe import Recipe, Step, parse_recipe, run_recipe
from slimtorch.core import container
from slimtorch.core.conversions import ConversionReport


@dataclass(frozen=True)
class DeepCompressionConfig:
    sparsity: float = 0.92
    prune_iterations: int = 3
    prune_epochs: int = 4
    prune_lr: float = 1e-3
    linear_bits: int = 5
    conv_bits: int = 7
    share_epochs: int = 3
    share_lr: float = 1e-4
    seed: int = 0

    def recipe(self) -> Recipe:
        prune = {
            "method": "magnitude",
            "sparsity": self.sparsity,
            "scope": "global",
            "iterations": self.prune_iterations,
            "retrain_epochs": self.prune_epochs,
            "lr": self.prune_lr,
        }
        share = {
            "linear_bits": self.linear_bits,
            "conv_bits": self.conv_bits,
            "retrain_epochs": self.share_epochs,
            "lr": self.share_lr,
        }
        return parse_recipe(
            {
                "name": "deep-compression",
                "coder": "huffman",
                "seed": self.seed,
                "step": [{"prune": prune}, {"share": share}],
            }
        )


@dataclass
class DeepCompressionResult:
    model: nn.Module
    report: ConversionReport
    file_bytes: dict[str, int]
    steps: list[dict[str, Any]]


def deep_compression(
    model: nn.Module, task, config: DeepCompressionConfig | None = None, *, progress: bool = True
) -> DeepCompressionResult:
    """Run the pipeline on a trained ``model`` (modified in place) with ``task``'s training data."""
    config = config or DeepCompressionConfig()
    result = run_recipe(config.recipe(), model, task, progress=progress)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = container.file_bytes_by_coder(result.model, tmp)
    return DeepCompressionResult(result.model, result.report, sizes, result.steps)


__all__ = ["DeepCompressionConfig", "DeepCompressionResult", "Step", "deep_compression"]

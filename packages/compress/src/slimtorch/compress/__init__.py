"""slimtorch-compress: compression pipelines and the `slimtorch` command.

Submodules: ``tasks`` (the embedded digits task, LeNets, train/evaluate), ``distill``
(knowledge distillation), ``pipeline`` (recipes, Deep Compression), ``demo`` (the main job),
``cli``. The compressed file and its entropy coding are core's (``slimtorch.core.container``,
``slimtorch.core.entropy``): every package saves through them.
Imported lazily so ``import slimtorch.compress.tasks`` stays light.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {"DemoRow": "slimtorch.compress.demo", "run_demo": "slimtorch.compress.demo"}

__all__ = ["DemoRow", "run_demo"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'slimtorch.compress' has no attribute {name!r}")

"""slimtorch-compress: compression pipelines and the `slimtorch` command."""

from slimtorch.compress.demo import DemoRow, run_demo

__version__ = "0.1.0"

__all__ = ["DemoRow", "run_demo"]

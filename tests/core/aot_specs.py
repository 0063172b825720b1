"""AOT specs for the core test kernels (see slimtorch.core.aot): the Triton kernels defined in
tests/core/test_library.py and tests/core/test_activations.py, compiled for a real arch."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_activations import _activation_kernel
from test_library import _scale_add_kernel

from slimtorch.core.activations import ACTIVATIONS
from slimtorch.core.aot import KernelSpec


def aot_specs(quick: bool):
    for dtype in ("fp16", "fp32") if quick else ("fp16", "bf16", "fp32"):
        yield KernelSpec(
            f"scale_add {dtype}",
            _scale_add_kernel,
            {"x_ptr": f"*{dtype}", "y_ptr": f"*{dtype}", "out_ptr": f"*{dtype}"},
            {"BLOCK": 64},
            scalars={"alpha": "fp32"},
            aligned=("x_ptr", "y_ptr", "out_ptr", "n") if dtype == "fp16" else (),
        )
    for activation in ACTIVATIONS:
        yield KernelSpec(
            f"activation {activation}",
            _activation_kernel,
            {"x_ptr": "*fp32", "out_ptr": "*fp32"},
            {"ACTIVATION": activation, "BLOCK": 128},
        )

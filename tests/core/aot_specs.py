"""AOT specs for core's own Triton kernels (the split-K reduction of slimtorch.core.gemm) and the
test kernels of tests/core/test_library.py and test_activations.py (see slimtorch.core.aot)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_activations import _activation_kernel
from test_library import _scale_add_kernel

from slimtorch.core import gemm
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
    for dtype in ("fp16", "bf16", "fp32"):
        yield KernelSpec(
            f"splitk reduce {dtype}",
            gemm._splitk_reduce_kernel,
            {"partial_ptr": "*fp32", "bias_ptr": f"*{dtype}", "out_ptr": f"*{dtype}"},
            {
                "HAS_BIAS": True,
                "ACTIVATION": "hardswish",
                "BLOCK_M": gemm.REDUCE_BLOCK_M,
                "BLOCK_N": gemm.REDUCE_BLOCK_N,
            },
        )

"""AOT specs for core's own Triton pieces (slimtorch.core.gemm's single-launch split-K epilogue,
through the test GEMM of tests/core/test_gemm.py) and the test kernels of tests/core/test_library.py
and test_activations.py (see slimtorch.core.aot)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_activations import _activation_kernel
from test_gemm import BLOCK, _splitk_mm_kernel
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
    for dtype in ("fp16", "bf16", "fp32"):
        p = f"*{dtype}"
        yield KernelSpec(
            f"split-K mm {dtype}",
            _splitk_mm_kernel,
            dict(x_ptr=p, w_ptr=p, scale_ptr="*fp32", bias_ptr=p, out_ptr=p, partial_ptr="*fp32", counter_ptr="*i32"),
            dict(
                SPLIT=True,
                HAS_SCALE=True,
                HAS_BIAS=True,
                ACTIVATION="hardswish",
                UPCAST=False,
                BLOCK_M=BLOCK,
                BLOCK_N=4 * BLOCK,
                BLOCK_K=2 * BLOCK,
                GROUP_M=8,
            ),
        )

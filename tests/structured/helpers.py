"""Shared by the structured tests: bounds, launchers called directly (so the Triton kernel runs:
natively on a GPU, in the interpreter on CPU), explicit-matrix oracles."""

import torch

from slimtorch.core.testing import REL_BOUND, randn

# ‖out − ref‖/‖ref‖ against a float64 oracle. fp32: IEEE fp32 dots (the interpreter; the FFT
# kernel on GPUs) land near 1e-7, so 2e-5 fails if any intermediate is rounded to fp16 (~3e-4);
# GEMM kernels on GPUs use tf32 for fp32 inputs (core's REL_BOUND). 16-bit: core's bounds.
BOUND = {torch.float32: 2e-5, torch.float16: REL_BOUND[torch.float16], torch.bfloat16: REL_BOUND[torch.bfloat16]}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def bound(dtype: torch.dtype, device: str, tf32: bool = False) -> float:
    """The bound for a kernel's output in ``dtype`` (``tf32``: the kernel's fp32 dots use tf32 on GPUs)."""
    if dtype == torch.float32 and tf32 and device == "cuda":
        return REL_BOUND[torch.float32]
    return BOUND[dtype]


def inputs(shape, dtype, device, seed):
    return randn(shape, dtype=dtype, device=device, seed=seed)

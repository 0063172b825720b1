"""Shared by the structured tests: bounds, launchers called directly (so the Triton kernel runs:
natively on a GPU, in the interpreter on CPU), explicit-matrix oracles."""

import torch

from slimtorch.core.testing import randn, rel_bound

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def bound(dtype: torch.dtype, device: str, tf32: bool = False, *, k: int) -> float:
    """‖out − ref‖/‖ref‖ against a float64 oracle for a kernel whose longest reduction sums ``k``
    terms: core's rel_bound(dtype, k), tight enough that an fp16-rounded intermediate fails an fp32
    test. ``tf32``: the kernel's fp32 dots use tf32 on GPUs (the GEMM kernels; the FFT kernel and
    the FWHT stay IEEE fp32). The FFT paths reduce over K twice (forward and inverse DFT): pass 4·K."""
    return rel_bound(dtype, k, device=device if tf32 else "cpu")


def inputs(shape, dtype, device, seed):
    return randn(shape, dtype=dtype, device=device, seed=seed)

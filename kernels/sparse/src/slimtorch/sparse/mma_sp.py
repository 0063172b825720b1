"""2:4 sparse weight × dense activations on sparse tensor cores: CUDA C with ``mma.sp`` (sm_80+).

``y = act(x @ W.T + bias)`` like :func:`slimtorch.sparse.sparse24.sparse24_mm`, for the
compute-bound regime (large M) where only the sparse tensor cores' 2x MMA rate can beat dense
cuBLAS; Triton cannot issue ``mma.sp``. The kernel (``cuda/sparse24_mma_sp.cu``) computes
``out^T = W · x^T`` with ``mma.sp.sync.aligned.m16n8k32.row.col.f32.{f16,bf16}``: W is the sparse
A operand (16 output features × 32 K), x^T the dense B operand (32 K × 8 rows of x), fp32
accumulation, bias in the kernel; the activation, if any, is NOT fused: it runs afterwards in
torch (one definition of the activations). The metadata must be in the mma register layout
(:func:`slimtorch.sparse.formats.to_mma_sp_metadata`, shape (ceil(N/16), K/32, 16) int32).

Its index arithmetic (the word every lane loads into every operand register, where every
accumulator is stored) lives in plain ``S24_HD`` C++ functions of the .cu, which
tests/sparse/mma_sp_index_harness.cpp compiles with g++ and tests/sparse/test_mma_sp.py checks
lane by lane against the PTX fragment layouts (a wrong lane planted in a copy of the .cu fails).

NOT VERIFIED ON A GPU YET: it compiles for sm_80/sm_90 in CI but has never run. It is opt-in
(``SparseLinear24(..., backend="cuda")`` or ``SLIMTORCH_BACKEND=cuda``) and its
correctness test is marked ``gpu``. fp16/bf16 only, K a multiple of 32.
"""

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import triton

from slimtorch.core.activations import activation_reference
from slimtorch.core.checks import check_divisible, check_same_device, check_tensor
from slimtorch.core.dispatch import empty_output
from slimtorch.core.library import kernel_op
from slimtorch.sparse.formats import MMA_K, MMA_TILE_ROWS, from_mma_sp_metadata
from slimtorch.sparse.sparse24 import check_sparse24_operands, linear24_backward, sparse24_mm_reference

CUDA_SOURCE = Path(__file__).parent / "cuda" / "sparse24_mma_sp.cu"
# Must match WARPS_PER_BLOCK and WARP_M in the .cu source.
WARPS_PER_BLOCK = 4
WARP_M = 32
MMA_SP_DTYPES = (torch.float16, torch.bfloat16)


def _check_sparse24_mm_sp(
    x: torch.Tensor,
    values: torch.Tensor,
    meta_mma: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
) -> None:
    _, n, k = check_sparse24_operands(x, values, bias, activation, dtypes=MMA_SP_DTYPES)
    check_divisible(k, MMA_K, "x.shape[1] (K) for the mma.sp kernel")
    check_tensor(meta_mma, "meta_mma", shape=(math.ceil(n / MMA_TILE_ROWS), k // MMA_K, 16), dtype=torch.int32)
    check_same_device(x=x, meta_mma=meta_mma)


@kernel_op(
    "slimtorch::sparse24_mm_sp",
    reference="sparse24_mm_sp_reference",
    check=_check_sparse24_mm_sp,
    backend="cuda",
)
def sparse24_mm_sp(
    x: torch.Tensor,
    values: torch.Tensor,
    meta_mma: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
) -> torch.Tensor:
    """``act(x @ W.T + bias)`` on sparse tensor cores; x (M, K) fp16/bf16 -> (M, N)."""
    from slimtorch.core.cuda import load_module

    # The kernel reads x and values as 32-bit words from contiguous rows; the bases are made
    # 16-byte aligned (a copy otherwise) so every row of a K % 32 == 0 matrix is 4-byte aligned.
    x, values, meta_mma = (_aligned(t.contiguous()) for t in (x, values, meta_mma))
    m, k = x.shape
    n = values.shape[0]
    out = empty_output((m, n), dtype=x.dtype, device=x.device)
    if m == 0 or n == 0:
        return out
    name = "sparse24_mma_sp_bf16" if x.dtype == torch.bfloat16 else "sparse24_mma_sp_f16"
    kernel = load_module(CUDA_SOURCE).kernel(name)
    grid = (triton.cdiv(m, WARP_M), triton.cdiv(n, MMA_TILE_ROWS * WARPS_PER_BLOCK))
    bias_arg = bias.contiguous() if bias is not None else np.uint64(0)  # null pointer: no bias
    kernel(grid, (32 * WARPS_PER_BLOCK,), (x, values, meta_mma, bias_arg, out, m, n, k))
    if activation != "none":
        out = activation_reference(out.float(), activation).to(x.dtype)
    return out


def _aligned(t: torch.Tensor) -> torch.Tensor:
    return t if t.data_ptr() % 16 == 0 else t.clone()


def _setup_context(ctx, inputs, output) -> None:
    x, values, meta_mma, bias, activation = inputs
    ctx.save_for_backward(x, values, meta_mma, bias)
    ctx.activation = activation


def _backward(ctx, grad_out):
    x, values, meta_mma, bias = ctx.saved_tensors
    meta = from_mma_sp_metadata(meta_mma, values.shape[0])
    pre_activation = lambda: sparse24_mm_sp(x, values, meta_mma, bias, "none")
    grad_x, grad_values, grad_bias = linear24_backward(ctx, grad_out, x, values, meta, bias, pre_activation)
    return grad_x, grad_values, None, grad_bias, None


sparse24_mm_sp.register_autograd(_backward, setup_context=_setup_context)


def sparse24_mm_sp_reference(
    x: torch.Tensor,
    values: torch.Tensor,
    meta_mma: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
) -> torch.Tensor:
    """The 2:4 reference after undoing the mma metadata layout."""
    meta = from_mma_sp_metadata(meta_mma, values.shape[0])
    return sparse24_mm_reference(x, values, meta, bias, activation)

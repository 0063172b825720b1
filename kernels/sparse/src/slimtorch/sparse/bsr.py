"""Block-sparse (BSR) weight × dense activations, Triton: ``y = act(x @ W.T + bias)``.

W (N, K) is stored as square ``bs × bs`` blocks (bs = 16, 32 or 64) in block-sparse-row form (see
:mod:`slimtorch.sparse.formats`): ``crow_indices`` (N/bs + 1,) int32, ``col_indices`` (nnz,) int32
and ``values`` (nnz, bs, bs). Block row r of the output,

    y[m, bs·r : bs·r + bs] = Σ_{e = crow[r]}^{crow[r+1]-1} x[m, bs·c_e : bs·c_e + bs] @ values[e].T,

is one program per (M tile, block row): it walks the row's stored blocks and feeds each
(BLOCK_M, bs) x tile and (bs, bs) weight block to ``tl.dot`` (fp32 accumulation), then adds bias,
applies the activation and stores. Work and weight bytes scale with the block density; blocks of
16+ keep every dot on tensor cores. Rows with no stored block still write ``act(bias)``.

The indices are trusted here (a custom op cannot read data in its checks); layers validate them
when they are built or loaded (:func:`check_bsr_structure`).

Reference: Gray, Radford & Kingma, "GPU Kernels for Block-Sparse Weights" (OpenAI, 2017).
"""

from typing import Optional

import torch
import triton
import triton.language as tl

from slimtorch.core.activations import ACTIVATIONS
from slimtorch.core.checks import (
    KERNEL_DTYPES,
    check_choice,
    check_divisible,
    check_same_device,
    check_tensor,
    is_fake,
)
from slimtorch.core.dispatch import empty_output
from slimtorch.core.gemm import grouped_tile, m_bucket, store_output
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import linear_reference
from slimtorch.core.triton_compat import dot_acc, upcast_dot_operands
from slimtorch.core.tuning import autotune_configs
from slimtorch.sparse._linear import linear_grads
from slimtorch.sparse.formats import BLOCK_SIZES, bsr_blocks_of, check_bsr_structure, from_bsr

SUPPORTED_DTYPES = KERNEL_DTYPES


def _config(block_m: int, warps: int, stages: int) -> triton.Config:
    return triton.Config({"BLOCK_M": block_m, "GROUP_M": 8}, num_warps=warps, num_stages=stages)


BSR_CONFIGS = autotune_configs(
    [
        _config(32, 4, 2),
        _config(16, 4, 3),
        _config(64, 4, 3),
        _config(128, 4, 3),
        _config(128, 8, 3),
        _config(256, 8, 3),
    ]
)


@triton.autotune(configs=BSR_CONFIGS, key=["M_BUCKET", "N", "K", "BLOCK_SIZE"])
@triton.jit
def _bsr_mm_kernel(
    x_ptr,
    crow_ptr,
    col_ptr,
    values_ptr,
    bias_ptr,
    out_ptr,
    M,
    N,
    K,
    M_BUCKET,  # core.gemm.m_bucket(M): the autotune key
    stride_xm,
    stride_om,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, block_row = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), N // BLOCK_SIZE, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_b = tl.arange(0, BLOCK_SIZE)
    m_mask = offs_m < M
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    # values[e] is a (bs, bs) block [row within block, column within block], row-major.
    block_offsets = offs_b[:, None] * BLOCK_SIZE + offs_b[None, :]
    start = tl.load(crow_ptr + block_row)
    end = tl.load(crow_ptr + block_row + 1)
    w_ptrs = values_ptr + start.to(tl.int64) * (BLOCK_SIZE * BLOCK_SIZE) + block_offsets
    acc = tl.zeros((BLOCK_M, BLOCK_SIZE), dtype=tl.float32)
    for e in range(start, end):
        block_col = tl.load(col_ptr + e)
        x = tl.load(x_rows + (block_col * BLOCK_SIZE + offs_b)[None, :], mask=m_mask[:, None], other=0.0)
        w = tl.load(w_ptrs)
        acc = dot_acc(x, tl.trans(w), acc, UPCAST)
        w_ptrs += BLOCK_SIZE * BLOCK_SIZE
    offs_n = block_row * BLOCK_SIZE + offs_b
    store_output(acc, offs_m, offs_n, M, N, bias_ptr, bias_ptr, out_ptr, stride_om, False, HAS_BIAS, ACTIVATION)


def _check_bsr_mm(
    x: torch.Tensor,
    crow_indices: torch.Tensor,
    col_indices: torch.Tensor,
    values: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
) -> None:
    check_tensor(x, "x", ndim=2, dtype=SUPPORTED_DTYPES)
    check_tensor(values, "values", ndim=3, dtype=x.dtype)
    block_size = values.shape[-1]
    if block_size not in BLOCK_SIZES or values.shape[1] != block_size:
        raise ValueError(f"values: expected shape (nnz, bs, bs) with bs in {BLOCK_SIZES}, got {tuple(values.shape)}")
    check_divisible(x.shape[1], block_size, f"x.shape[1] (K) for block size {block_size}")
    check_tensor(crow_indices, "crow_indices", ndim=1, dtype=torch.int32)
    check_tensor(col_indices, "col_indices", shape=(values.shape[0],), dtype=torch.int32)
    if crow_indices.shape[0] < 2:
        raise ValueError(f"crow_indices: expected shape (N/bs + 1,) with N >= bs, got {tuple(crow_indices.shape)}")
    n = (crow_indices.shape[0] - 1) * block_size
    if bias is not None:
        check_tensor(bias, "bias", shape=(n,), dtype=x.dtype)
    check_choice(activation, "activation", ACTIVATIONS)
    check_same_device(x=x, crow_indices=crow_indices, col_indices=col_indices, values=values, bias=bias)
    if not is_fake(crow_indices):  # the kernel trusts the indices: check them once per call (one host copy)
        check_bsr_structure(crow_indices, col_indices, crow_indices.shape[0] - 1, x.shape[1] // block_size)


@kernel_op("slimtorch::bsr_mm", reference="bsr_mm_reference", check=_check_bsr_mm, row_input="x")
def bsr_mm(
    x: torch.Tensor,
    crow_indices: torch.Tensor,
    col_indices: torch.Tensor,
    values: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
) -> torch.Tensor:
    """``act(x @ W.T + bias)`` for a BSR weight W; x (M, K) -> (M, N), N = (len(crow) - 1) · bs."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    crow_indices, col_indices, values = crow_indices.contiguous(), col_indices.contiguous(), values.contiguous()
    m, k = x.shape
    block_size = values.shape[-1]
    n = (crow_indices.shape[0] - 1) * block_size
    out = empty_output((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * (n // block_size),)
    _bsr_mm_kernel[grid](
        x,
        crow_indices,
        col_indices,
        values,
        bias if bias is not None else out,
        out,
        m,
        n,
        k,
        m_bucket(m),
        x.stride(0),
        out.stride(0),
        HAS_BIAS=bias is not None,
        ACTIVATION=activation,
        BLOCK_SIZE=block_size,
        UPCAST=upcast_dot_operands(x.dtype),
    )
    return out


def _setup_context(ctx, inputs, output) -> None:
    x, crow_indices, col_indices, values, bias, activation = inputs
    ctx.save_for_backward(x, crow_indices, col_indices, values, bias)
    ctx.activation = activation


def _backward(ctx, grad_out):
    """grad_x = g @ W, grad_values = the stored blocks of g.T @ x, grad_bias = Σ_m g (W dense)."""
    x, crow_indices, col_indices, values, bias = ctx.saved_tensors
    n, k = grad_out.shape[1], x.shape[1]
    dense = from_bsr(crow_indices, col_indices, values, n, k)
    pre_activation = lambda: bsr_mm(x, crow_indices, col_indices, values, bias, "none")
    grad_x, grad_w, grad_bias = linear_grads(
        ctx, grad_out, x, dense, ctx.activation, pre_activation, weight_index=3, bias_index=4
    )
    grad_values = None
    if grad_w is not None:
        grad_values = bsr_blocks_of(grad_w, crow_indices, col_indices, values.shape[-1]).to(values.dtype)
    return grad_x, None, None, grad_values, grad_bias, None


bsr_mm.register_autograd(_backward, setup_context=_setup_context)


def bsr_mm_reference(
    x: torch.Tensor,
    crow_indices: torch.Tensor,
    col_indices: torch.Tensor,
    values: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: str = "none",
) -> torch.Tensor:
    """Pure torch: densify W, ``act(x @ W.T + bias)`` accumulated in fp32 (fp64 for fp64 x)."""
    n = (crow_indices.shape[0] - 1) * values.shape[-1]
    return linear_reference(x, from_bsr(crow_indices, col_indices, values, n, x.shape[1]), bias, activation)

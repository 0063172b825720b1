"""Triton pieces shared by the GEMM-shaped kernels of every family: tile order, epilogues,
split-K reduction.

:func:`grouped_tile` maps a 1-D program id to an (M tile, N tile) pair, GROUP_M row tiles at a
time, so that programs running together share weight tiles in L2.

A kernel's fp32 accumulator tile ``acc`` (BLOCK_M, BLOCK_N) for rows ``offs_m`` of x and output
features ``offs_n`` ends in one of two ways:

- :func:`store_output`: ``out[m, n] = act(acc[m, n] + bias[n])`` cast to out's dtype (masked);
- :func:`store_partial`: with split-K, split ``s`` writes ``partial[s, m, n] = acc[m, n]`` (fp32,
  contiguous (splits, M, N)); :func:`splitk_reduce` then sums the splits in order (deterministic)
  and applies the same :func:`store_output`.
"""

import torch
import triton
import triton.language as tl

from slimtorch.core.activations import apply_activation

REDUCE_BLOCK_M = 16
REDUCE_BLOCK_N = 128


@triton.jit
def grouped_tile(pid, tiles_m, tiles_n, GROUP_M: tl.constexpr):
    """Program id -> (pid_m, pid_n), walking GROUP_M row tiles down each column of tiles."""
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_size = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_size
    pid_n = (pid % per_group) // group_size
    return pid_m, pid_n


@triton.jit
def store_output(
    acc, offs_m, offs_n, M, N, bias_ptr, out_ptr, stride_om, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr
):
    """out[offs_m, offs_n] = activation(acc + bias), in out's dtype; rows >= M / cols >= N masked."""
    n_mask = offs_n < N
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        acc = acc + bias[None, :]
    acc = apply_activation(acc, ACTIVATION)
    ptrs = out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :]
    tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & n_mask[None, :])


@triton.jit
def store_partial(acc, offs_m, offs_n, M, N, partial_ptr, split):
    """partial[split, offs_m, offs_n] = acc (fp32, contiguous (splits, M, N))."""
    base = partial_ptr + split.to(tl.int64) * M * N
    ptrs = base + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    tl.store(ptrs, acc, mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def _splitk_reduce_kernel(
    partial_ptr,
    bias_ptr,
    out_ptr,
    M,
    N,
    splits,
    stride_om,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    ptrs = partial_ptr + offs_m.to(tl.int64)[:, None] * N + offs_n[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for s in range(0, splits):
        acc += tl.load(ptrs + s * M * N, mask=mask, other=0.0)
    store_output(acc, offs_m, offs_n, M, N, bias_ptr, out_ptr, stride_om, HAS_BIAS, ACTIVATION)


def splitk_reduce(partial: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor, activation: str) -> None:
    """out = activation(Σ_s partial[s] + bias): the second pass of every split-K launch."""
    splits, m, n = partial.shape
    grid = (triton.cdiv(m, REDUCE_BLOCK_M), triton.cdiv(n, REDUCE_BLOCK_N))
    _splitk_reduce_kernel[grid](
        partial,
        bias if bias is not None else partial,
        out,
        m,
        n,
        splits,
        out.stride(0),
        HAS_BIAS=bias is not None,
        ACTIVATION=activation,
        BLOCK_M=REDUCE_BLOCK_M,
        BLOCK_N=REDUCE_BLOCK_N,
    )

"""HashedNets matmul ``y = x · Vᵀ (+ bias)`` with a virtual weight V that is never stored.

Chen et al. 2015, "Compressing neural networks with the hashing trick": the (N, K) weight is

    V[n, k] = ξ(n, k) · w[h(n, k)],      h: [N]×[K] → [P] (bucket),  ξ → {−1, +1} (sign hash)

for a small parameter vector ``w`` (P,), P ≪ N·K. One 32-bit mix of the flat index t = n·K + k
and the seed gives both: u = mix(t, seed), bucket = (u mod 2^31) mod P, sign = 1 − 2·(u >> 31).
The mix (:func:`_mix` / :func:`hash_mix`) is a murmur-style multiply-xorshift on int64 values
below 2^32 with multipliers below 2^31, so no product overflows and the kernel and the torch
reference agree bit for bit.

Kernel: a GEMM on core's tile order and epilogue; each (BLOCK_K × BLOCK_N) tile of Vᵀ is hashed
and gathered from ``w`` in registers (w is small: L1/L2 resident), cast to the activation dtype
and fed to ``tl.dot``; the full matrix never exists in memory. ``transposed=True`` computes
x · V instead (V[r, o] read as the tile's transpose: the backward's grad_x) with the same hash.
Backward: grad_x by the kernel (transposed), grad_w = scatter-add of ξ · (gᵀ·x) into the buckets
(materialises the (N, K) gradient: training is not a fast path), grad_bias = Σ_m g.

Dispatch by measurement (:mod:`slimtorch.core.measured`): on CUDA tensors :func:`hashed_mm` runs, per
shape bucket (M bucketed, N, K, dtype, P, transposed), this kernel or torch's path (V materialised in
x's dtype by the same hash, then cuBLAS ``F.linear``: a transient N·K buffer per call, which pays off
only where the GEMM dominates, large M), whichever measured faster; ``hashed_mm.launcher`` stays
this kernel (benchmarks, the static report).
"""

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from slimtorch.core import measured
from slimtorch.core.checks import KERNEL_DTYPES, check_same_device, check_tensor
from slimtorch.core.dispatch import empty_output
from slimtorch.core.gemm import grouped_tile, m_bucket, store_output
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import compute_dtype, linear_reference
from slimtorch.core.triton_compat import dot_acc, upcast_dot_operands
from slimtorch.core.tuning import autotune_configs

# Multipliers < 2^31, so products with 32-bit values fit int64 (constexpr: read by the kernel)
MIX_1, MIX_2, MIX_3 = tl.constexpr(0x7FEB352D), tl.constexpr(0x6B43A9B5), tl.constexpr(0x5BD1E995)
MAX_SEED = 2**31 - 1

HASHED_CONFIG_LIST = [
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=2),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=8, num_stages=3),
    # 8 warps: with 4 this tile spills (64 STL/LDL on sm_90a: the hashed index tile and both operands live at once)
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_warps=8, num_stages=3),
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 1}, num_warps=4, num_stages=3),
]
HASHED_CONFIGS = autotune_configs(HASHED_CONFIG_LIST)


@triton.jit
def _low32(u):
    return u - ((u >> 32) << 32)


@triton.jit
def _mix(t, seed):
    """32-bit mix of int64 t ≥ 0 (see the module doc); returns an int64 in [0, 2^32)."""
    u = _low32(_low32(t) * MIX_1 + seed)
    u = u ^ (u >> 16)
    u = _low32(u * MIX_2)
    u = u ^ (u >> 13)
    u = _low32(u * MIX_3)
    return u ^ (u >> 16)


@triton.autotune(configs=HASHED_CONFIGS, key=["M_BUCKET", "N", "K", "TRANSPOSED"])
@triton.jit
def _hashed_mm_kernel(
    x_ptr,  # (M, K)
    w_ptr,  # (P,) the shared parameters
    bias_ptr,
    out_ptr,  # (M, N)
    M,
    N,
    K,
    P,
    seed,
    M_BUCKET,  # next power of two of M (autotune key only)
    stride_xm,
    stride_om,
    TRANSPOSED: tl.constexpr,  # False: V is (N, K); True: V[o, r] = W[r, o] with W (K, N)
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        a = tl.load(x_rows + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        if TRANSPOSED:
            t = offs_k.to(tl.int64)[:, None] * N + offs_n[None, :]
        else:
            t = offs_n.to(tl.int64)[None, :] * K + offs_k[:, None]
        u = _mix(t, seed)
        bucket = (u & 0x7FFFFFFF) % P
        sign = (1 - 2 * (u >> 31)).to(tl.float32)
        w = tl.load(w_ptr + bucket, mask=mask_k[:, None] & mask_n[None, :], other=0.0).to(tl.float32) * sign
        acc = dot_acc(a, w.to(a.dtype), acc, UPCAST)
    store_output(acc, offs_m, offs_n, M, N, bias_ptr, bias_ptr, out_ptr, stride_om, False, HAS_BIAS, "none")


# ----------------------------------------------------------------------------- launcher


def _check_hashed_mm(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_features: int,
    seed: int,
    bias: Optional[torch.Tensor] = None,
    transposed: bool = False,
) -> None:
    check_tensor(x, "x", ndim=2, dtype=KERNEL_DTYPES)
    check_tensor(weight, "weight", ndim=1, dtype=KERNEL_DTYPES)
    if weight.shape[0] < 1:
        raise ValueError("weight: expected at least one shared parameter, got shape (0,)")
    if not isinstance(out_features, int) or out_features < 1:
        raise ValueError(f"out_features: expected a positive int, got {out_features!r}")
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed: expected an int in [0, {MAX_SEED}], got {seed!r}")
    if bias is not None:
        check_tensor(bias, "bias", shape=(out_features,), dtype=KERNEL_DTYPES)
    check_same_device(x=x, weight=weight, bias=bias)


def launch_hashed_mm(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_features: int,
    seed: int,
    bias: Optional[torch.Tensor] = None,
    transposed: bool = False,
) -> torch.Tensor:
    """Our kernel (``hashed_mm.launcher``)."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    weight = weight.contiguous()
    m, k = x.shape
    n = out_features
    out = empty_output((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)
    _hashed_mm_kernel[grid](
        x,
        weight,
        bias if bias is not None else out,
        out,
        m,
        n,
        k,
        weight.shape[0],
        seed,
        m_bucket(m),
        x.stride(0),
        out.stride(0),
        TRANSPOSED=transposed,
        HAS_BIAS=bias is not None,
        UPCAST=upcast_dot_operands(x.dtype),
    )
    return out


def hashed_mm_torch(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_features: int,
    seed: int,
    bias: Optional[torch.Tensor] = None,
    transposed: bool = False,
) -> torch.Tensor:
    """torch's path (the dispatch candidate): V materialised in x's dtype, then ``F.linear`` (cuBLAS)."""
    k = x.shape[1]
    rows, cols = (k, out_features) if transposed else (out_features, k)
    v = hashed_matrix(weight.to(x.dtype), rows, cols, seed)
    return F.linear(x, v.t() if transposed else v, None if bias is None else bias.to(x.dtype))


@kernel_op("slimtorch::hashed_mm", reference="hashed_mm_reference", check=_check_hashed_mm, row_input="x")
def hashed_mm(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_features: int,
    seed: int,
    bias: Optional[torch.Tensor] = None,
    transposed: bool = False,
) -> torch.Tensor:
    """``x · Vᵀ + bias`` (x (M, K) -> (M, out_features)), V the hashed (out_features, K) matrix;
    ``transposed``: ``x · V`` for V of shape (K, out_features). On CUDA, our kernel or torch's
    materialise + cuBLAS path, whichever measured faster for this shape bucket (module doc)."""
    args = (x, weight, out_features, seed, bias, transposed)
    candidates = {"triton": lambda: launch_hashed_mm(*args), "torch V+F.linear": lambda: hashed_mm_torch(*args)}
    key = (*measured.gemm_key(x, out_features, x.shape[1]), weight.shape[0], int(transposed))
    return measured.run("slimtorch::hashed_mm", key, candidates, x)


hashed_mm.launcher = launch_hashed_mm  # benchmarks and the static report time our kernel itself


def _setup_context(ctx, inputs, output) -> None:
    x, weight, out_features, seed, bias, transposed = inputs
    ctx.save_for_backward(x, weight)
    ctx.out_features, ctx.seed, ctx.transposed, ctx.has_bias = out_features, seed, transposed, bias is not None


def _backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    grad_x = grad_w = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_x = hashed_mm(grad_out.contiguous(), weight, x.shape[1], ctx.seed, None, not ctx.transposed)
    if ctx.needs_input_grad[1]:
        dt = compute_dtype(x.dtype)
        dense = grad_out.to(dt).t() @ x.to(dt)  # (out_features, K): gradient of V
        rows, cols = (ctx.out_features, x.shape[1]) if not ctx.transposed else (x.shape[1], ctx.out_features)
        bucket, sign = hash_index(rows, cols, weight.shape[0], ctx.seed, weight.device)
        per_entry = dense if not ctx.transposed else dense.t()
        grad_w = torch.zeros(weight.shape[0], dtype=dt, device=weight.device)
        grad_w.index_add_(0, bucket.reshape(-1), (per_entry * sign.to(dt)).reshape(-1))
        grad_w = grad_w.to(weight.dtype)
    if ctx.has_bias and ctx.needs_input_grad[4]:
        grad_bias = grad_out.sum(0)
    return grad_x, grad_w, None, None, grad_bias, None


hashed_mm.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- reference


def hash_mix(t: torch.Tensor, seed: int) -> torch.Tensor:
    """The kernel's 32-bit mix in torch (int64 in, int64 in [0, 2^32) out)."""
    low = lambda u: u & 0xFFFFFFFF
    u = low(low(t) * MIX_1.value + seed)
    u = u ^ (u >> 16)
    u = low(u * MIX_2.value)
    u = u ^ (u >> 13)
    u = low(u * MIX_3.value)
    return u ^ (u >> 16)


def hash_index(
    rows: int, cols: int, buckets: int, seed: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(bucket, sign) of every entry of a (rows, cols) virtual matrix: int64 and ±1 int64."""
    t = torch.arange(rows * cols, dtype=torch.int64, device=device).reshape(rows, cols)
    u = hash_mix(t, seed)
    return (u & 0x7FFFFFFF) % buckets, 1 - 2 * (u >> 31)


def hashed_matrix(weight: torch.Tensor, rows: int, cols: int, seed: int) -> torch.Tensor:
    """The explicit (rows, cols) virtual matrix V[n, k] = ξ(n, k) · w[h(n, k)] (differentiable in w)."""
    bucket, sign = hash_index(rows, cols, weight.shape[0], seed, weight.device)
    return weight[bucket] * sign.to(weight.dtype)


def hashed_mm_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    out_features: int,
    seed: int,
    bias: Optional[torch.Tensor] = None,
    transposed: bool = False,
) -> torch.Tensor:
    """Pure torch: materialise V, then ``x · Vᵀ + bias`` (or ``x · V``) in fp32 (fp64 for fp64 x)."""
    w = weight.to(compute_dtype(x.dtype))
    v = (
        hashed_matrix(w, x.shape[1], out_features, seed).t()
        if transposed
        else hashed_matrix(w, out_features, x.shape[1], seed)
    )
    return linear_reference(x, v, bias)

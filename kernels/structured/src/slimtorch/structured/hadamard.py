"""Fast Walsh–Hadamard transform ``y = scale · x · H_n`` along rows (n a power of two).

H_n is Sylvester's Hadamard matrix, H_1 = [1], H_2n = [[H_n, H_n], [H_n, −H_n]] (symmetric;
H_n·H_n = n·I, so ``scale = n^{-1/2}`` makes it orthonormal). log2(n) butterfly stages: at stride h
the pair (x[i], x[i + h]) of every 2h-chunk becomes (x[i] + x[i + h], x[i] − x[i + h]).

Kernel: one program holds a (BLOCK_R, N) tile of rows in registers and runs every stage there.
H_n = H_2 ⊗ … ⊗ H_2 acts on each bit of the index separately, so every stage is the same: view the
tile as (BLOCK_R, N/2, 2), butterfly the last axis (lowest bit), move that axis to the front
(rotate the index bits right); after log2(N) stages the order is restored. A row is read once and
written once. Rows may be
strided: the tensor is viewed as (A, N, S) contiguous, row r = (a, s) = (r // S, r % S), element
t at a·N·S + t·S + s (S = 1: contiguous rows; S > 1: consecutive rows are consecutive in memory,
so loads stay coalesced). Sizes above ``max_block`` (default 8192, the register budget of one
program) take two passes by H_{n1·n2} = H_{n1} ⊗ H_{n2}: along contiguous chunks of n2 (S = 1),
then across them (N = n1, S = n2); the intermediate is fp32. Accumulation is fp32; the output is
in x's dtype. Used by Fastfood (Le, Sarlós & Smola 2013) in :mod:`slimtorch.structured.layers`.
No autotuning: BLOCK_R and the warps follow from N (:func:`fwht_launch_meta`).
"""

import torch
import triton
import triton.language as tl

from slimtorch.core.checks import KERNEL_DTYPES, check_tensor
from slimtorch.core.dispatch import empty_output
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import compute_dtype

MAX_BLOCK = 8192  # largest N transformed by one program in one pass (fp32 tile in registers)
TILE_ELEMENTS = 4096  # BLOCK_R · N per program, for small N
ELEMENTS_PER_THREAD = 16


@triton.jit
def _fwht_kernel(
    x_ptr,
    out_ptr,
    R,  # rows: A · S
    S,  # element stride within a row
    scale,
    N: tl.constexpr,
    LOG_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_t = tl.arange(0, N)
    base = (offs_r // S).to(tl.int64) * N * S + offs_r % S
    ptrs = base[:, None] + offs_t.to(tl.int64)[None, :] * S
    mask = (offs_r < R)[:, None]
    x = tl.load(x_ptr + ptrs, mask=mask, other=0.0).to(tl.float32)
    for _ in tl.static_range(LOG_N):
        # butterfly on the lowest index bit, then rotate the bits right by one (that bit becomes the
        # highest): after LOG_N stages every bit had its butterfly and the order is back
        a, b = tl.split(tl.reshape(x, (BLOCK_R, N // 2, 2)))
        x = tl.reshape(tl.permute(tl.join(a + b, a - b), (0, 2, 1)), (BLOCK_R, N))
    tl.store(out_ptr + ptrs, (x * scale).to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- launcher


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _check_fwht(x: torch.Tensor, scale: float = 1.0, max_block: int = MAX_BLOCK) -> None:
    check_tensor(x, "x", ndim=2, dtype=KERNEL_DTYPES)
    if not is_power_of_two(x.shape[1]):
        raise ValueError(
            f"x.shape[1]: expected a power of two (the Walsh–Hadamard size; pad the input first, as "
            f"FastfoodLinear does), got {x.shape[1]}"
        )
    if not is_power_of_two(max_block) or max_block < 2:
        raise ValueError(f"max_block: expected a power of two >= 2, got {max_block}")


def fwht_launch_meta(n: int) -> dict[str, int]:
    """BLOCK_R (rows per program) and num_warps for a pass of size N."""
    block_r = max(1, min(64, TILE_ELEMENTS // n))
    warps = triton.next_power_of_2(max(1, block_r * n // (32 * ELEMENTS_PER_THREAD)))
    return {"BLOCK_R": block_r, "num_warps": min(16, warps)}


def _launch_pass(src: torch.Tensor, dst: torch.Tensor, rows: int, n: int, stride: int, scale: float) -> None:
    meta = fwht_launch_meta(n)
    grid = (triton.cdiv(rows, meta["BLOCK_R"]),)
    _fwht_kernel[grid](src, dst, rows, stride, scale, N=n, LOG_N=n.bit_length() - 1, **meta)


@kernel_op("slimtorch::fwht", reference="fwht_reference", check=_check_fwht)
def fwht(x: torch.Tensor, scale: float = 1.0, max_block: int = MAX_BLOCK) -> torch.Tensor:
    """``scale · x · H_n`` for x (M, n), n a power of two; one pass when n ≤ max_block, else two."""
    x = x.contiguous()
    m, n = x.shape
    out = empty_output((m, n), dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    if n <= max_block:
        _launch_pass(x, out, m, n, 1, scale)
        return out
    n2 = max_block
    n1 = n // n2
    middle = empty_output((m, n), dtype=torch.float32, device=x.device)
    _launch_pass(x, middle, m * n1, n2, 1, 1.0)  # within each chunk of n2 (H_{n2} on the fast index)
    _launch_pass(middle, out, m * n2, n1, n2, scale)  # across chunks (H_{n1} on the slow index)
    return out


def _setup_context(ctx, inputs, output) -> None:
    _, ctx.scale, ctx.max_block = inputs


def _backward(ctx, grad_out):
    """H is symmetric: grad_x = scale · grad · H."""
    return fwht(grad_out.contiguous(), ctx.scale, ctx.max_block), None, None


fwht.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------- reference


def hadamard_matrix(n: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sylvester's H_n built by Kronecker products (an independent oracle for the transform)."""
    if not is_power_of_two(n):
        raise ValueError(f"n: expected a power of two, got {n}")
    h = torch.ones(1, 1, dtype=dtype, device=device)
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=dtype, device=device)
    while h.shape[0] < n:
        h = torch.kron(h2, h)
    return h


def fwht_reference(x: torch.Tensor, scale: float = 1.0, max_block: int = MAX_BLOCK) -> torch.Tensor:
    """Pure torch butterflies in fp32 (fp64 for fp64 x); ``max_block`` does not change the result."""
    m, n = x.shape
    y = x.to(compute_dtype(x.dtype))
    h = 1
    while h < n:
        y4 = y.reshape(m, n // (2 * h), 2, h)
        y = torch.stack((y4[:, :, 0] + y4[:, :, 1], y4[:, :, 0] - y4[:, :, 1]), dim=2).reshape(m, n)
        h *= 2
    return (y * scale).to(x.dtype)

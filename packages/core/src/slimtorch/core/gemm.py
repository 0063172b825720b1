"""The GEMM contract of every GEMM-shaped kernel (quant, sparse, convops): tile order, split-K
planning and its single-launch reduction, poisoned partials, the epilogue store and autotune keys.

Tile order. :func:`grouped_tile` maps a 1-D program id to an (M tile, N tile) pair, GROUP_M row
tiles at a time, so that programs running together share weight tiles in L2.

Epilogue. A kernel's fp32 accumulator tile ``acc`` (rows × output channels ``cols``) ends in
:func:`store_tile` (any output addressing: ``ptrs`` computed by the kernel) or its row-major form
:func:`store_output`, both through :func:`epilogue`:

    out[m, n] = cast(act(acc[m, n] · scale[n] + bias[n]))     (scale, bias optional; masked store)

Split-K. For small M the output tiles alone cannot fill the GPU, so K is cut into ``splits``
ranges of ``k_per_split`` columns (program axis 1; :func:`plan_split_k` sizes them, one rule for
every kernel). One launch, no second reduction kernel (:func:`store_splitk`):

1. split s writes its fp32 partial ``partial[s, m, n]`` (contiguous (splits, M, N));
2. it increments the tile's int32 counter ``counter[tile]`` (``atomic_add``, acq_rel: its partial
   is visible to whoever sees the increment);
3. the program that sees ``splits − 1`` (the last of the tile to finish) sums
   ``partial[0] + partial[1] + … + partial[S−1]`` in that fixed order — the same bits whichever
   split finished last — applies the epilogue, stores, and sets ``counter[tile]`` back to 0.

The counters are one cached, zeroed int32 buffer per (device, stream) (:func:`splitk_counters`),
grown when a launch needs more tiles; every launch leaves it zero for the next one (launches on a
stream run in order; each stream has its own buffer). The partials come from
:func:`splitk_partials`, i.e. :func:`slimtorch.core.dispatch.empty_output` (NaN under
``SLIMTORCH_POISON_OUTPUTS=1``). In the Triton interpreter programs run one after another, so
the last split of a tile is the last program of it; the same code compiles for sm_80/sm_90.

Autotune keys. Batch-dependent sizes (M; convops' N, OH, OW, N·OH·OW, H·W) enter autotune keys
as :func:`m_bucket` (the next power of two), passed as an extra kernel argument named
``<SIZE>_BUCKET``, and a memory layout as :func:`layout_key` (argument ``LAYOUT``), never raw
strides: batch sizes of one bucket share the tuned config instead of tuning again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from slimtorch.core.activations import apply_activation
from slimtorch.core.dispatch import empty_output

# SMs assumed for non-CUDA tensors (the Triton interpreter on CPU): small, so that the CPU test
# suite's small shapes still plan several splits and exercise the split-K path.
INTERPRETER_SM_COUNT = 4

# ----------------------------------------------------------------------------- host side: planning


class SplitK(NamedTuple):
    """``splits`` ranges of K, each ``k_per_split`` columns (the last one may be shorter)."""

    splits: int
    k_per_split: int


def m_bucket(size: int) -> int:
    """The autotune-key bucket of a batch-dependent size (M, pixels, …): its next power of two."""
    return triton.next_power_of_2(max(int(size), 1))


def layout_key(*tensors: torch.Tensor) -> int:
    """The memory layout in an autotune key, instead of raw strides (an NCHW channel stride is H·W,
    a batch/resolution-dependent size again): bit i set where ``tensors[i]`` has contiguous
    channels (dim 1, i.e. channels_last)."""
    return sum(int(t.stride(1) == 1) << i for i, t in enumerate(tensors))


def sm_count(device: torch.device | str) -> int:
    """Streaming multiprocessors of ``device``; :data:`INTERPRETER_SM_COUNT` off CUDA."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).multi_processor_count  # cached by torch
    return INTERPRETER_SM_COUNT


def split_k_ranges(k: int, splits: int, granule: int) -> SplitK:
    """``splits`` ranges covering K, each a multiple of ``granule`` columns and none empty (so
    fewer splits than asked for when K is short)."""
    if splits < 1 or granule < 1:
        raise ValueError(f"splits, granule: expected positive ints, got {splits}, {granule}")
    k_per_split = triton.cdiv(triton.cdiv(max(k, 1), splits), granule) * granule
    return SplitK(triton.cdiv(max(k, 1), k_per_split), k_per_split)


def plan_split_k(
    m: int,
    n: int,
    k: int,
    *,
    sm_count: int,
    block_m: int,
    block_n: int,
    min_k_per_split: int,
    max_splits: int,
    granule: int,
    programs_per_sm: int = 2,
    max_m: int | None = None,
    max_partial_bytes: float | None = None,
) -> SplitK:
    """Split K until (output tiles × splits) reaches ``programs_per_sm`` programs per SM.

    The tiles are counted with the planning tile (``block_m`` × ``block_n``, the autotuned one may
    differ); each split reduces at least ``min_k_per_split`` columns; at most ``max_splits``;
    no split for M > ``max_m``; the fp32 partials (written and read: 8 bytes per element and
    split) cost at most ``max_partial_bytes`` of traffic. Ranges are multiples of ``granule``
    (a multiple of every config's K block) and none is empty.
    """
    if max_m is not None and m > max_m:
        return split_k_ranges(k, 1, granule)
    tiles = triton.cdiv(max(m, 1), block_m) * triton.cdiv(max(n, 1), block_n)
    splits = min(triton.cdiv(programs_per_sm * sm_count, tiles), k // min_k_per_split, max_splits)
    if max_partial_bytes is not None:
        splits = min(splits, int(max_partial_bytes // (8 * max(m, 1) * max(n, 1))))
    return split_k_ranges(k, max(1, splits), granule)


def max_tiles(configs: list[triton.Config], tiles: Callable[[dict], int]) -> int:
    """The counters a split-K launch needs: the most output tiles ``tiles(config.kwargs)`` (the
    launcher's grid, tile axes) over every config declared for the kernel (``configs.all`` where
    the interpreter kept fewer), since the autotuner picks the config after allocation."""
    return max(tiles(c.kwargs) for c in getattr(configs, "all", configs))


def splitk_partials(splits: int, m: int, n: int, device: torch.device | str) -> torch.Tensor:
    """The fp32 partials (splits, M, N) of a split-K launch, poisoned under SLIMTORCH_POISON_OUTPUTS=1."""
    return empty_output((splits, m, n), dtype=torch.float32, device=device)


_COUNTERS: dict[tuple, torch.Tensor] = {}


def _counter_key(device: torch.device) -> tuple | None:
    """(device, stream) of the cached counters; None where there is no CUDA runtime to ask (launches
    captured on a fake device, slimtorch.core.capture): those get a fresh buffer."""
    if device.type != "cuda":
        return (device.type, device.index)
    try:
        return (device.type, device.index, torch.cuda.current_stream(device).stream_id)
    except (RuntimeError, AssertionError):
        return None


def splitk_counters(device: torch.device | str, tiles: int) -> torch.Tensor:
    """At least ``tiles`` int32 tile counters on ``device``, all zero; cached per (device, stream)
    and left zero by every split-K launch (see the module doc)."""
    from torch._subclasses.fake_tensor import FakeTensor

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = _counter_key(device)
    counters = None if key is None else _COUNTERS.get(key)
    if counters is None or counters.numel() < tiles:
        size = max(tiles, 2 * (0 if counters is None else counters.numel()), 64)
        counters = torch.zeros(size, dtype=torch.int32, device=device)
        if key is not None and not isinstance(counters, FakeTensor):  # never keep a fake (captured) buffer
            _COUNTERS[key] = counters
    return counters


# ----------------------------------------------------------------------------- device side


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
def epilogue(
    acc,
    cols,
    col_mask,
    scale_ptr,
    bias_ptr,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
):
    """act(acc · scale[cols] + bias[cols]) on an fp32 (rows, cols) tile; per-channel vectors in any dtype."""
    if HAS_SCALE:
        acc = acc * tl.load(scale_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    return apply_activation(acc, ACTIVATION)


@triton.jit
def store_tile(
    acc,
    ptrs,
    mask,
    cols,
    col_mask,
    scale_ptr,
    bias_ptr,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
):
    """``*ptrs = cast(epilogue(acc))`` where ``mask``: the store of every kernel, whatever its
    output addressing (``ptrs`` a (rows, cols) block of pointers into the output)."""
    y = epilogue(acc, cols, col_mask, scale_ptr, bias_ptr, HAS_SCALE, HAS_BIAS, ACTIVATION)
    tl.store(ptrs, y.to(ptrs.dtype.element_ty), mask=mask)


@triton.jit
def store_output(
    acc,
    offs_m,
    offs_n,
    M,
    N,
    scale_ptr,
    bias_ptr,
    out_ptr,
    stride_om,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
):
    """:func:`store_tile` into a row-major out (M, N) with row stride ``stride_om``."""
    n_mask = offs_n < N
    ptrs = out_ptr + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :]
    mask = (offs_m[:, None] < M) & n_mask[None, :]
    store_tile(acc, ptrs, mask, offs_n, n_mask, scale_ptr, bias_ptr, HAS_SCALE, HAS_BIAS, ACTIVATION)


@triton.jit
def _partial_ptrs(partial_ptr, offs_m, offs_n, M, N, split):
    """&partial[split, offs_m, offs_n] of the contiguous fp32 (splits, M, N) partials (int64 offsets)."""
    return partial_ptr + (offs_m.to(tl.int64) + split * M)[:, None] * N + offs_n[None, :]


@triton.jit
def store_splitk(
    acc,
    offs_m,
    offs_n,
    M,
    N,
    tile,
    split,
    splits,
    partial_ptr,
    counter_ptr,
    scale_ptr,
    bias_ptr,
    out_ptr,
    stride_om,
    SPLIT: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
):
    """End of a (possibly) split-K program for output tile ``tile`` and K range ``split`` of
    ``splits``: without SPLIT, :func:`store_output`; with it, the single-launch reduction of the
    module doc (partial, counter, the last split sums 0..splits−1 in order, stores, re-zeroes)."""
    if SPLIT:
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        tl.store(_partial_ptrs(partial_ptr, offs_m, offs_n, M, N, split), acc, mask=mask)
        tl.debug_barrier()  # every thread's partial is written before the release below
        done = tl.atomic_add(counter_ptr + tile, 1, sem="acq_rel")
        if done == splits - 1:  # the last split of this tile: every partial is visible
            total = tl.zeros_like(acc)
            for s in range(0, splits):  # fixed order: deterministic
                ptrs = _partial_ptrs(partial_ptr, offs_m, offs_n, M, N, s)
                total += tl.load(ptrs, mask=mask, other=0.0, cache_modifier=".cg")
            store_output(
                total, offs_m, offs_n, M, N, scale_ptr, bias_ptr, out_ptr, stride_om, HAS_SCALE, HAS_BIAS, ACTIVATION
            )
            tl.store(counter_ptr + tile, 0)  # zero again for the next launch
    else:
        store_output(
            acc, offs_m, offs_n, M, N, scale_ptr, bias_ptr, out_ptr, stride_om, HAS_SCALE, HAS_BIAS, ACTIVATION
        )

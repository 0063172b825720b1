"""``python -m slimtorch.sparse.bench``: 2:4 and block-sparse matmuls against dense cuBLAS and torch's
semi-structured sparsity, side by side, on this machine's GPU (``--quick`` for a smoke run).

Cases (fp16, y = x @ W.T, W (N, K), x (M, K)):

- LLM linears ``K×N`` = 4096×4096, 4096×11008, 11008×4096, 8192×8192 at M = 1, 8, 16, 64, 256,
  2048, 8192;
- MobileNetV2 / ShuffleNetV2 1x1 convolutions (224² input) as GEMMs with M = batch·H·W for batch
  1, 32, 256.

Providers: ``torch dense`` (F.linear = cuBLAS, the baseline), ``ours 2:4`` (the Triton launcher:
split-K gather GEMV for small M, four per-slot tl.dots above), ``ours 2:4 mma.sp`` (the CUDA
sparse-tensor-core kernel, with ``--mma-sp`` only), ``torch 2:4`` (``to_sparse_semi_structured``; its cuSPARSELt
and CUTLASS backends separately where present), ``ours BSR 50%`` (block-sparse, half the blocks).

Every provider's output is first checked against the dense product of the same pruned weight; a
wrong or failing provider is recorded with its error instead of a time. FLOPs are the dense
equivalent ``2·M·N·K`` for every provider (so TFLOP/s compare directly with the dense rate); bytes
are the minimum each provider must move (x, its weight format, y), so % of peak bandwidth says how
close a memory-bound case is to its ceiling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from slimtorch.core.bench import (
    Bench,
    Environment,
    RotatingInputs,
    ceilings,
    common_arguments,
    failing,
    verified,
    write_results,
)
from slimtorch.sparse.bsr import bsr_mm
from slimtorch.sparse.formats import compress_24, prune_24, prune_blocks, to_bsr, to_mma_sp_metadata
from slimtorch.sparse.mma_sp import sparse24_mm_sp
from slimtorch.sparse.sparse24 import sparse24_mm

FAMILY = "sparse"
BASELINE = "torch dense"
DTYPE = torch.float16
CHECK_BOUND = 2e-2  # relative error vs the dense product above which a provider is reported wrong

LLM_SHAPES: tuple[tuple[int, int], ...] = ((4096, 4096), (4096, 11008), (11008, 4096), (8192, 8192))
LLM_M: tuple[int, ...] = (1, 8, 16, 64, 256, 2048, 8192)
LLM_BSR_BLOCK = 64
# (network, K = in channels, N = out channels, H = W of the feature map) at 224² input.
CNN_SHAPES: tuple[tuple[str, int, int, int], ...] = (
    ("mobilenetv2", 96, 24, 56),
    ("mobilenetv2", 144, 32, 28),
    ("mobilenetv2", 192, 64, 14),
    ("mobilenetv2", 384, 96, 14),
    ("mobilenetv2", 960, 320, 7),
    ("mobilenetv2", 320, 1280, 7),
    ("shufflenetv2", 116, 116, 28),
    ("shufflenetv2", 232, 232, 14),
    ("shufflenetv2", 464, 1024, 7),
)
CNN_BATCHES: tuple[int, ...] = (1, 32, 256)
CNN_BSR_BLOCK = 16


def _pruned_weight(n: int, k: int, device: torch.device) -> torch.Tensor:
    weight = torch.randn(n, k, device=device, dtype=DTYPE)
    return weight * prune_24(weight)


def _weight_formats(weight: torch.Tensor, bsr_block: int | None, with_mma_sp: bool) -> dict[str, object]:
    """Every provider's form of the weight: the 2:4-pruned one, and a 50%-block-pruned one."""
    values, meta = compress_24(weight)
    formats: dict[str, object] = {"dense": weight, "values": values, "meta": meta}
    n, k = weight.shape
    if with_mma_sp and k % 32 == 0:
        formats["meta_mma"] = to_mma_sp_metadata(meta)
    if bsr_block and n % bsr_block == 0 and k % bsr_block == 0:
        full = torch.randn_like(weight)
        block_mask = prune_blocks(full, bsr_block, 0.5)
        formats["bsr"] = to_bsr(full, block_mask)
        formats["bsr_dense"] = full * block_mask.repeat_interleave(bsr_block, 0).repeat_interleave(bsr_block, 1)
    return formats


def _torch_semi_structured(weight: torch.Tensor, backend: str) -> torch.Tensor:
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    previous = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
    try:
        return to_sparse_semi_structured(weight)
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = previous


def _torch_backends() -> list[str]:
    backends = ["cutlass"]
    if getattr(torch.backends, "cusparselt", None) is not None and torch.backends.cusparselt.is_available():
        backends.insert(0, "cusparselt")
    return backends


def _providers(fmt: dict[str, object]) -> dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float, str]]:
    """name -> (fn(x), bytes of its weight format, the key of the dense weight it computes with)."""
    weight, values, meta = fmt["dense"], fmt["values"], fmt["meta"]
    bytes_24 = values.numel() * values.element_size() + meta.numel() * 4
    providers = {
        BASELINE: (lambda x: F.linear(x, weight), weight.numel() * 2, "dense"),
        "ours 2:4": (lambda x: sparse24_mm.launcher(x, values, meta, None, "none", 0), bytes_24, "dense"),
    }
    if "meta_mma" in fmt:
        meta_mma = fmt["meta_mma"]
        providers["ours 2:4 mma.sp"] = (lambda x: sparse24_mm_sp.launcher(x, values, meta_mma), bytes_24, "dense")
    for backend in _torch_backends():
        try:
            semi = _torch_semi_structured(weight, backend)
            fn = lambda x, semi=semi: F.linear(x, semi)
        except Exception as err:  # a shape or dtype this backend does not support
            fn = failing(err)
        providers[f"torch 2:4 {backend}"] = (fn, bytes_24, "dense")
    if "bsr" in fmt:
        crow, col, block_values = fmt["bsr"]
        bsr_bytes = block_values.numel() * 2 + (crow.numel() + col.numel()) * 4
        providers["ours BSR 50%"] = (lambda x: bsr_mm.launcher(x, crow, col, block_values), bsr_bytes, "bsr_dense")
    return providers


def add_case(bench: Bench, case: str, x_value: int, m: int, fmt: dict[str, object], device: torch.device) -> None:
    n, k = fmt["dense"].shape
    for name, (fn, weight_bytes, dense_key) in _providers(fmt).items():
        x, dense = torch.randn(m, k, device=device, dtype=DTYPE), fmt[dense_key]
        inputs = RotatingInputs(lambda: (torch.randn(m, k, device=device, dtype=DTYPE),), device=device)
        timed = verified(
            lambda fn=fn, inputs=inputs: fn(*inputs()),
            lambda fn=fn, x=x: fn(x),
            lambda x=x, dense=dense: F.linear(x.float(), dense.float()),
            CHECK_BOUND,
        )
        bench.add(
            case,
            x=x_value,
            provider=name,
            fn=timed,
            shape={"M": m, "N": n, "K": k},
            dtype="float16",
            flops=2.0 * m * n * k,
            nbytes=float(weight_bytes + 2 * m * k + 2 * m * n),
        )


def build(device: torch.device, *, quick: bool, with_mma_sp: bool) -> Bench:
    bench = Bench(FAMILY, device=device, baseline=BASELINE)
    for k, n in LLM_SHAPES[:1] if quick else LLM_SHAPES:
        fmt = _weight_formats(_pruned_weight(n, k, device), LLM_BSR_BLOCK, with_mma_sp)
        for m in (1, 16, 2048) if quick else LLM_M:
            add_case(bench, f"LLM {k}x{n} (KxN)", m, m, fmt, device)
    for net, k, n, hw in CNN_SHAPES[:1] if quick else CNN_SHAPES:
        fmt = _weight_formats(_pruned_weight(n, k, device), CNN_BSR_BLOCK, with_mma_sp)
        for batch in CNN_BATCHES[:2] if quick else CNN_BATCHES:
            add_case(bench, f"{net} 1x1 {k}->{n} @{hw}x{hw} (x = batch)", batch, batch * hw * hw, fmt, device)
    return bench


def goal_summary(results: Sequence) -> list[str]:
    """The speed goals, read off the results (speedups over dense at the stated sizes)."""
    lines = []
    by_key = {(r.case, r.x, r.provider): r for r in results if r.error is None}
    for r in results:
        if not r.case.startswith("LLM") or r.provider not in ("ours 2:4", "ours 2:4 mma.sp", "ours BSR 50%"):
            continue
        if r.error is not None:
            lines.append(f"{r.case} M={r.x} {r.provider}: error {r.error}")
            continue
        torch_best = min(
            (v.median_ms for (c, x, p), v in by_key.items() if c == r.case and x == r.x and p.startswith("torch 2:4")),
            default=math.nan,
        )
        lines.append(
            f"{r.case} M={r.x} {r.provider}: {r.speedup or math.nan:.2f}x dense, {r.pct_peak_bw or 0:.0f}% of copy BW, "
            f"{r.pct_peak_flops or 0:.0f}% of dense peak; vs best torch 2:4: {torch_best / r.median_ms:.2f}x"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = common_arguments(__doc__.splitlines()[0])
    parser.add_argument(
        "--mma-sp",
        action="store_true",
        help="also time the CUDA mma.sp kernel (not yet verified on a GPU: a fault would end the run)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda":
        raise SystemExit("slimtorch.sparse.bench measures GPU kernels: run it on a CUDA device (--device cuda)")
    torch.manual_seed(0)
    ceil = ceilings(device)
    results = build(device, quick=args.quick, with_mma_sp=args.mma_sp).run(ceil=ceil)
    paths = write_results(results, Environment.collect(device, ceilings=ceil), args.out, FAMILY)
    print("\n".join(goal_summary(results)))
    print("wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()

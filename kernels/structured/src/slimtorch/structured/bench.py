"""Benchmark of the structured layers against the dense layer of the same size.

    python -m slimtorch.structured.bench [--quick] [--out benchmarks/results] [--device cuda]

y = x · Wᵀ for x (M, d) and a d × d weight, d ∈ {1024, 4096, 8192, 16384}, M ∈ {1, 64, 1024,
8192}, fp16 and fp32, and the 1x1-convolution GEMMs of MobileNetV2 / ShuffleNetV2 (M = pixels ×
batch). Providers side by side per (case, M), each checked against its reference before timing:

- ``dense torch.matmul`` (the baseline: cuBLAS on the dense weight, what nn.Linear / a 1x1 conv runs);
- ``circulant fft`` (CirculantLinear's op, b = d), ``block-circulant fft`` / ``direct`` (b = 64, or
  the largest power of two ≤ 64 dividing both sizes), ``fastfood`` (the adaptive layer's forward),
  ``hashed 1/8`` (HashedNets kernel), ``low-rank d/4`` (two cuBLAS matmuls at rank d/4);
- ``fwht`` next to ``torch copy_`` of the same bytes (the bandwidth goal).

On a GPU the raw launchers are timed (no dispatch overhead); on CPU (``--device cpu``, a small set
with ``--quick``) the ops run their pure-torch references: a smoke run, not kernel speed. Results go
to ``<out>/<device>/structured.{json,md,png}``; the markdown ends with the issue's goals, the
measured speedups and this file's static H100 estimates (:func:`static_estimates`).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Sequence

import torch

from slimtorch.core import bench
from slimtorch.core.dispatch import reference_only
from slimtorch.core.testing import rel_bound
from slimtorch.structured import block_circulant as bc
from slimtorch.structured.hadamard import fwht, fwht_reference
from slimtorch.structured.hashing import hashed_matrix, hashed_mm
from slimtorch.structured.layers import FastfoodLinear

FAMILY = "structured"
BASELINE = "dense torch.matmul"
SIZES = (1024, 4096, 8192, 16384)
M_VALUES = (1, 64, 1024, 8192)
QUICK_SIZES, QUICK_M_VALUES = (4096,), (1, 1024)
CPU_SIZES, CPU_M_VALUES = (256,), (1, 64)
# (label, in, out): pointwise layers of the zoo's models
CONV_SHAPES = [
    ("mobilenetv2 1x1 320->1280", 320, 1280),
    ("mobilenetv2 1x1 960->160", 960, 160),
    ("shufflenetv2 1x1 464->1024", 464, 1024),
    ("shufflenetv2 1x1 232->232", 232, 232),
]


def block_size_for(k: int, n: int, largest: int = 64) -> int:
    """The largest power of two ≤ ``largest`` dividing both sizes."""
    b = largest
    while b > 1 and (k % b or n % b):
        b //= 2
    return b


def _case(
    runner: bench.Bench,
    label: str,
    k: int,
    n: int,
    m_values: Sequence[int],
    dtype: torch.dtype,
    device: torch.device,
    square: bool,
) -> list[tuple[str, int, Callable[[], object]]]:
    """Every provider × M of one case (k -> n); returns (provider, M, fn) for smoke checks."""
    gpu = device.type == "cuda"
    call = (lambda op: op.launcher) if gpu else (lambda op: op)
    # against float64 references: the FFT paths reduce over K twice (forward and inverse DFT, ~4·K
    # terms), low rank and Fastfood chain 2..5 stages each rounded to dtype: twice the bound of a
    # 4·K-long dot product in dtype covers each (tf32 for fp32 on a GPU included)
    tol = 2 * rel_bound(dtype, 4 * k, device=device)
    w = torch.randn(n, k, device=device) / math.sqrt(k)
    dense = w.to(dtype)
    b = block_size_for(k, n)
    blocks = torch.randn(n // b, k // b, b, device=device, dtype=dtype) / math.sqrt(k)
    spectrum = bc.weight_spectrum(blocks)
    hashed_w = torch.randn(max(1, n * k // 8), device=device, dtype=dtype) / math.sqrt(k)
    providers: list[tuple[str, Callable, Callable | None, float]] = [
        (BASELINE, lambda x: x @ dense.t(), None, n * k),
        (
            f"block-circulant b{b} fft",
            lambda x: call(bc.block_circulant_fft_mm)(x, spectrum, b, None),
            lambda x: bc.block_circulant_fft_mm_reference(x.double(), spectrum, b),
            n * k / b,
        ),
        (
            f"block-circulant b{b} direct",
            lambda x: call(bc.block_circulant_direct_mm)(x, blocks, None),
            lambda x: bc.block_circulant_direct_mm_reference(x.double(), blocks),
            n * k / b,
        ),
        (
            "hashed 1/8",
            lambda x: call(hashed_mm)(x, hashed_w, n, 0, None),
            lambda x: x.double() @ hashed_matrix(hashed_w.double(), n, k, 0).t(),
            n * k / 8,
        ),
    ]
    rank = max(1, min(k, n) // 4)
    u = (torch.randn(n, rank, device=device) / math.sqrt(rank)).to(dtype)
    v = (torch.randn(rank, k, device=device) / math.sqrt(k)).to(dtype)
    providers.append(
        (
            f"low-rank r={rank}",
            lambda x: (x @ v.t()) @ u.t(),
            lambda x: x.double() @ (u.double() @ v.double()).t(),
            rank * (n + k),
        )
    )
    if square:
        c = torch.randn(1, 1, k, device=device, dtype=dtype) / math.sqrt(k)
        cs = bc.weight_spectrum(c)
        providers.append(
            (
                "circulant fft",
                lambda x: call(bc.block_circulant_fft_mm)(x, cs, k, None),
                lambda x: bc.block_circulant_fft_mm_reference(x.double(), cs, k),
                k,
            )
        )
        ff = FastfoodLinear(k, n, bias=False, adaptive=True).to(device=device)
        ff_matrix = copy.deepcopy(ff).double().dense_weight().detach()
        ff = ff.to(dtype)
        providers.append(("fastfood", lambda x: ff(x), lambda x: x.double() @ ff_matrix.t(), 3 * k))
        providers.append(("fwht", lambda x: call(fwht)(x, k**-0.5), lambda x: fwht_reference(x.double(), k**-0.5), 0))
        providers.append(("torch copy_ (fwht bytes)", lambda x: torch.empty_like(x).copy_(x), None, 0))
    elt = torch.empty((), dtype=dtype).element_size()
    added = []
    for name, run, reference, weight_numbers in providers:
        for m in m_values:
            rotating = bench.RotatingInputs(lambda m=m: (torch.randn(m, k, device=device).to(dtype),), device=device)
            timed = lambda run=run, rotating=rotating: run(*rotating())
            if reference is not None:
                x = torch.randn(m, k, device=device).to(dtype)
                timed = bench.verified(timed, lambda run=run, x=x: run(x), lambda ref=reference, x=x: ref(x), tol)
            io = (
                2 * m * k * elt
                if name.startswith(("fwht", "torch copy_"))
                else m * (k + n) * elt + weight_numbers * elt
            )
            flops = 2 * m * n * k if name == BASELINE else None
            runner.add(
                label,
                x=m,
                provider=name,
                fn=timed,
                shape={"M": m, "K": k, "N": n, "block": b},
                dtype=str(dtype).removeprefix("torch."),
                flops=flops,
                nbytes=io,
            )
            added.append((name, m, timed))
    return added


def add_cases(runner: bench.Bench, sizes, m_values, dtypes, device, conv_shapes) -> list:
    added = []
    for dtype in dtypes:
        tag = str(dtype).removeprefix("torch.")
        for d in sizes:
            added += _case(runner, f"d={d} {tag}", d, d, m_values, dtype, device, square=True)
        for label, k, n in conv_shapes:
            added += _case(runner, f"{label} {tag}", k, n, m_values, dtype, device, square=False)
    return added


# ----------------------------------------------------------------------------- goals and static estimates

# (provider prefix, case prefix, M predicate, target speedup over dense) from the issue (H100)
GOALS = [
    ("circulant fft", "d=8192", lambda m: m >= 1024, 3.0),
    ("block-circulant b64", "d=4096", lambda m: m >= 1024, 1.5),
    ("block-circulant b64", "d=4096", lambda m: m == 1, 3.0),
    ("fastfood", "d=8192 float16", lambda m: m == 1024, 2.0),
    ("low-rank r=1024", "d=4096 float16", lambda m: m == 1024, 1 / 0.6),
]


def static_estimates() -> list[tuple[str, float, float]]:
    """(what, our estimated µs, dense estimated µs) on an H100 from bytes and FLOPs (block_circulant's
    model): never a measurement."""
    fp16 = torch.float16
    bw, tc = bc.H100_BYTES_PER_S, bc.H100_FLOPS[fp16]
    # every provider through the same launch model (block_circulant.call_seconds): dense is one launch
    dense = lambda m, d: bc.call_seconds(max(2 * m * d * d / tc, (2 * m * d * 2 + 2 * d * d) / bw), 1) * 1e6
    rows = [
        (
            "circulant fft d=8192 M=1024 fp16",
            bc.estimate_seconds("fft", 1024, 1, 1, 8192, fp16) * 1e6,
            dense(1024, 8192),
        ),
        (
            "block-circulant b64 fft d=4096 M=1024 fp16",
            bc.estimate_seconds("fft", 1024, 64, 64, 64, fp16) * 1e6,
            dense(1024, 4096),
        ),
        (
            "block-circulant b64 direct d=4096 M=1024 fp16",
            bc.estimate_seconds("direct", 1024, 64, 64, 64, fp16) * 1e6,
            dense(1024, 4096),
        ),
        (
            "block-circulant b64 direct d=4096 M=1 fp16",
            bc.estimate_seconds("direct", 1, 64, 64, 64, fp16) * 1e6,
            dense(1, 4096),
        ),
    ]
    # Fastfood: 2 FWHT passes + 4 elementwise passes (B, Π gather, G, S) over (M, d) fp16, read + write
    m, d = 1024, 8192
    rows.append(
        ("fastfood d=8192 M=1024 fp16 (unfused)", bc.call_seconds(6 * 2 * m * d * 2 / bw, 6) * 1e6, dense(m, d))
    )
    r = 4096 // 4
    low_bytes = 2 * 1024 * (4096 + r) * 2 + 2 * 2 * 4096 * r
    low = bc.call_seconds(max(2 * 2 * 1024 * 4096 * r / tc, low_bytes / bw), 2) * 1e6  # two GEMMs, two launches
    rows.append(("low-rank r=d/4 d=4096 M=1024 fp16", low, dense(1024, 4096)))
    return rows


def goals_markdown(results: Sequence[bench.BenchResult]) -> str:
    lines = ["", "## Goals (speedup over dense torch.matmul)", "", "| provider | case | M | goal | measured | met |"]
    lines.append("|---|---|---:|---:|---:|---|")
    for provider, case_prefix, wants_m, target in GOALS:
        for r in results:
            if r.provider.startswith(provider) and r.case.startswith(case_prefix) and wants_m(r.x):
                measured = "" if r.speedup is None else f"{r.speedup:.2f}"
                met = "" if r.speedup is None else ("yes" if r.speedup >= target else "no")
                lines.append(f"| {r.provider} | {r.case} | {r.x} | ≥ {target:.2f} | {measured} | {met} |")
    lines += [
        "",
        "## Static H100 estimates (roofline model, not measured)",
        "",
        "| case | ours µs | dense µs | ratio |",
    ]
    lines.append("|---|---:|---:|---:|")
    for what, ours, dense in static_estimates():
        lines.append(f"| {what} | {ours:.1f} | {dense:.1f} | {dense / ours:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench.common_arguments(
        "Structured layers (circulant, block-circulant, Fastfood, hashed, low rank) vs dense."
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        sizes, m_values = (QUICK_SIZES, QUICK_M_VALUES) if args.quick else (SIZES, M_VALUES)
        dtypes = (torch.float16,) if args.quick else (torch.float16, torch.float32)
        convs = CONV_SHAPES[:1] if args.quick else CONV_SHAPES
        scope = contextlib.nullcontext()
    else:  # the references on CPU: a smoke run
        sizes, m_values, dtypes = CPU_SIZES, CPU_M_VALUES, (torch.float32,)
        convs = CONV_SHAPES[3:] if args.quick else CONV_SHAPES
        scope = reference_only()
    runner = bench.Bench(FAMILY, device=device, baseline=BASELINE)
    with scope:
        add_cases(runner, sizes, m_values, dtypes, device, convs)
        ceil = bench.ceilings(device)
        results = runner.run(ceil=ceil)
    env = bench.Environment.collect(device, ceilings=ceil)
    paths = bench.write_results(results, env, args.out, FAMILY)
    paths["md"].write_text(paths["md"].read_text() + goals_markdown(results))
    print(paths["md"].read_text())
    print("wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()

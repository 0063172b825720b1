"""Benchmark harness: timing, the result schema, writers, and the device's measured ceilings.

Timing: on CUDA, ``triton.testing.do_bench`` medians (and p20/p80) after warm-up, the L2 cleared
between repetitions by do_bench and inputs rotated by :class:`RotatingInputs` so that repeated
calls do not measure the cache; on CPU a ``perf_counter`` loop with the same statistics (used by
the demo; CPU numbers are never reported as kernel speed).

Ceilings: the copy bandwidth (a device-to-device copy, bytes read + written) and the dense
matmul rate (bf16 on CUDA, fp32 on CPU) measured once per device and torch version and cached,
so every result also reads as a fraction of what this machine really reaches.

Results: ``benchmarks/results/<device-slug>/<family>.json`` (environment + one record per case,
provider and x), ``.md`` (a table) and ``.png`` (speedup over the baseline against x, one panel
per case). Run ``python -m slimtorch.core.bench`` to record the ceilings curves themselves.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

# ----------------------------------------------------------------------------- environment


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3' (folder name under results/)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


@dataclass
class Ceilings:
    copy_gbps: float
    matmul_tflops: float
    matmul_dtype: str


@dataclass
class Environment:
    device_name: str
    device_type: str
    sm_count: int | None
    l2_bytes: int | None
    torch_version: str
    triton_version: str | None
    cuda_version: str | None
    python_version: str
    timestamp: str
    ceilings: Ceilings | None = None

    @classmethod
    def collect(cls, device: torch.device | str, *, ceilings: Ceilings | None = None) -> Environment:
        device = torch.device(device)
        sm_count = l2 = None
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            sm_count = props.multi_processor_count
            l2 = getattr(props, "L2_cache_size", None)
        try:
            import triton

            triton_version = triton.__version__
        except ImportError:  # pragma: no cover
            triton_version = None
        return cls(
            device_name=device_name(device),
            device_type=device.type,
            sm_count=sm_count,
            l2_bytes=l2,
            torch_version=torch.__version__,
            triton_version=triton_version,
            cuda_version=torch.version.cuda,
            python_version=platform.python_version(),
            timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            ceilings=ceilings,
        )


# ----------------------------------------------------------------------------- timing


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float


def time_fn(
    fn: Callable[[], object],
    *,
    device: torch.device | str,
    warmup_ms: float = 25.0,
    rep_ms: float = 100.0,
) -> Timing:
    """Median/p20/p80 milliseconds of ``fn()``: do_bench on CUDA, perf_counter on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        from triton.testing import do_bench

        med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return Timing(float(med), float(p20), float(p80))
    fn()  # first call: lazy initialisation, compilation
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6) * 1e3
    for _ in range(max(1, min(100, int(warmup_ms / once)))):
        fn()
    samples = []
    for _ in range(max(5, min(1000, int(rep_ms / once)))):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    q = statistics.quantiles(samples, n=10, method="inclusive")
    return Timing(statistics.median(samples), q[1], q[7])


class RotatingInputs:
    """Cycle through enough independent input sets that repeated calls miss the cache.

    ``make()`` builds one set (a tuple of arguments); sets are made until their total size
    exceeds ``2 × L2`` (CUDA) or ``max_sets`` is reached. Calling the object returns the next set.
    """

    def __init__(self, make: Callable[[], tuple], *, device: torch.device | str, max_sets: int = 16):
        first = make()
        per_set = sum(t.numel() * t.element_size() for t in first if isinstance(t, torch.Tensor))
        device = torch.device(device)
        l2 = 0
        if device.type == "cuda":
            l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20)
        count = 1 if per_set == 0 else min(max_sets, max(1, math.ceil(2 * l2 / per_set)))
        self.sets = [first] + [make() for _ in range(count - 1)]
        self._cycle = itertools.cycle(self.sets)

    def __call__(self) -> tuple:
        return next(self._cycle)


def failing(reason: str | BaseException) -> Callable[..., object]:
    """A benchmark callable (any arguments) that raises ``reason``: :meth:`Bench.run` records it
    as an error row of the results."""
    error = reason if isinstance(reason, BaseException) else RuntimeError(reason)

    def fail(*_args: object, **_kwargs: object) -> object:
        raise error

    return fail


def verified(
    timed: Callable[[], object],
    compute: Callable[[], torch.Tensor],
    reference: Callable[[], torch.Tensor],
    bound: float,
) -> Callable[[], object]:
    """``timed`` if ``compute()`` runs and matches ``reference()`` within ``bound`` (relative
    error), else a :func:`failing` callable saying why: a wrong or broken provider is reported in
    the results, never timed."""
    from slimtorch.core.metrics import rel_error

    try:
        error = rel_error(compute().float(), reference().float())
    except Exception as err:  # fails to compile or launch on this device / shape
        return failing(f"{type(err).__name__}: {err}")
    if not error <= bound:
        return failing(f"wrong result: relative error {error:.2e} > {bound:.0e} against the reference")
    return timed


# ----------------------------------------------------------------------------- ceilings


def _copy_gbps(elements: int, device: torch.device) -> float:
    src = torch.empty(elements, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    t_copy = time_fn(lambda: dst.copy_(src), device=device).median_ms
    return 2 * src.numel() * src.element_size() / (t_copy * 1e-3) / 1e9


def _measure_ceilings(device: torch.device) -> Ceilings:
    if device.type == "cuda":
        copy_elems, n, dtype = 2**28, 8192, torch.bfloat16  # 512 MiB of bf16 each way
    else:
        copy_elems, n, dtype = 2**25, 1024, torch.float32
    copy_gbps = _copy_gbps(copy_elems, device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t_mm = time_fn(lambda: a @ b, device=device).median_ms
    tflops = 2 * n**3 / (t_mm * 1e-3) / 1e12
    return Ceilings(copy_gbps=copy_gbps, matmul_tflops=tflops, matmul_dtype=str(dtype).replace("torch.", ""))


def ceilings(device: torch.device | str, *, refresh: bool = False) -> Ceilings:
    """Measured copy bandwidth and matmul rate of ``device``, cached per device and torch version."""
    device = torch.device(device)
    root = Path(os.environ.get("SLIMTORCH_CACHE_DIR") or Path.home() / ".cache" / "slimtorch")
    path = root / f"ceilings-{device_slug(device_name(device))}-torch{torch.__version__}.json"
    if path.is_file() and not refresh:
        return Ceilings(**json.loads(path.read_text()))
    measured = _measure_ceilings(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(measured)))
    return measured


# ----------------------------------------------------------------------------- results


@dataclass
class BenchResult:
    """One (case, x, provider) measurement. ``x`` is the swept size (batch or M)."""

    family: str
    case: str
    provider: str
    x: int
    median_ms: float
    p20_ms: float
    p80_ms: float
    shape: dict[str, object] = field(default_factory=dict)
    dtype: str = ""
    flops: float | None = None
    bytes: float | None = None
    tflops: float | None = None
    gbps: float | None = None
    pct_peak_flops: float | None = None
    pct_peak_bw: float | None = None
    speedup: float | None = None
    error: str | None = None


def make_result(
    *,
    family: str,
    case: str,
    provider: str,
    x: int,
    timing: Timing,
    shape: dict[str, object] | None = None,
    dtype: str = "",
    flops: float | None = None,
    nbytes: float | None = None,
    ceil: Ceilings | None = None,
) -> BenchResult:
    """Fill the derived fields (TFLOP/s, GB/s, % of the measured ceilings) from a timing."""
    seconds = timing.median_ms * 1e-3
    tflops = flops / seconds / 1e12 if flops else None
    gbps = nbytes / seconds / 1e9 if nbytes else None
    return BenchResult(
        family=family,
        case=case,
        provider=provider,
        x=x,
        median_ms=timing.median_ms,
        p20_ms=timing.p20_ms,
        p80_ms=timing.p80_ms,
        shape=dict(shape or {}),
        dtype=dtype,
        flops=flops,
        bytes=nbytes,
        tflops=tflops,
        gbps=gbps,
        pct_peak_flops=100 * tflops / ceil.matmul_tflops if tflops and ceil else None,
        pct_peak_bw=100 * gbps / ceil.copy_gbps if gbps and ceil else None,
    )


def fill_speedups(results: Sequence[BenchResult], baseline: str) -> None:
    """speedup = baseline median / provider median, within the same (case, x)."""
    base = {(r.case, r.x): r.median_ms for r in results if r.provider == baseline and r.error is None}
    for r in results:
        b = base.get((r.case, r.x))
        r.speedup = b / r.median_ms if b is not None and r.error is None and r.median_ms > 0 else None


class Bench:
    """Collects providers side by side for one family and times them.

    >>> bench = Bench("sparse", device="cuda", baseline="torch")
    >>> bench.add("4096x4096", x=16, provider="ours", fn=..., flops=..., nbytes=...)
    >>> results = bench.run()
    """

    def __init__(self, family: str, *, device: torch.device | str, baseline: str | None = None):
        self.family = family
        self.device = torch.device(device)
        self.baseline = baseline
        self._entries: list[dict] = []

    def add(
        self,
        case: str,
        *,
        x: int,
        provider: str,
        fn: Callable[[], object],
        shape: dict[str, object] | None = None,
        dtype: str = "",
        flops: float | None = None,
        nbytes: float | None = None,
    ) -> None:
        self._entries.append(
            dict(
                case=case,
                x=x,
                provider=provider,
                fn=fn,
                shape=shape,
                dtype=dtype,
                flops=flops,
                nbytes=nbytes,
            )
        )

    def run(self, *, progress: bool = True, ceil: Ceilings | None = None) -> list[BenchResult]:
        from tqdm.auto import tqdm

        ceil = ceil if ceil is not None else ceilings(self.device)
        results = []
        for entry in tqdm(self._entries, desc=f"bench {self.family}", disable=not progress):
            entry = dict(entry)
            fn = entry.pop("fn")
            try:
                timing = time_fn(fn, device=self.device)
                results.append(make_result(family=self.family, timing=timing, ceil=ceil, **entry))
            except Exception as err:  # a provider that cannot run this shape is reported, not fatal
                nan = Timing(math.nan, math.nan, math.nan)
                r = make_result(family=self.family, timing=nan, **entry)
                r.error = f"{type(err).__name__}: {err}"[:300]
                results.append(r)
        if self.baseline:
            fill_speedups(results, self.baseline)
        return results


# ----------------------------------------------------------------------------- writers


def _fmt(value: float | None, spec: str) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown_table(results: Sequence[BenchResult], env: Environment) -> str:
    lines = [
        f"# {results[0].family if results else ''} on {env.device_name}",
        "",
        f"torch {env.torch_version}, triton {env.triton_version}, CUDA {env.cuda_version}, "
        f"SMs {env.sm_count}, {env.timestamp}.",
    ]
    if env.ceilings:
        c = env.ceilings
        lines.append(
            f"Measured ceilings: copy {c.copy_gbps:.0f} GB/s, {c.matmul_dtype} matmul {c.matmul_tflops:.1f} TFLOP/s."
        )
    lines += [
        "",
        "| case | x | provider | dtype | median ms | p20–p80 ms | TFLOP/s | GB/s "
        "| % peak FLOP/s | % peak BW | speedup |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.case} | {r.x} | {r.provider} | {r.dtype} | error: {r.error} | | | | | | |")
            continue
        lines.append(
            f"| {r.case} | {r.x} | {r.provider} | {r.dtype} | {r.median_ms:.4f} | "
            f"{r.p20_ms:.4f}–{r.p80_ms:.4f} | {_fmt(r.tflops, '.2f')} | {_fmt(r.gbps, '.1f')} | "
            f"{_fmt(r.pct_peak_flops, '.1f')} | {_fmt(r.pct_peak_bw, '.1f')} | {_fmt(r.speedup, '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def plot_results(results: Sequence[BenchResult], path: Path, *, title: str = "") -> None:
    """One panel per case: speedup over the baseline (or throughput) against x, log2 x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.error is None and not math.isnan(r.median_ms)]
    cases = list(dict.fromkeys(r.case for r in ok))
    if not cases:
        return
    use_speedup = any(r.speedup is not None for r in ok)
    ncols = min(3, len(cases))
    nrows = math.ceil(len(cases) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    for ax, case in zip(axes.flat, cases, strict=False):
        rows = [r for r in ok if r.case == case]
        for provider in dict.fromkeys(r.provider for r in rows):
            pts = sorted((r.x, r) for r in rows if r.provider == provider)
            if use_speedup:
                ys = [r.speedup for _, r in pts]
            else:
                ys = [r.tflops if r.tflops is not None else r.gbps for _, r in pts]
            ax.plot([x for x, _ in pts], ys, marker="o", label=provider)
        ax.set_xscale("log", base=2)
        ax.set_title(case, fontsize=9)
        ax.set_xlabel("x")
        ax.set_ylabel("speedup over baseline" if use_speedup else "TFLOP/s or GB/s")
        if use_speedup:
            ax.axhline(1.0, color="gray", linewidth=0.8, linestyle="--")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(cases) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def save_figure(fig: object, path: Path) -> None:
    """Lay out, write as PNG and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]
    plt.close(fig)


def write_report(stem: Path, payload: dict, markdown: str, draw: Callable[[Path], None]) -> dict[str, Path]:
    """Write ``stem.json`` (payload), ``stem.md`` (markdown) and ``stem.png`` (``draw(path)``)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {ext: stem.with_name(f"{stem.name}.{ext}") for ext in ("json", "md", "png")}
    paths["json"].write_text(json.dumps(payload, indent=1, default=str) + "\n")
    paths["md"].write_text(markdown)
    draw(paths["png"])
    return paths


def write_results(
    results: Sequence[BenchResult], env: Environment, out_dir: str | Path, family: str
) -> dict[str, Path]:
    """Write ``<out_dir>/<device-slug>/<family>.{json,md,png}``; return the paths."""
    payload = {"environment": dataclasses.asdict(env), "results": [dataclasses.asdict(r) for r in results]}
    return write_report(
        Path(out_dir) / device_slug(env.device_name) / family,
        payload,
        markdown_table(results, env),
        lambda png: plot_results(results, png, title=f"{family} on {env.device_name}"),
    )


def read_results(path: str | Path) -> tuple[dict, list[BenchResult]]:
    """Load a JSON written by :func:`write_results` (environment dict, results)."""
    payload = json.loads(Path(path).read_text())
    return payload["environment"], [BenchResult(**r) for r in payload["results"]]


# ----------------------------------------------------------------------------- CLI


def common_arguments(description: str) -> argparse.ArgumentParser:
    """The flags every ``python -m slimtorch.<pkg>.bench`` accepts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default="benchmarks/results", help="results folder (default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="a few small shapes only (smoke run)")
    return parser


def _ceiling_sweep(device: torch.device, quick: bool) -> list[BenchResult]:
    bench = Bench("core", device=device)
    gpu = device.type == "cuda"
    copy_sizes = [2**p for p in (range(16, 29, 2) if gpu else range(14, 25, 2))]
    mm_sizes = [512, 1024, 2048, 4096, 8192] if gpu else [128, 256, 512, 1024]
    dtype = torch.bfloat16 if gpu else torch.float32
    if quick:
        copy_sizes, mm_sizes = copy_sizes[:3], mm_sizes[:2]
    for n in copy_sizes:
        src = torch.randn(n, device=device, dtype=torch.bfloat16)
        dst = torch.empty_like(src)
        bench.add(
            "copy (bytes read + written)",
            x=n,
            provider="torch copy_",
            fn=lambda s=src, d=dst: d.copy_(s),
            shape={"elements": n},
            dtype="bfloat16",
            nbytes=4 * n,
        )
    for n in mm_sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        bench.add(
            f"{str(dtype)[6:]} matmul n×n×n",
            x=n,
            provider="torch matmul",
            fn=lambda a=a, b=b: a @ b,
            shape={"n": n},
            dtype=str(dtype)[6:],
            flops=2 * n**3,
        )
    return bench.run()


def main(argv: Sequence[str] | None = None) -> None:
    parser = common_arguments("Measure this device's copy bandwidth and dense matmul rate.")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    ceil = ceilings(device, refresh=True)
    env = Environment.collect(device, ceilings=ceil)
    results = _ceiling_sweep(device, args.quick)
    paths = write_results(results, env, args.out, "core")
    print(
        f"{env.device_name}: copy {ceil.copy_gbps:.0f} GB/s, {ceil.matmul_dtype} matmul "
        f"{ceil.matmul_tflops:.1f} TFLOP/s"
    )
    print("wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()

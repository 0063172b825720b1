"""``python -m slimtorch.zoo.cpu_path``: the zoo's CPU path against the same torchvision model.

On a CPU tensor every convops layer runs its pure-torch reference (core's backend rule), so a zoo
model on CPU should cost what torchvision's model of the same architecture costs. This measures
the ratio t(zoo) / t(torchvision) at batch 8, 224x224, eval, no gradients, with ``--threads``
intra-op threads (2 by default): the two models are timed interleaved in one process (one
forward of each per round, after the same warm-up), and the ratio of their medians is reported.
Writes ``benchmarks/results/cpu/zoo_cpu_path.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

# zoo model -> torchvision builder of the same architecture
PAIRS = {
    "slim_mobilenetv2_100": "mobilenet_v2",
    "slim_shufflenetv2_x1_0": "shufflenet_v2_x1_0",
    "slim_squeezenet1_1": "squeezenet1_1",
    "slim_mobilenetv3_large_100": "mobilenet_v3_large",
}


def measure(name: str, batch: int = 8, size: int = 224, rounds: int = 31, warmup: int = 3) -> dict:
    """Median ms of the zoo model and of torchvision's, timed interleaved, and their ratio."""
    import torchvision

    import slimtorch.zoo as zoo

    torch.manual_seed(0)
    models = {
        "zoo": zoo.create_model(name).eval(),
        "torchvision": getattr(torchvision.models, PAIRS[name])().eval(),
    }
    x = torch.randn(batch, 3, size, size)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in models.values():
                model(x)
        for _ in range(rounds):
            for key, model in models.items():
                start = time.perf_counter()
                model(x)
                times[key].append((time.perf_counter() - start) * 1e3)
    zoo_ms, tv_ms = (statistics.median(times[k]) for k in ("zoo", "torchvision"))
    return {
        "model": name,
        "torchvision": PAIRS[name],
        "zoo_ms": zoo_ms,
        "torchvision_ms": tv_ms,
        "ratio": zoo_ms / tv_ms,
        "batch": batch,
        "size": size,
        "rounds": rounds,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu"))
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        parser.error(f"--threads and --rounds: expected positive ints, got {args.threads} and {args.rounds}")
    torch.set_num_threads(args.threads)
    rows = [measure(name, rounds=args.rounds) for name in args.models]
    lines = [
        f"CPU path, batch 8, 224x224, {args.threads} threads, torch {torch.__version__}, interleaved medians",
        "",
        "| zoo model | torchvision | zoo ms | torchvision ms | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['model']} | {r['torchvision']} | {r['zoo_ms']:.1f} | {r['torchvision_ms']:.1f} | {r['ratio']:.2f}x |"
        for r in rows
    ]
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "zoo_cpu_path.json").write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2))
    (args.out / "zoo_cpu_path.md").write_text(table + "\n")


if __name__ == "__main__":
    main()

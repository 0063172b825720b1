"""slimtorch-structured's accuracy goal on the digits task (not in CI; ``nox -s structured_goal`` or
``python -m slimtorch.compress.structured_goal [--seeds 0,1,2] [--out DIR]``; writes
``benchmarks/results/cpu/structured_goal.{json,md,png}``):

block-circulant layers (CirCNN, Ding et al. 2017) with b = 4 on LeNet-300-100's two hidden layers
(784 -> 300 and 300 -> 100; the 100 -> 10 classifier has no size b divides and stays dense),
fine-tuned, within 1 point of the dense model on the held-out digits.

Per seed: the dense model trains for :data:`EPOCHS` (Adam, lr 1e-3, batch 64); ``structure_``
projects it onto the nearest block-circulant matrices (least squares: the mean along each
block's circulant diagonals); that model is fine-tuned for :data:`FINE_TUNE_EPOCHS` with the same
optimizer. Two references: the projection before fine-tuning, and the same block-circulant
model trained from scratch for ``EPOCHS + FINE_TUNE_EPOCHS``. Seeds change the initialisation and
the batch order; the train/test split stays fixed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from pathlib import Path

import torch

from slimtorch.compress import tasks
from slimtorch.core import bench

EPOCHS = 10
FINE_TUNE_EPOCHS = 10
BLOCK_SIZE = 4
GOAL_POINTS = 1.0


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def structured_goal(seed: int, task: tasks.Task, progress: bool) -> dict:
    from slimtorch.structured import BlockCirculantConfig, structure_

    config = BlockCirculantConfig(block_size=BLOCK_SIZE)
    torch.manual_seed(seed)
    dense = tasks.train(tasks.lenet300_100(), task, EPOCHS, seed=seed, progress=progress, desc=f"dense seed {seed}")
    report = structure_(copy.deepcopy(dense), config)
    projected = tasks.evaluate(report.model, task)
    tuned = tasks.train(report.model, task, FINE_TUNE_EPOCHS, seed=seed, progress=progress, desc="fine-tune")
    torch.manual_seed(seed)
    scratch = structure_(tasks.lenet300_100(), config).model
    tasks.train(scratch, task, EPOCHS + FINE_TUNE_EPOCHS, seed=seed, progress=progress, desc="from scratch")
    top1_dense, top1_tuned = tasks.evaluate(dense, task), tasks.evaluate(tuned, task)
    return {
        "seed": seed,
        "converted": sorted(report.converted),
        "params_dense": _params(dense),
        "params_block_circulant": _params(tuned),
        "top1_dense": top1_dense,
        "top1_projected": projected,
        "top1_fine_tuned": top1_tuned,
        "top1_from_scratch": tasks.evaluate(scratch, task),
        "delta_points": 100 * (top1_tuned - top1_dense),
    }


def _table(rows: list[dict], seconds: float) -> str:
    r0 = rows[0]
    lines = [
        f"LeNet-300-100 on the held-out digits, block-circulant b = {BLOCK_SIZE} on layers {r0['converted']} "
        f"({r0['params_dense']:,} -> {r0['params_block_circulant']:,} parameters, "
        f"{r0['params_dense'] / r0['params_block_circulant']:.2f}x fewer); goal: fine-tuned within "
        f"{GOAL_POINTS:g} point of dense.",
        "",
        "| seed | dense % | projected % | fine-tuned % | Δ points | from scratch % |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    keys = ("top1_dense", "top1_projected", "top1_fine_tuned", "delta_points", "top1_from_scratch")

    def line(label: str, v: dict) -> str:
        return (
            f"| {label} | {100 * v['top1_dense']:.2f} | {100 * v['top1_projected']:.2f} | "
            f"{100 * v['top1_fine_tuned']:.2f} | {v['delta_points']:+.2f} | {100 * v['top1_from_scratch']:.2f} |"
        )

    lines += [line(str(r["seed"]), r) for r in rows]
    mean = {k: statistics.mean(r[k] for r in rows) for k in keys}
    lines.append(line("mean", mean))
    met = "met" if mean["delta_points"] >= -GOAL_POINTS else "not met"
    lines += ["", f"Goal {met}: mean Δ {mean['delta_points']:+.2f} points; {len(rows)} seeds, {seconds:.0f} s (CPU)."]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    keys = (
        ("top1_dense", "dense"),
        ("top1_fine_tuned", "block-circulant, fine-tuned"),
        ("top1_from_scratch", "from scratch"),
    )
    for i, (key, label) in enumerate(keys):
        ax.bar([j + 0.27 * (i - 1) for j in range(len(rows))], [100 * r[key] for r in rows], 0.27, label=label)
    ax.set_xticks(range(len(rows)), [f"seed {r['seed']}" for r in rows])
    ax.set_ylim(min(100 * r[k] for r in rows for k, _ in keys) - 2, 100)
    ax.set_ylabel("top-1 % (held-out digits)")
    ax.set_title(f"LeNet-300-100, block-circulant b = {BLOCK_SIZE} hidden layers", fontsize=9)
    ax.legend(fontsize=8)
    bench.save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="benchmarks/results/cpu")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    task, start = tasks.digits_task(), time.perf_counter()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rows.append(structured_goal(seed, task, not args.no_progress))
        print(rows[-1], flush=True)
    seconds = time.perf_counter() - start
    table = _table(rows, seconds)
    print(table)
    env = bench.Environment.collect("cpu")
    payload = {
        "environment": dataclasses.asdict(env),
        "settings": {"epochs": EPOCHS, "fine_tune_epochs": FINE_TUNE_EPOCHS, "block_size": BLOCK_SIZE},
        "rows": rows,
        "seconds": seconds,
    }
    bench.write_report(Path(args.out) / "structured_goal", payload, table, lambda png: _plot(rows, png))


if __name__ == "__main__":
    main()

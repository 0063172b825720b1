"""XNOR-Net / BNN on the digits task: binary weights *and* activations against float, over seeds.

    python -m slimtorch.compress.quant_goals.xnor [--seeds 0,1,2] [--epochs 15] [--out benchmarks/results/cpu]

No goal number is set for this part; the script reports what binarisation costs on the embedded
task. Models: LeNet-5 (Caffe 20-50-500, as in Deep Compression), float (``tasks.lenet5``) and a
binary one with the papers' layout: the first conv and the last linear stay real (XNOR-Net, BNN,
Bi-Real Net all keep them), the inner conv 20→50 (5x5) and linear 800→500 binarise weights and
activations, each followed by BatchNorm (which centres the next sign's input; no ReLU, whose
output would all be sign +1):

    conv 1→20 → BN → pool → [sign → binconv 20→50] → BN → pool → [sign → binlinear 800→500] → BN → linear 500→10

in three flavours of :mod:`slimtorch.quant.binary`: BNN (hard-tanh STE, no activation scale),
XNOR-Net (hard-tanh STE, β / K activation scales) and XNOR-Net with Bi-Real's ApproxSign. All are
trained alike (Adam, lr 1e-3, batch 64, the same epochs; binary latent weights clipped to [−1, 1]
after each step, BNN's Algorithm 1), then packed (``freeze_``: 32 sign bits per int32) and
evaluated through the packed layers (xnor-popcount; the CPU reference of ``xnor_mm`` /
``xnor_conv2d``). Size: the compressed file (``slimtorch.core.container``, raw coder) beside the
float model's. Top-1 on the held-out split; seeds change the initialisation and the batch order.
Writes ``quant_goal_xnor.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from slimtorch.compress import tasks
from slimtorch.core import bench, container
from slimtorch.quant.binary import BinaryActivationConv2d, BinaryActivationLinear, clip_latent_weights_, freeze_

EPOCHS = 15
# flavour -> (scale_activations, ste)
FLAVOURS = {"BNN": (False, "bnn"), "XNOR-Net": (True, "bnn"), "XNOR-Net + ApproxSign": (True, "approx")}


def binary_lenet5(scale_activations: bool, ste: str) -> nn.Sequential:
    """LeNet-5 (Caffe 20-50-500) with binary inner layers (module docstring)."""
    options = {"scale_activations": scale_activations, "ste": ste}
    return nn.Sequential(
        nn.Conv2d(1, 20, 5),  # 28 → 24, real first layer
        nn.BatchNorm2d(20),
        nn.MaxPool2d(2),  # → 12
        BinaryActivationConv2d(20, 50, 5, **options),  # → 8
        nn.BatchNorm2d(50),
        nn.MaxPool2d(2),  # → 4
        nn.Flatten(),
        BinaryActivationLinear(800, 500, **options),
        nn.BatchNorm1d(500),
        nn.Linear(500, 10),  # real last layer
    )


def _file_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return container.save_compressed(model, Path(tmp) / "m.safetensors", coder="raw").file_bytes


def run_seed(seed: int, epochs: int, task: tasks.Task, progress: bool) -> list[dict]:
    torch.manual_seed(seed)
    model = tasks.lenet5(caffe=True)
    tasks.train(model, task, epochs, seed=seed, progress=progress, desc=f"float seed {seed}")
    float_bytes = _file_bytes(model)
    rows = [
        {
            "model": "float LeNet-5",
            "seed": seed,
            "top1": tasks.evaluate(model, task),
            "file_bytes": float_bytes,
            "ratio": 1.0,
        }
    ]
    for name, (scale, ste) in FLAVOURS.items():
        torch.manual_seed(seed)
        model = binary_lenet5(scale, ste)
        tasks.train(model, task, epochs, seed=seed, after_step=clip_latent_weights_, progress=progress,
                    desc=f"{name} seed {seed}")  # fmt: skip
        latent_top1 = tasks.evaluate(model, task)
        freeze_(model)
        packed_bytes = _file_bytes(model)
        rows.append(
            {
                "model": name,
                "seed": seed,
                "top1": tasks.evaluate(model, task),  # through the packed layers
                "top1_latent": latent_top1,  # the float training forward, for comparison
                "file_bytes": packed_bytes,
                "ratio": float_bytes / packed_bytes,
            }
        )
    return rows


def _summary(rows: list[dict]) -> list[dict]:
    out = []
    for name in ["float LeNet-5", *FLAVOURS]:
        rs = [r for r in rows if r["model"] == name]
        top1 = [100 * r["top1"] for r in rs]
        out.append(
            {
                "model": name,
                "top1_mean": statistics.mean(top1),
                "top1_min": min(top1),
                "top1_max": max(top1),
                "file_bytes": statistics.mean(r["file_bytes"] for r in rs),
                "ratio": statistics.mean(r["ratio"] for r in rs),
                "packed_equals_latent": all(r.get("top1_latent", r["top1"]) == r["top1"] for r in rs),
            }
        )
    return out


def _table(summary: list[dict], rows: list[dict], seeds: list[int], epochs: int, seconds: float) -> str:
    base = summary[0]["top1_mean"]
    lines = [
        "| model | top-1 % (mean, min-max) | Δ points vs float | file bytes | smaller than float |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['model']} | {s['top1_mean']:.2f} ({s['top1_min']:.2f}-{s['top1_max']:.2f}) | "
            f"{s['top1_mean'] - base:+.2f} | {s['file_bytes']:,.0f} | {s['ratio']:.1f}x |"
        )
    same = all(s["packed_equals_latent"] for s in summary)
    lines += [
        "",
        f"LeNet-5 (Caffe 20-50-500) on the digits task, {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
        f"{epochs} epochs each, Adam lr 1e-3; binary rows evaluated through the packed layers "
        f"({'same top-1 as' if same else 'NOT always the same top-1 as'} their float training forward). "
        "First conv and last linear real; no goal number is set for this part.",
        "",
        "| run | " + " | ".join(s["model"] for s in summary) + " |",
        "|---|" + "---:|" * len(summary),
    ]
    for seed in seeds:
        cells = [next(r for r in rows if r["seed"] == seed and r["model"] == s["model"]) for s in summary]
        lines.append(f"| seed {seed} | " + " | ".join(f"{100 * c['top1']:.2f}" for c in cells) + " |")
    return "\n".join(lines) + f"\n\n{seconds:.0f} s on {platform.processor() or platform.machine()}\n"


def _plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = [s["model"] for s in summary]
    means = [s["top1_mean"] for s in summary]
    err = [[s["top1_mean"] - s["top1_min"] for s in summary], [s["top1_max"] - s["top1_mean"] for s in summary]]
    bars = ax.bar(range(len(summary)), means, yerr=err, capsize=4, color=["0.6"] + ["C0"] * (len(summary) - 1))
    for bar, s in zip(bars, summary, strict=True):
        ax.annotate(f"{s['file_bytes'] / 1024:.0f} KiB\n{s['ratio']:.1f}x smaller", (bar.get_x() + 0.4, 0.5),
                    xycoords=("data", "axes fraction"), ha="center", fontsize=8, color="white")  # fmt: skip
    ax.set_xticks(range(len(summary)), names, fontsize=8)
    ax.set_ylim(min(s["top1_min"] for s in summary) - 3, 100)
    ax.set_ylabel("top-1 % (held-out digits; mean, min-max over seeds)")
    ax.set_title("LeNet-5 20-50-500 on digits: binary weights and activations (packed) vs float", fontsize=9)
    bench.save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--out", default="benchmarks/results/cpu")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    task = tasks.digits_task()
    start = time.perf_counter()
    rows = []
    for seed in seeds:
        rows += run_seed(seed, args.epochs, task, not args.no_progress)
        print(rows[-len(FLAVOURS) - 1 :], flush=True)
    seconds = time.perf_counter() - start
    summary = _summary(rows)
    table = _table(summary, rows, seeds, args.epochs, seconds)
    print(table)
    payload = {
        "device": "cpu",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "seeds": seeds,
        "epochs": args.epochs,
        "summary": summary,
        "runs": rows,
        "seconds": seconds,
    }
    bench.write_report(Path(args.out) / "quant_goal_xnor", payload, table, lambda png: _plot(summary, png))


if __name__ == "__main__":
    main()

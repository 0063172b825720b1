"""Goal: product quantization (Q-CNN, Wu et al. 2016) of LeNet-300-100's three FC layers to >= 16x
smaller than fp32, within 1 top-1 point of float on the digits task after fine-tuning the codebooks.

    python -m slimtorch.compress.quant_goals.pq [--seeds 0,1,2] [--grid 4x4,8x16,...] [--out benchmarks/results/cpu]

Per seed: the float model is trained (Adam, lr 1e-3, batch 64, :data:`EPOCHS` epochs). Then, for each
(d, C) of the grid, a copy is product-quantized (``quantize_`` with ``ProductQuantConfig``: sub-vectors
of d weights along K, one codebook of C centroids per subspace shared by all rows, k-means++ seeded
by the run's seed, fp32 codebooks), its codebooks alone are fine-tuned (``layer.trainable()``; codes and
biases fixed) for :data:`FINETUNE_EPOCHS` epochs (Adam, lr :data:`FINETUNE_LR`), and the centroids are
then stored in fp16 (``cast_codebooks``), the model that is evaluated and counted. The control
'float + epochs' is the float model trained for the same extra epochs at the same lr.

Size: **weight ratio** = 4 bytes × the three layers' N·K weights / (packed codes + fp16 codebooks bytes);
**file ratio** = the fp32 model's compressed file / the quantized one's (``slimtorch.core.container``,
raw coder: biases in fp32 and the manifest included). Top-1 on the held-out split (no choice is made on
it; the grid is reported whole). Writes ``quant_goal_pq.{json,md,png}``. Seeds change the
initialisation, the batch order and the k-means++ seeds; the train/test split stays fixed.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from slimtorch.compress import tasks
from slimtorch.core import bench, container
from slimtorch.quant.api import quantize_
from slimtorch.quant.product import ProductQuantConfig, product_layers

EPOCHS = 10
FINETUNE_EPOCHS = 5
FINETUNE_LR = 5e-4
GOAL_RATIO = 16.0
GOAL_POINTS = 1.0
GRID = ((4, 4), (4, 16), (8, 4), (8, 16), (16, 4), (16, 16), (32, 16))  # (d, C)


def _file_bytes(model: torch.nn.Module) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return container.save_compressed(model, Path(tmp) / "m.safetensors", coder="raw").file_bytes


def run_seed(seed: int, grid: list[tuple[int, int]], task: tasks.Task, progress: bool) -> list[dict]:
    torch.manual_seed(seed)
    model = tasks.lenet300_100()
    tasks.train(model, task, EPOCHS, seed=seed, progress=progress, desc=f"float seed {seed}")
    float_top1 = tasks.evaluate(model, task)
    fp32_file = _file_bytes(model)
    fp32_weights = 4 * sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    control = copy.deepcopy(model)
    tasks.train(control, task, FINETUNE_EPOCHS, lr=FINETUNE_LR, seed=seed * 100 + 99, progress=progress,
                desc=f"float control seed {seed}")  # fmt: skip
    control_top1 = tasks.evaluate(control, task)
    rows = []
    for d, c in grid:
        start = time.perf_counter()
        quantized = copy.deepcopy(model)
        report = quantize_(quantized, ProductQuantConfig(sub_dim=d, centroids=c, seed=seed))
        kmeans_s = time.perf_counter() - start
        layers = list(product_layers(quantized))
        before = tasks.evaluate(quantized, task)
        for layer in layers:
            layer.trainable()
        tasks.train(quantized, task, FINETUNE_EPOCHS, lr=FINETUNE_LR, seed=seed * 100 + 1, progress=progress,
                    desc=f"d={d} C={c} fine-tune seed {seed}")  # fmt: skip
        for layer in layers:
            layer.trainable(False).cast_codebooks(torch.float16)
        after = tasks.evaluate(quantized, task)
        codes = sum(layer.codes.numel() * layer.codes.element_size() for layer in layers)
        codebooks = sum(layer.codebooks.numel() * layer.codebooks.element_size() for layer in layers)
        # a layer PQ would not shrink stays fp32 (the report says which): its weights count at 4 bytes
        left_float = sum(4 * m.weight.numel() for m in quantized.modules() if isinstance(m, torch.nn.Linear))
        rows.append(
            {
                "seed": seed,
                "sub_dim": d,
                "centroids": c,
                "converted_layers": len(report.converted),
                "skipped": dict(report.skipped),
                "float_top1": float_top1,
                "float_more_epochs_top1": control_top1,
                "pq_top1_before_finetune": before,
                "pq_top1": after,
                "delta_points": 100 * (after - float_top1),
                "delta_points_vs_control": 100 * (after - control_top1),
                "fp32_weight_bytes": fp32_weights,
                "code_bytes": codes,
                "codebook_bytes": codebooks,
                "float_weight_bytes": left_float,
                "weight_ratio": fp32_weights / (codes + codebooks + left_float),
                "fp32_file_bytes": fp32_file,
                "pq_file_bytes": _file_bytes(quantized),
                "file_ratio": fp32_file / _file_bytes(quantized),
                "kmeans_seconds": kmeans_s,
            }
        )
        print(rows[-1], flush=True)
    return rows


def _mean(rows: list[dict], key: str) -> float:
    return statistics.mean(r[key] for r in rows)


def _groups(rows: list[dict]) -> list[tuple[tuple[int, int], list[dict]]]:
    keys = sorted({(r["sub_dim"], r["centroids"]) for r in rows})
    return [(key, [r for r in rows if (r["sub_dim"], r["centroids"]) == key]) for key in keys]


def _table(rows: list[dict], seeds: list[int], seconds: float) -> str:
    lines = [
        "# Product quantization (Q-CNN) of LeNet-300-100 on the digits task",
        "",
        f"Seeds {seeds}; float: Adam lr 1e-3, {EPOCHS} epochs. PQ: all three FC layers (784-300, 300-100, 100-10), "
        "sub-vectors of d weights along K (K padded with zeros where d does not divide it: 100 / 8), one codebook "
        f"of C centroids per subspace shared by all rows, k-means++ (seeded) + Lloyd; codebooks alone fine-tuned "
        f"{FINETUNE_EPOCHS} epochs (Adam lr {FINETUNE_LR}, codes and biases fixed), then stored in fp16. "
        "'float + epochs' = the float model trained for the same extra epochs (a control). Top-1 on the held-out "
        f"split, mean over seeds (per seed in the JSON). {seconds:.0f} s on "
        f"{platform.processor() or platform.machine()} (CPU, torch {torch.__version__}).",
        "",
        "Weight ratio = fp32 weights (4 B × N·K of the three layers) / (packed codes + fp16 codebooks + 4 B × the "
        "weights of a layer left in fp32); file ratio = the fp32 model's compressed file / the PQ model's (raw "
        "coder, fp32 biases and manifest included). A layer whose PQ form would not be smaller than fp32 (with the "
        "fp32 codebooks it is quantized with) stays float: 'PQ layers' counts those converted.",
        "",
        "The goal is judged against the stronger baseline, 'float + epochs' (as many epochs in total as the PQ "
        "model saw): Δ = PQ after fine-tuning − float + epochs, mean over seeds; 'worst seed' is the lowest "
        "per-seed Δ. 'Δ vs float' compares with the float model the PQ model started from.",
        "",
        "| d | C | PQ layers | code bits / weight | weight ratio | file ratio | float top-1 | float + epochs "
        "| PQ before FT | PQ after FT | Δ vs float | Δ vs float + epochs | worst seed "
        f"| goal (≥ {GOAL_RATIO:g}x, within {GOAL_POINTS:g}) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for (d, c), group in _groups(rows):
        ratio, delta = _mean(group, "weight_ratio"), _mean(group, "delta_points_vs_control")
        worst = min(r["delta_points_vs_control"] for r in group)
        bits = 8 * _mean(group, "code_bytes") / (_mean(group, "fp32_weight_bytes") / 4)  # over all weights
        met = "yes" if ratio >= GOAL_RATIO and delta >= -GOAL_POINTS else "no"
        lines.append(
            f"| {d} | {c} | {group[0]['converted_layers']} of 3 | {bits:.2f} | {ratio:.1f}x "
            f"| {_mean(group, 'file_ratio'):.1f}x "
            f"| {100 * _mean(group, 'float_top1'):.2f} | {100 * _mean(group, 'float_more_epochs_top1'):.2f} "
            f"| {100 * _mean(group, 'pq_top1_before_finetune'):.2f} | {100 * _mean(group, 'pq_top1'):.2f} "
            f"| {_mean(group, 'delta_points'):+.2f} | {delta:+.2f} | {worst:+.2f} | {met} |"
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    per_seed = {r["seed"]: r for r in rows}.values()
    float_top1 = 100 * statistics.mean(r["float_top1"] for r in per_seed)
    control_top1 = 100 * statistics.mean(r["float_more_epochs_top1"] for r in per_seed)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in (
        (axes[0], "pq_top1", "codebooks fine-tuned, stored in fp16"),
        (axes[1], "pq_top1_before_finetune", "k-means only (before fine-tuning)"),
    ):
        for i, ((d, c), group) in enumerate(_groups(rows)):
            x, y = _mean(group, "weight_ratio"), 100 * _mean(group, key)
            ax.scatter([x], [y], color=f"C{i}")
            ax.annotate(f"d={d} C={c}", (x, y), fontsize=7, xytext=(4, 4 if i % 2 else -10), textcoords="offset points")
        ax.axhline(float_top1, color="grey", lw=1, label="float (start of PQ)")
        ax.axhline(control_top1, color="k", lw=1, label="float + epochs")
        ax.axhline(control_top1 - GOAL_POINTS, color="k", lw=1, ls="--", label=f"float + epochs − {GOAL_POINTS:g}")
        ax.axvline(GOAL_RATIO, color="C3", lw=1, ls=":", label=f"{GOAL_RATIO:g}x")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("weight bytes: fp32 / (codes + fp16 codebooks)")
        ax.set_title(f"LeNet-300-100 PQ (all FC layers): {title}", fontsize=9)
    axes[0].set_ylabel("top-1 % (held-out digits, mean of seeds)")
    axes[0].legend(fontsize=7, loc="lower left")
    bench.save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--grid", default=",".join(f"{d}x{c}" for d, c in GRID), help="dxC pairs")
    parser.add_argument("--out", default="benchmarks/results/cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--render", help="only rewrite the markdown and plot from this quant_goal_pq.json")
    args = parser.parse_args(argv)
    if args.render:
        payload = json.loads(Path(args.render).read_text())
        for row in payload["rows"]:  # runs before the control column existed
            row.setdefault("delta_points_vs_control", 100 * (row["pq_top1"] - row["float_more_epochs_top1"]))
        table = _table(payload["rows"], payload["seeds"], payload["seconds"])
        print(table)
        bench.write_report(Path(args.out) / "quant_goal_pq", payload, table, lambda png: _plot(payload["rows"], png))
        return
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    grid = [tuple(int(v) for v in pair.split("x")) for pair in args.grid.split(",")]
    task = tasks.digits_task()
    start = time.perf_counter()
    rows = [row for seed in seeds for row in run_seed(seed, grid, task, not args.no_progress)]
    seconds = time.perf_counter() - start
    table = _table(rows, seeds, seconds)
    print(table)
    payload = {
        "goal": f">= {GOAL_RATIO:g}x smaller weights than fp32, within {GOAL_POINTS:g} point of float",
        "device": "cpu",
        "platform": platform.platform(),
        "torch": torch.__version__,
        "seeds": seeds,
        "epochs": EPOCHS,
        "finetune_epochs": FINETUNE_EPOCHS,
        "finetune_lr": FINETUNE_LR,
        "seconds": seconds,
        "rows": rows,
    }
    bench.write_report(Path(args.out) / "quant_goal_pq", payload, table, lambda png: _plot(rows, png))


if __name__ == "__main__":
    main()

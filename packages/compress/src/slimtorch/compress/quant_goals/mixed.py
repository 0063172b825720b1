"""Goal: per-layer mixed precision (``slimtorch.quant.mixed.plan_bits``) under a 6x size budget on
the digits LeNet-5 beats, on accuracy, every uniform format whose file is no larger.

    python -m slimtorch.compress.quant_goals.mixed [--seeds 0,1,2] [--ratio 6] [--finetune-epochs 1] [--out DIR]

Data: the digits task's training split is cut into a fit part (80%) and a validation part (20%,
``compress.goals.validation_split``, seed 0); the float LeNet-5 (6-16-120-84, the classic one)
trains on the fit part (Adam, lr 1e-3, batch 64, :data:`EPOCHS` epochs). Planning looks only at the
validation images: the sensitivity is ``kl_to_float`` (KL of the float model's softmax to the
quantized one's on them), one layer at a time in each of the 13 default candidates (int8, int4
g32/g64/g128, ternary, binary, codebook 2..8 bits) or float. The test split is used only for the
accuracies reported.

Sizes are files: ``slimtorch.core.container.save_compressed(coder="raw")`` (packed buffers as they
are, biases in fp32, the manifest included), ratio = the fp32 model's file / the quantized one's.
The plan's byte budget starts at fp32 file / ratio minus the fp32 file's own manifest and is cut
by any shortfall until the plan's *file* meets the ratio (the quantized manifest is a little
larger). A uniform format is in the comparison when its file is no larger than the plan's.

Post-training first; then, optionally (``--finetune-epochs``, 0 to skip), the plan and every
uniform format of the comparison get the same short quantization-aware fine-tune
(``slimtorch.quant.qat.prepare_qat`` per layer with the layer's config, STE, Adam lr
:data:`FINETUNE_LR` on the fit part, the same batch order), then ``convert_qat``. Seeds change the
initialisation and batch order; the splits stay fixed. Writes ``quant_goal_mixed.{json,md,png}``.
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
import torch.nn.functional as F

from slimtorch.compress import tasks
from slimtorch.compress.goals import validation_split
from slimtorch.core import bench, container
from slimtorch.quant import mixed, qat
from slimtorch.quant.api import WeightConfig, quantize_

EPOCHS = 20
FINETUNE_EPOCHS = 0  # the goal is post-training; --finetune-epochs 1 adds the QAT columns
FINETUNE_LR = 2e-4
RATIO = 6.0


def _file_bytes(model: torch.nn.Module) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return container.save_compressed(model, Path(tmp) / "m.safetensors", coder="raw").file_bytes


@torch.no_grad()
def _test_loss(model: torch.nn.Module, task: tasks.Task) -> float:
    model.eval()
    return F.cross_entropy(model(task.x_test), task.y_test).item()


def _plan_for_file(sens: mixed.Sensitivity, fp32_file: int, ratio: float, model: torch.nn.Module):
    """The least-penalty plan whose compressed file is at most fp32_file / ratio."""
    target = fp32_file / ratio
    limit = int(target) - (fp32_file - sens.fp32_bytes)  # the fp32 manifest's bytes come off first
    for _ in range(8):
        plan = sens.allocate(mixed.SizeBudget(bytes=limit))
        file = _file_bytes(plan.apply(copy.deepcopy(model)).model)
        if file <= target:
            return plan, file
        limit -= int(file - target) + 1
    raise RuntimeError(f"no plan within {target:.0f} file bytes after 8 cuts (last {file})")


def _finetune(model: torch.nn.Module, configs, fit: tasks.Task, seed: int, epochs: int, progress: bool):
    """Quantization-aware fine-tune of the layers in ``configs`` ({fqn: config}, or one config for
    every layer), then the real layers."""
    if isinstance(configs, WeightConfig):
        qat.prepare_qat(model, configs)
    for fqn, config in configs.items() if isinstance(configs, dict) else ():
        qat.prepare_qat(model, config, lambda m, name, fqn=fqn: name == fqn)
    tasks.train(model, fit, epochs, lr=FINETUNE_LR, seed=seed * 100 + 7, progress=progress, desc="QAT")
    return qat.convert_qat(model).model


def run_seed(seed: int, task: tasks.Task, val: tasks.Task, ratio: float, ft_epochs: int, progress: bool) -> dict:
    torch.manual_seed(seed)
    model = tasks.lenet5()
    tasks.train(model, val, EPOCHS, seed=seed, progress=progress, desc=f"float seed {seed}")  # val's train = fit
    fp32_file = _file_bytes(model)
    rows = [{"name": "float", "file_bytes": fp32_file, "top1": tasks.evaluate(model, task)}]
    rows[0]["test_loss"] = _test_loss(model, task)
    for name, config in mixed.DEFAULT_CANDIDATES:
        q = quantize_(copy.deepcopy(model), config).model
        rows.append({"name": name, "file_bytes": _file_bytes(q), "top1": tasks.evaluate(q, task)})
        rows[-1]["test_loss"] = _test_loss(q, task)
    start = time.perf_counter()
    eval_fn = mixed.kl_to_float(model, val.x_test)
    first = mixed.plan_bits(model, eval_fn, mixed.SizeBudget(ratio=ratio), progress=progress)
    plan, plan_file = _plan_for_file(first.sensitivity, fp32_file, ratio, model)
    plan_seconds = time.perf_counter() - start
    q = plan.apply(copy.deepcopy(model)).model
    result = {
        "name": "plan",
        "file_bytes": plan_file,
        "top1": tasks.evaluate(q, task),
        "test_loss": _test_loss(q, task),
        "choices": plan.choices,
        "predicted_bytes": plan.predicted_bytes,
        "predicted_kl": plan.predicted_score,
        "measured_kl": eval_fn(q),
    }
    for r in [*rows, result]:
        r["ratio"] = fp32_file / r["file_bytes"]
    compared = [r for r in rows[1:] if r["file_bytes"] <= plan_file]
    if ft_epochs:
        for r in compared:
            ft = _finetune(copy.deepcopy(model), mixed.FORMATS[r["name"]], val, seed, ft_epochs, progress)
            r["top1_ft"], r["file_bytes_ft"] = tasks.evaluate(ft, task), _file_bytes(ft)
        ft = _finetune(copy.deepcopy(model), plan.configs, val, seed, ft_epochs, progress)
        result["top1_ft"], result["file_bytes_ft"] = tasks.evaluate(ft, task), _file_bytes(ft)
    return {
        "seed": seed,
        "test_images": len(task.y_test),
        "fp32_file_bytes": fp32_file,
        "uniform": rows,
        "plan": result,
        "compared": [r["name"] for r in compared],
        "plan_table": plan.table(),
        "plan_seconds": plan_seconds,
        "beats_ptq": all(result["top1"] > r["top1"] for r in compared),
        "beats_ft": all(result["top1_ft"] > r["top1_ft"] for r in compared) if ft_epochs else None,
    }


def _mean(values) -> float:
    values = list(values)
    return statistics.mean(values) if values else float("nan")


def _table(runs: list[dict], ratio: float, ft_epochs: int, seconds: float) -> str:
    names = [r["name"] for r in runs[0]["uniform"]]
    ft = bool(ft_epochs)
    head = "| format | file bytes | ratio vs fp32 file | top-1 % (PTQ) | test loss |" + (
        f" top-1 % ({ft_epochs}-epoch QAT) |" if ft else ""
    )
    lines = [
        f"LeNet-5 on the digits task, mean of seeds {[r['seed'] for r in runs]}; budget {ratio:g}x smaller "
        "than the fp32 file (raw compressed files, manifests included).",
        "",
        head,
        "|---|---:|---:|---:|---:|" + ("---:|" if ft else ""),
    ]
    for name in [*names, "plan"]:
        rs = [run["plan"] if name == "plan" else next(r for r in run["uniform"] if r["name"] == name) for run in runs]
        cells = [
            f"{_mean(r['file_bytes'] for r in rs):,.0f}",
            f"{_mean(r['ratio'] for r in rs):.2f}x",
            f"{100 * _mean(r['top1'] for r in rs):.2f}",
            f"{_mean(r['test_loss'] for r in rs):.4f}",
        ]
        if ft:
            vals = [r["top1_ft"] for r in rs if "top1_ft" in r]
            cells.append(f"{100 * _mean(vals):.2f}" if len(vals) == len(rs) else "-")
        label = f"**plan_bits ({ratio:g}x)**" if name == "plan" else name
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed (the comparison: uniform formats whose file is no larger than the plan's):", ""]
    lines += [
        "| seed | plan ratio | plan top-1 % | best compared (top-1 %) | beats (PTQ) |"
        + (" plan QAT % | best compared QAT % | beats (QAT) |" if ft else ""),
        "|---|---:|---:|---|---|" + ("---:|---|---|" if ft else ""),
    ]
    for run in runs:
        compared = [r for r in run["uniform"] if r["name"] in run["compared"]]
        best = max(compared, key=lambda r: r["top1"])
        p = run["plan"]
        line = (
            f"| {run['seed']} | {p['ratio']:.2f}x | {100 * p['top1']:.2f} | {best['name']} ({100 * best['top1']:.2f}) "
            f"| {'yes' if run['beats_ptq'] else 'no'} |"
        )
        if ft:
            best_ft = max(compared, key=lambda r: r["top1_ft"])
            line += (
                f" {100 * p['top1_ft']:.2f} | {best_ft['name']} ({100 * best_ft['top1_ft']:.2f}) "
                f"| {'yes' if run['beats_ft'] else 'no'} |"
            )
        lines.append(line)
    wins = sum(bool(run["beats_ptq"]) for run in runs)
    summary = f"The plan beats every compared format post-training in {wins}/{len(runs)} seeds"
    if ft:
        summary += f", after the QAT fine-tune in {sum(bool(run['beats_ft']) for run in runs)}/{len(runs)}"
    margins = [
        100 * (run["plan"]["top1"] - max(r["top1"] for r in run["uniform"] if r["name"] in run["compared"]))
        for run in runs
    ]
    images = runs[0].get("test_images") or len(tasks.digits_task().y_test)
    lines += [
        "",
        f"{summary}; post-training margin {min(margins):+.2f} to {max(margins):+.2f} points "
        f"(one of the {images} test images = {100 / images:.2f} points).",
    ]
    lines += ["", "Per-layer choices:", ""]
    layer_names = list(runs[0]["plan"]["choices"])
    lines += ["| seed | " + " | ".join(layer_names) + " |", "|---|" + "---|" * len(layer_names)]
    for run in runs:
        lines.append(f"| {run['seed']} | " + " | ".join(run["plan"]["choices"][n] for n in layer_names) + " |")
    lines += ["", f"Seed {runs[0]['seed']}'s plan and sensitivities (KL to float on the validation images):", ""]
    lines += [runs[0]["plan_table"], f"{len(runs)} seeds, {seconds:.0f} s on {platform.processor() or 'CPU'}\n"]
    return "\n".join(lines)


def _plot(runs: list[dict], ratio: float, path: Path) -> None:
    """Left: every format; right: the region around the budget, zoomed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in runs[0]["uniform"]][1:]
    points = {}
    for name in names:
        rs = [next(r for r in run["uniform"] if r["name"] == name) for run in runs]
        points[name] = (_mean(r["ratio"] for r in rs), 100 * _mean(r["top1"] for r in rs))
    plan = (_mean(run["plan"]["ratio"] for run in runs), 100 * _mean(run["plan"]["top1"] for run in runs))
    float_top1 = 100 * _mean(run["uniform"][0]["top1"] for run in runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, zoom in zip(axes, (False, True), strict=True):
        shown = {n: xy for n, xy in points.items() if not zoom or (4.5 <= xy[0] <= 8.0 and xy[1] >= plan[1] - 2)}
        ax.scatter([x for x, _ in shown.values()], [y for _, y in shown.values()], color="tab:blue", s=18)
        for k, (name, (x, y)) in enumerate(sorted(shown.items(), key=lambda kv: kv[1])):
            offset = (4, 6 if k % 2 else -10) if zoom else (3, 2)
            ax.annotate(name, (x, y), fontsize=7, xytext=offset, textcoords="offset points")
        ax.scatter(*plan, color="tab:red", marker="*", s=140, label=f"plan_bits ({ratio:g}x budget)", zorder=3)
        ax.axhline(float_top1, color="grey", ls="--", lw=0.8, label="fp32")
        ax.axvline(ratio, color="tab:red", ls=":", lw=0.8)
        ax.set_xlabel("file size ratio vs fp32 (raw compressed file)")
        ax.set_ylabel("top-1 % (held-out digits, post-training)")
        if zoom:
            ax.set_xlim(4.5, 8.0)
            ax.set_title("zoom: files near the budget (right of the dotted line: smaller)", fontsize=9)
        else:
            ax.set_xscale("log")
            ax.set_title(f"LeNet-5 digits: uniform formats vs mixed precision, mean of {len(runs)} seeds", fontsize=9)
            ax.legend(fontsize=8, loc="lower left")
    bench.save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ratio", type=float, default=RATIO)
    parser.add_argument("--finetune-epochs", type=int, default=FINETUNE_EPOCHS)
    parser.add_argument("--out", default="benchmarks/results/cpu")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--replot", help="rewrite the .md and .png from this quant_goal_mixed.json (no runs)")
    args = parser.parse_args(argv)
    if args.replot:
        payload = json.loads(Path(args.replot).read_text())
        runs, ratio = payload["runs"], payload["ratio"]
        table = _table(runs, ratio, payload["finetune_epochs"], payload["seconds"])
        bench.write_report(Path(args.out) / "quant_goal_mixed", payload, table, lambda png: _plot(runs, ratio, png))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    task = tasks.digits_task()
    val = validation_split(task)  # train = fit part of the training split, test = its held-out 20%
    start = time.perf_counter()
    runs = []
    for seed in seeds:
        runs.append(run_seed(seed, task, val, args.ratio, args.finetune_epochs, not args.no_progress))
        p = runs[-1]["plan"]
        print(f"seed {seed}: plan {p['ratio']:.2f}x top-1 {100 * p['top1']:.2f} beats {runs[-1]['beats_ptq']}",
              flush=True)  # fmt: skip
    seconds = time.perf_counter() - start
    table = _table(runs, args.ratio, args.finetune_epochs, seconds)
    print(table)
    payload = {
        "device": "cpu",
        "environment": {"python": platform.python_version(), "torch": torch.__version__},
        "seeds": seeds,
        "ratio": args.ratio,
        "epochs": EPOCHS,
        "finetune_epochs": args.finetune_epochs,
        "finetune_lr": FINETUNE_LR,
        "runs": runs,
        "seconds": seconds,
    }
    bench.write_report(Path(args.out) / "quant_goal_mixed", payload, table, lambda png: _plot(runs, args.ratio, png))


if __name__ == "__main__":
    main()

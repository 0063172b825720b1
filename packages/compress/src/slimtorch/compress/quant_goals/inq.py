"""Goal: INQ power-of-two weights (Zhou et al. 2017) at 5 bits on the digits task, within 0.5 point
of float, for LeNet-300-100 and LeNet-5 (Caffe 20-50-500, as in Deep Compression), over seeds.

    python -m slimtorch.compress.quant_goals.inq [--seeds 0,1,2] [--bits 5,4,3] [--out benchmarks/results/cpu]
    python -m slimtorch.compress.quant_goals.inq --render benchmarks/results/cpu/quant_goal_inq.json  # redraw

Per (model, seed): the float model is trained (Adam, lr 1e-3, batch 64, :data:`EPOCHS` epochs);
then, from those weights, (a) every layer rounded to its b-bit set in one shot (``quantize_`` with
``Pow2WeightConfig``, no retraining: the baseline INQ improves on) and (b) INQ: freeze 50 / 75 / 87.5
/ 100 % of each layer by magnitude, retraining the free weights for :data:`RETRAIN_EPOCHS` epochs
(Adam, lr :data:`RETRAIN_LR`, a fresh optimizer per stage) after each of the first three, then
converted to ``Pow2Linear`` layers that run packed (the CPU reference of ``pow2_weight_mm``). Top-1
on the held-out split (the test split is never used for choices); the compressed file's bytes
(``slimtorch.core.container``, raw coder) beside fp32's. Writes ``quant_goal_inq.{json,md,png}``.
Seeds change the initialisation and the batch order; the train/test split stays fixed.
"""

from __future__ import annotations

import argparse
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
from slimtorch.quant.inq import INQ, INQ_PORTIONS
from slimtorch.quant.pow2 import Pow2WeightConfig

EPOCHS = 10
RETRAIN_EPOCHS = 3
RETRAIN_LR = 3e-4
GOAL_POINTS = 0.5  # INQ 5-bit within this many top-1 points of float
TEST_IMAGES = 450  # tasks.digits_task()'s held-out split (25 % of 1,797, stratified)
BUILDERS = {"lenet300_100": tasks.lenet300_100, "lenet5": lambda: tasks.lenet5(caffe=True)}


def _file_bytes(model: torch.nn.Module) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return container.save_compressed(model, Path(tmp) / "m.safetensors", coder="raw").file_bytes


def run_one(name: str, seed: int, bits_list: list[int], task: tasks.Task, progress: bool) -> list[dict]:
    torch.manual_seed(seed)
    model = BUILDERS[name]()
    tasks.train(model, task, EPOCHS, seed=seed, progress=progress, desc=f"{name} float seed {seed}")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    float_top1 = tasks.evaluate(model, task)
    fp32_bytes = _file_bytes(model)
    # control: the float model trained for as many extra epochs as INQ retrains (same lr)
    extra = len(INQ_PORTIONS) - 1
    tasks.train(model, task, extra * RETRAIN_EPOCHS, lr=RETRAIN_LR, seed=seed * 100 + 99, progress=progress,
                desc=f"{name} float control seed {seed}")  # fmt: skip
    control_top1 = tasks.evaluate(model, task)
    rows = []
    for bits in bits_list:
        rounded = BUILDERS[name]()
        rounded.load_state_dict(state)
        rounded = quantize_(rounded, Pow2WeightConfig(bits)).model
        inq_model = BUILDERS[name]()
        inq_model.load_state_dict(state)
        inq = INQ(inq_model, bits=bits)
        stage = iter(range(len(INQ_PORTIONS)))

        def retrain(m, inq, bits=bits, stage=stage):
            i = next(stage)
            tasks.train(m, task, RETRAIN_EPOCHS, lr=RETRAIN_LR, seed=seed * 100 + i, after_step=inq.after_step,
                        progress=progress, desc=f"{name} INQ {bits}-bit {inq.portion:.3g} seed {seed}")  # fmt: skip

        report = inq.run(retrain)
        inq_top1 = tasks.evaluate(report.model, task)
        rows.append(
            {
                "model": name,
                "seed": seed,
                "bits": bits,
                "float_top1": float_top1,
                "float_more_epochs_top1": control_top1,
                "rounded_top1": tasks.evaluate(rounded, task),
                "inq_top1": inq_top1,
                "delta_points": 100 * (inq_top1 - float_top1),
                "converted_layers": len(report.converted),
                "fp32_file_bytes": fp32_bytes,
                "inq_file_bytes": _file_bytes(report.model),
            }
        )
    return rows


def _mean(rows: list[dict], key: str) -> float:
    return statistics.mean(r[key] for r in rows)


def _table(rows: list[dict], seeds: list[int], seconds: float) -> str:
    lines = [
        "# INQ power-of-two weights on the digits task",
        "",
        f"Seeds {seeds}; float: Adam lr 1e-3, {EPOCHS} epochs; INQ: portions {list(INQ_PORTIONS)} by magnitude, "
        f"{RETRAIN_EPOCHS} retraining epochs per stage (Adam lr {RETRAIN_LR}); one-shot rounding = Eq. 4 without "
        f"retraining; 'float + epochs' = the float model trained for the same extra epochs as INQ (a control). "
        f"Top-1 on the held-out split (mean over seeds, per-seed in the JSON). {seconds:.0f} s on "
        f"{platform.processor() or platform.machine()} (CPU, torch {torch.__version__}). File bytes: the compressed "
        "file (raw coder; 5-bit codes are stored in 8 bits, 3/4-bit in 4). The test split holds "
        f"{TEST_IMAGES} images: one image is {100 / TEST_IMAGES:.2f} points.",
        "",
        "| model | bits | float top-1 | float + epochs | one-shot pow2 | INQ | INQ − float (points) | worst seed "
        f"| INQ − (float + epochs) | file KB (fp32 → INQ) | goal (5-bit within {GOAL_POINTS}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in BUILDERS:
        for bits in sorted({r["bits"] for r in rows}, reverse=True):
            group = [r for r in rows if r["model"] == name and r["bits"] == bits]
            if not group:
                continue
            delta = _mean(group, "delta_points")
            worst = min(r["delta_points"] for r in group)
            control = 100 * (_mean(group, "inq_top1") - _mean(group, "float_more_epochs_top1"))
            met = ("yes" if delta >= -GOAL_POINTS else "no") if bits == 5 else ""
            lines.append(
                f"| {name} | {bits} | {100 * _mean(group, 'float_top1'):.2f} "
                f"| {100 * _mean(group, 'float_more_epochs_top1'):.2f} | {100 * _mean(group, 'rounded_top1'):.2f} "
                f"| {100 * _mean(group, 'inq_top1'):.2f} | {delta:+.2f} | {worst:+.2f} | {control:+.2f} "
                f"| {_mean(group, 'fp32_file_bytes') / 1e3:.1f} → {_mean(group, 'inq_file_bytes') / 1e3:.1f} | {met} |"
            )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bits_list = sorted({r["bits"] for r in rows}, reverse=True)
    names = [n for n in BUILDERS if any(r["model"] == n for r in rows)]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, name in zip(axes, names, strict=True):
        for j, (key, label) in enumerate((("rounded_top1", "one-shot pow2"), ("inq_top1", "INQ"))):
            means = [100 * _mean([r for r in rows if r["model"] == name and r["bits"] == b], key) for b in bits_list]
            ax.bar([i + 0.38 * j for i in range(len(bits_list))], means, width=0.38, label=label)
        ax.axhline(
            100 * _mean([r for r in rows if r["model"] == name], "float_top1"), color="k", ls="--", label="float"
        )
        ax.set_xticks([i + 0.19 for i in range(len(bits_list))], [f"{b}-bit" for b in bits_list])
        ax.set_title(name)
        control = 100 * _mean([r for r in rows if r["model"] == name], "float_more_epochs_top1")
        ax.axhline(control, color="grey", ls=":", label="float + same epochs")
        ax.set_ylim(90, 100)
    axes[0].set_ylabel("top-1 (%), mean over seeds")
    axes[0].legend(loc="lower left")
    fig.suptitle("INQ power-of-two weights on digits")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--bits", default="5,4,3")
    parser.add_argument("--models", default=",".join(BUILDERS))
    parser.add_argument("--out", default="benchmarks/results/cpu")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--render", help="rewrite the .md/.png from this quant_goal_inq.json (no training)")
    args = parser.parse_args(argv)
    if args.render:
        payload = json.loads(Path(args.render).read_text())
        table = _table(payload["rows"], payload["seeds"], payload["seconds"])
        print(table)
        bench.write_report(Path(args.out) / "quant_goal_inq", payload, table, lambda png: _plot(payload["rows"], png))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    bits_list = [int(b) for b in args.bits.split(",")]
    task = tasks.digits_task()
    start = time.perf_counter()
    rows = []
    for seed in seeds:
        for name in args.models.split(","):
            rows += run_one(name, seed, bits_list, task, not args.no_progress)
            print(rows[-len(bits_list) :], flush=True)
    seconds = time.perf_counter() - start
    table = _table(rows, seeds, seconds)
    print(table)
    payload = {
        "device": "cpu",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "seeds": seeds,
        "settings": {
            "epochs": EPOCHS,
            "retrain_epochs": RETRAIN_EPOCHS,
            "retrain_lr": RETRAIN_LR,
            "portions": list(INQ_PORTIONS),
        },
        "seconds": seconds,
        "rows": rows,
    }
    bench.write_report(Path(args.out) / "quant_goal_inq", payload, table, lambda png: _plot(rows, png))


if __name__ == "__main__":
    main()

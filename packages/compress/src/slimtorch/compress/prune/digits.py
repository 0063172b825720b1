"""Unstructured pruning on the embedded digits task, in the form of the survey's LeNet rows:
Han et al. 2015 (iterative magnitude pruning, 12x fewer parameters on LeNet-300-100 / LeNet-5 with
no accuracy loss) and Dynamic Network Surgery (Guo et al. 2016: 56x / 108x), plus one-shot
magnitude, lottery-ticket rewinding, SNIP, OBD and layer-wise OBS, and 2:4.

    python -m slimtorch.compress.prune.digits [--models lenet300_100,lenet5] [--out benchmarks/results/cpu]
    nox -s prune_digits

writes ``<out>/prune_digits.{json,md,png}`` (top-1 on the held-out digits against nonzero
parameters). Parameters are counted as every weight and bias of the model; "nonzero" counts the
weights left after pruning plus every bias (Han et al. count the same way). One seed, the same
dense model for every method of a model; one torch thread (these models are too small for more:
extra threads only spin on a shared machine). About 2 CPU-minutes in all; the JSON records the
wall and CPU seconds of the run.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from slimtorch.compress import tasks
from slimtorch.compress.prune.export import (
    SemiStructuredConfig,
    SparseExportConfig,
    export_sparse_,
    prune_semi_structured_,
)
from slimtorch.compress.prune.saliency import OBDConfig, OBSConfig, SNIPConfig, obd_prune_, obs_prune_, snip_prune_
from slimtorch.compress.prune.schedule import IterativeConfig, PruneSchedule, prune_iteratively_
from slimtorch.compress.prune.surgery import SurgeryConfig, surgery_, update_masks_
from slimtorch.compress.prune.unstructured import UnstructuredConfig, finalize_, prune_unstructured_
from slimtorch.core import bench

# per model: dense epochs, retrain epochs per round, Han's target sparsity (weights), DNS per-layer sparsities
SETTINGS = {
    "lenet300_100": {
        "build": tasks.lenet300_100,
        "epochs": 12,
        "retrain": 3,
        "han": 0.92,
        "dns": [{"1": 0.982, "3": 0.982, "5": 0.945}],  # the paper's kept fractions 1.8%, 1.8%, 5.5%
        "dns_epochs": 14,
        "dns_finetune": 2,
        "lr": 2e-3,
    },
    "lenet5": {
        "build": lambda: tasks.lenet5(caffe=True),
        "epochs": 8,
        "retrain": 2,
        "han": 0.92,
        "dns": [{"0": 0.8, "3": 0.95, "7": 0.993, "9": 0.95}, {"0": 0.7, "3": 0.93, "7": 0.99, "9": 0.9}],
        "dns_epochs": 12,
        "dns_finetune": 4,
        "lr": 2e-3,
    },
}


@dataclass
class Row:
    model: str
    method: str
    top1: float
    delta_points: float
    params: int
    nonzero: int
    reduction: float
    seconds: float
    note: str = ""


def nonzero_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, nonzero weights + all biases) of a model whose masks are baked in."""
    total = nonzero = 0
    for name, p in model.named_parameters():
        total += p.numel()
        nonzero += p.numel() if name.endswith("bias") else int((p != 0).sum())
    return total, nonzero


def _row(name: str, method: str, model: nn.Module, task, base: float, seconds: float, note: str = "") -> Row:
    model = copy.deepcopy(model)
    finalize_(model)
    total, nonzero = nonzero_params(model)
    top1 = tasks.evaluate(model, task)
    return Row(name, method, top1, 100 * (top1 - base), total, nonzero, total / nonzero, seconds, note)


def run_model(name: str, task, *, seed: int = 0, progress: bool = False, log: Callable[[str], None] = print) -> list:
    s = SETTINGS[name]
    lr, retrain = s["lr"], s["retrain"]

    def train(model, epochs, desc, after_step=None, lr_=lr):
        return tasks.train(model, task, epochs, lr=lr_, seed=seed, after_step=after_step, progress=progress, desc=desc)

    torch.manual_seed(seed)
    init = s["build"]()
    dense = copy.deepcopy(init)
    t0 = time.perf_counter()
    train(dense, s["epochs"], f"{name} dense")
    base = tasks.evaluate(dense, task)
    rows = [_row(name, "dense (fp32 baseline)", dense, task, base, time.perf_counter() - t0)]
    sparsity = s["han"]

    def timed(method: str, fn: Callable[[], nn.Module | tuple], note: str = "") -> None:
        t = time.perf_counter()
        model = fn()
        if isinstance(model, tuple):
            model, note = model
        rows.append(_row(name, method, model, task, base, time.perf_counter() - t, note))
        r = rows[-1]
        log(f"  {name:13s} {method:42s} top-1 {100 * r.top1:6.2f} ({r.delta_points:+.2f})  {r.reduction:6.1f}x")

    def one_shot() -> nn.Module:
        model = copy.deepcopy(dense)
        prune_unstructured_(model, UnstructuredConfig(sparsity=sparsity, scope="global"))
        return model

    timed(f"magnitude one-shot {sparsity:.0%}, no retraining", one_shot)

    def iterative(rewind: bool) -> Callable[[], nn.Module]:
        def run() -> nn.Module:
            schedule = PruneSchedule(final_sparsity=sparsity, steps=4)
            if rewind:  # Frankle & Carbin with late rewinding: the dense run again, saving step k
                model = copy.deepcopy(init)
                config = IterativeConfig(schedule=schedule, scope="global", rewind_step=22, train_dense=True)
                epochs = {0: s["epochs"]}
            else:  # Han et al.: the trained dense model, prune, retrain
                model = copy.deepcopy(dense)
                config = IterativeConfig(schedule=schedule, scope="global")
                epochs = {}
            prune_iteratively_(
                model,
                config,
                lambda m, r, after: train(
                    m, epochs.get(r, retrain + (r == schedule.steps)), f"round {r}", after, lr / 2
                ),
            )
            return model

        return run

    timed(f"iterative magnitude (Han), cubic 4 rounds to {sparsity:.0%}", iterative(False), "global threshold")
    timed(
        f"lottery ticket: rewind to step 22 (1 epoch), {sparsity:.0%}",
        iterative(True),
        "retrained from the rewound weights",
    )

    def dns(targets: dict[str, float]) -> Callable[[], nn.Module]:
        def run() -> nn.Module:
            model = copy.deepcopy(dense)
            for layer, target in targets.items():
                surgery_(model, SurgeryConfig(sparsity=target, hysteresis=0.1), lambda m, n, layer=layer: n == layer)
            train(model, s["dns_epochs"], "surgery", after_step=update_masks_, lr_=lr / 2)
            train(model, s["dns_finetune"], "fixed-mask fine-tune", lr_=lr / 4)  # masks fixed: no update_masks_
            return model

        return run

    for targets in s["dns"]:
        note = "per-layer targets " + ", ".join(f"{v:.1%}" for v in targets.values())
        timed("dynamic network surgery", dns(targets), note)

    def snip() -> nn.Module:
        model = copy.deepcopy(init)
        batch = (task.x_train[:256], task.y_train[:256])
        snip_prune_(model, SNIPConfig(sparsity=sparsity), batch)
        train(model, s["epochs"], "SNIP from init")
        return model

    timed(f"SNIP at init {sparsity:.0%}, trained", snip, "pruned before training, one batch of 256")
    calib = (task.x_train[:64], task.y_train[:64])

    def obd() -> nn.Module:
        model = copy.deepcopy(dense)
        obd_prune_(model, OBDConfig(sparsity=sparsity), calib)
        train(model, retrain, "OBD retrain", lr_=lr / 2)
        return model

    timed(f"OBD (Gauss-Newton diagonal) {sparsity:.0%}, retrained", obd, "64 calibration samples")
    layer_sparsity = 0.8

    def magnitude_layer() -> nn.Module:
        model = copy.deepcopy(dense)
        prune_unstructured_(model, UnstructuredConfig(sparsity=layer_sparsity, scope="layer"))
        return model

    def obs() -> nn.Module:
        model = copy.deepcopy(dense)
        obs_prune_(model, OBSConfig(sparsity=layer_sparsity, solver="blocked"), task.x_train[:512])
        return model

    timed(f"magnitude one-shot {layer_sparsity:.0%} per layer", magnitude_layer, "no retraining (OBS's comparison)")
    timed(f"layer-wise OBS one-shot {layer_sparsity:.0%} per layer", obs, "no retraining, 512 samples, blocked solver")

    def sparse24() -> tuple:
        model = copy.deepcopy(dense)
        prune_semi_structured_(model, SemiStructuredConfig("2:4"))
        train(model, retrain, "2:4 retrain", lr_=lr / 2)
        try:
            exported = export_sparse_(copy.deepcopy(model), SparseExportConfig("2:4")).model
        except ImportError:
            return model, "not exported: slimtorch-sparse is not installed"
        same = torch.equal(exported(task.x_test).argmax(1), model(task.x_test).argmax(1))
        return model, f"exported to SparseLinear24: {'same' if same else 'different'} test predictions"

    timed("2:4 magnitude, retrained", sparse24)
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [
        "| model | method | top-1 % | Δtop-1 | params | nonzero | reduction | s | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.method} | {100 * r.top1:.2f} | {r.delta_points:+.2f} | {r.params:,} | {r.nonzero:,} | "
            f"{r.reduction:.1f}x | {r.seconds:.1f} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def draw(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r.model for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(7 * len(models), 7.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        mine = [r for r in rows if r.model == model]
        for i, r in enumerate(mine):
            ax.scatter(r.nonzero, 100 * r.top1, color=plt.cm.tab20(i % 20), label=f"{r.method} ({r.reduction:.0f}x)")
        ax.set_xscale("log")
        ax.set_xlabel("nonzero parameters (log)")
        ax.set_ylabel("top-1 % (held-out digits)")
        ax.set_title(model, fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.suptitle(title, fontsize=10)
    bench.save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet300_100,lenet5", help="comma-separated: " + ", ".join(SETTINGS))
    parser.add_argument("--out", default="benchmarks/results/cpu", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--progress", action="store_true", help="a tqdm bar per training run")
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in SETTINGS:
            parser.error(f"--models: expected names from {', '.join(SETTINGS)}, got {m!r}")
    torch.set_num_threads(args.threads)  # tiny models: more threads only spin on a shared machine
    task = tasks.digits_task()
    start, cpu_start = time.perf_counter(), time.process_time()
    rows = []
    from tqdm.auto import tqdm

    for name in tqdm(models, desc="models", disable=not args.progress):
        rows += run_model(name, task, seed=args.seed, progress=args.progress)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    env = bench.Environment.collect("cpu")
    command = "python -m slimtorch.compress.prune.digits " + " ".join(argv if argv is not None else [])
    payload = {
        "command": command.strip(),
        "environment": asdict(env),
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "threads": torch.get_num_threads(),
        "rows": [asdict(r) for r in rows],
    }
    header = (
        f"# Unstructured pruning on the digits task ({env.device_name}, torch {env.torch_version})\n\n"
        f"`{command.strip()}` — {elapsed:.0f} s wall, {cpu:.0f} s CPU, {torch.get_num_threads()} thread(s), "
        f"seed {args.seed}. "
        "Reduction = all parameters / (nonzero weights + biases).\n\n"
    )
    paths = bench.write_report(
        Path(args.out) / "prune_digits",
        payload,
        header + format_table(rows),
        lambda png: draw(rows, png, "top-1 against nonzero parameters, digits task"),
    )
    print(format_table(rows))
    print(f"{elapsed:.0f} s wall, {cpu:.0f} s CPU; wrote " + ", ".join(str(p) for p in paths.values()))
    return payload


if __name__ == "__main__":
    main()

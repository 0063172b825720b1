"""The issue's goals on the digits task, averaged over 3 seeds (not in CI; ``nox -s goals`` or
``python -m slimtorch.compress.goals [--seeds 0,1,2] [--only kd|dc] [--out DIR]``; it writes
``benchmarks/results/cpu/compress_goals.{json,md,png}`` by default; on a loaded machine the seeds
can run as separate processes, ``--seeds 1 --setting T,alpha --validation JSON`` reusing the first
run's choice, then ``--merge`` their ``compress_goals.json`` into one report):

- Deep Compression: LeNet-300-100 >= 40x and LeNet-5 (Caffe 20-50-500) >= 39x smaller on disk than
  fp32 (4 bytes x parameters), top-1 within 1 point of the baseline (Han et al. 2016, Table 1);
- distillation: a half-width LeNet-300-100 (784-150-50-10) trained with KD against the same student
  trained on labels alone, on the held-out digits. The setup is the standard one (Hinton et al.
  2015): a clearly stronger teacher (LeNet-5, Caffe 20-50-500, trained for :data:`TEACHER_EPOCHS`),
  and (T, alpha) chosen once from :data:`KD_GRID` (T = 4 with alpha 0.5 or 0.9, or T = 2) on a
  validation split carved from the training split (seed 0; the test split is never looked at),
  then fixed for the 3 seeds. Both students start from the same
  initial weights and train for the same epochs with the same optimizer (Adam, lr 1e-3, batch 64,
  the same batch order); the KD student's only difference is the loss.

Seeds change the initialisation and the batch order; the train/test split stays fixed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from slimtorch.compress import tasks
from slimtorch.compress.distill import DistillConfig, Distiller
from slimtorch.compress.pipeline.deep_compression import DeepCompressionConfig, deep_compression
from slimtorch.core import bench, container

EPOCHS = 10
DC = {"sparsity": 0.95, "prune_iterations": 3, "prune_epochs": 2, "share_epochs": 2}
BUILDERS = {"lenet300_100": tasks.lenet300_100, "lenet5": lambda: tasks.lenet5(caffe=True)}
# distillation (module docstring)
KD_TEACHER = "lenet5"
TEACHER_EPOCHS = 12
STUDENT_EPOCHS = 20
KD_GRID = ((4.0, 0.5), (4.0, 0.9), (2.0, 0.5))  # (T, alpha) candidates, chosen once on the validation split


def deep_compression_goal(name: str, seed: int, task, progress: bool) -> dict:
    torch.manual_seed(seed)
    model = BUILDERS[name]()
    tasks.train(model, task, EPOCHS, seed=seed, progress=progress, desc=f"{name} seed {seed}")
    base = tasks.evaluate(model, task)
    fp32 = 4 * sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        fp32_file = container.save_compressed(model, Path(tmp) / "fp32.safetensors", coder="raw").file_bytes
    result = deep_compression(model, task, DeepCompressionConfig(seed=seed, **DC), progress=progress)
    top1 = tasks.evaluate(result.model, task)
    huff = result.file_bytes["huffman"]
    return {
        "model": name,
        "seed": seed,
        "top1_fp32": base,
        "top1_dc": top1,
        "delta_points": 100 * (top1 - base),
        "fp32_weight_bytes": fp32,
        "fp32_file_bytes": fp32_file,
        "file_bytes": result.file_bytes,
        "ratio_huffman": fp32 / huff,
        "ratio_ans": fp32 / result.file_bytes["ans"],
    }


def validation_split(task: tasks.Task, fraction: float = 0.2, seed: int = 0) -> tasks.Task:
    """A task whose "test" split is ``fraction`` of ``task``'s training images (seeded), its
    training split the rest: for choosing hyperparameters without looking at the test split."""
    order = torch.randperm(len(task.x_train), generator=torch.Generator().manual_seed(seed))
    val, fit = order[: int(len(order) * fraction)].sort().values, order[int(len(order) * fraction) :].sort().values
    return tasks.Task(
        f"{task.name}-val", task.x_train[fit], task.y_train[fit], task.x_train[val], task.y_train[val], 10
    )


def _teacher(task: tasks.Task, seed: int, progress: bool):
    torch.manual_seed(seed)
    teacher = BUILDERS[KD_TEACHER]()
    return tasks.train(teacher, task, TEACHER_EPOCHS, seed=seed, progress=progress, desc=f"teacher seed {seed}")


def _students(seed: int):
    """Two half-width students with the same initial weights."""
    torch.manual_seed(seed + 1000)
    student = tasks.lenet300_100(width=0.5)
    twin = tasks.lenet300_100(width=0.5)
    twin.load_state_dict(student.state_dict())
    return student, twin


def _kd(student, teacher, task, seed: int, setting: tuple[float, float], progress: bool):
    cfg = DistillConfig(temperature=setting[0], alpha=setting[1], epochs=STUDENT_EPOCHS, seed=seed)
    return Distiller(student, teacher, cfg).fit(task, progress=progress)


def _name(setting: tuple[float, float]) -> str:
    return f"KD T={setting[0]:g} alpha={setting[1]:g}"


def choose_setting(task: tasks.Task, progress: bool, seed: int = 0) -> tuple[tuple[float, float], dict[str, float]]:
    """(T, alpha) from :data:`KD_GRID` with the best accuracy on the validation split (the first on ties)."""
    val = validation_split(task)
    teacher = _teacher(val, seed, progress)
    scores = {"teacher": tasks.evaluate(teacher, val)}
    labels, _ = _students(seed)
    tasks.train(labels, val, STUDENT_EPOCHS, seed=seed, progress=progress, desc="student, labels")
    scores["labels only"] = tasks.evaluate(labels, val)
    for setting in KD_GRID:
        student, _ = _students(seed)
        scores[_name(setting)] = tasks.evaluate(_kd(student, teacher, val, seed, setting, progress), val)
    best = max(KD_GRID, key=lambda st: scores[_name(st)])  # max keeps the first of equal scores
    return best, scores


def distillation_goal(seed: int, task: tasks.Task, setting: tuple[float, float], progress: bool) -> dict:
    teacher = _teacher(task, seed, progress)
    labels, kd = _students(seed)
    tasks.train(labels, task, STUDENT_EPOCHS, seed=seed, progress=progress, desc="student, labels")
    _kd(kd, teacher, task, seed, setting, progress)
    return {
        "seed": seed,
        "teacher_model": KD_TEACHER,
        "teacher": tasks.evaluate(teacher, task),
        "labels_only": tasks.evaluate(labels, task),
        "kd": tasks.evaluate(kd, task),
        "temperature": setting[0],
        "alpha": setting[1],
    }


def _table(dc: list[dict], kd: list[dict], tuning: dict, seconds: float, seeds: list[int]) -> str:
    lines = [
        "| model | fp32 top-1 % | DC top-1 % | Δ points | ratio (Huffman) | ratio (ANS) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    if not dc:
        lines = ["Deep Compression: not run (--only kd)."]
    for name in BUILDERS:
        rs = [r for r in dc if r["model"] == name]
        if not rs:
            continue
        keys = ("top1_fp32", "top1_dc", "delta_points", "ratio_huffman", "ratio_ans")
        mean = {k: statistics.mean(r[k] for r in rs) for k in keys}
        lines.append(
            f"| {name} | {100 * mean['top1_fp32']:.2f} | {100 * mean['top1_dc']:.2f} | "
            f"{mean['delta_points']:+.2f} | {mean['ratio_huffman']:.1f}x | {mean['ratio_ans']:.1f}x |"
        )
    if kd:
        lines += [
            "",
            f"Distillation: teacher {KD_TEACHER} (Caffe 20-50-500, {TEACHER_EPOCHS} epochs), student half-width "
            f"LeNet-300-100, {STUDENT_EPOCHS} epochs each; T = {kd[0]['temperature']:g}, alpha = {kd[0]['alpha']:g} "
            "chosen on a validation split of the training images (seed 0): "
            + ", ".join(f"{k} {100 * v:.2f}%" for k, v in tuning.items())
            + ".",
            "",
            "| half-width LeNet-300-100 | teacher % | labels only % | KD % |",
            "|---|---:|---:|---:|",
        ]
        for r in kd:
            lines.append(
                f"| seed {r['seed']} | {100 * r['teacher']:.2f} | {100 * r['labels_only']:.2f} | {100 * r['kd']:.2f} |"
            )
        mean = {k: statistics.mean(r[k] for r in kd) for k in ("teacher", "labels_only", "kd")}
        lines.append(
            f"| mean | {100 * mean['teacher']:.2f} | {100 * mean['labels_only']:.2f} | {100 * mean['kd']:.2f} |"
        )
    return "\n".join(lines) + f"\n\n{len(seeds)} seeds, {seconds:.0f} s\n"


def _plot(kd: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimtorch.core import bench

    fig, ax = plt.subplots(figsize=(6, 4))
    seeds = [r["seed"] for r in kd]
    for i, (key, label) in enumerate((("labels_only", "labels only"), ("kd", "KD"), ("teacher", "teacher"))):
        ax.bar([j + 0.27 * (i - 1) for j in range(len(seeds))], [100 * r[key] for r in kd], 0.27, label=label)
    ax.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
    ax.set_ylim(min(100 * r[k] for r in kd for k in ("labels_only", "kd", "teacher")) - 1, 100)
    ax.set_ylabel("top-1 % (held-out digits)")
    ax.set_title("half-width LeNet-300-100: KD vs labels alone", fontsize=9)
    ax.legend()
    bench.save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="benchmarks/results/cpu")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--only", choices=("all", "kd", "dc"), default="all")
    parser.add_argument("--setting", help="T,alpha chosen by an earlier run's validation step (skips it)")
    parser.add_argument("--validation", default="{}", help="with --setting: that run's validation scores (JSON)")
    parser.add_argument("--merge", nargs="+", help="combine the compress_goals.json of runs on other seeds")
    args = parser.parse_args(argv)
    if args.merge:  # seeds run as separate processes (a loaded machine): one report
        payloads = [json.loads(Path(f).read_text()) for f in args.merge]
        dc = [r for p in payloads for r in p["deep_compression"]]
        kd = sorted((r for p in payloads for r in p["distillation"]), key=lambda r: r["seed"])
        tuning = next((p["alpha_validation"] for p in payloads if p["alpha_validation"]), {})
        seconds = max(p.get("seconds", 0.0) for p in payloads)
        table = _table(dc, kd, tuning, seconds, [r["seed"] for r in kd] or [r["seed"] for r in dc])
        print(table)
        payload = {"deep_compression": dc, "distillation": kd, "alpha_validation": tuning, "seconds": seconds}
        bench.write_report(Path(args.out) / "compress_goals", payload, table, lambda png: _plot(kd, png))
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    progress = not args.no_progress
    task = tasks.digits_task()
    start = time.perf_counter()
    dc, kd, tuning = [], [], {}
    setting = None
    if args.only != "dc" and args.setting:
        setting, tuning = tuple(float(v) for v in args.setting.split(",")), json.loads(args.validation)
    elif args.only != "dc":
        setting, tuning = choose_setting(task, progress)
        print(json.dumps({"chosen": setting, "validation": tuning}), flush=True)
    for s in seeds:  # one line per finished run, so a long run shows its progress
        if args.only != "dc":
            kd.append(distillation_goal(s, task, setting, progress))
            print(json.dumps(kd[-1]), flush=True)
        for n in BUILDERS if args.only != "kd" else ():
            dc.append(deep_compression_goal(n, s, task, progress))
            print(json.dumps(dc[-1]), flush=True)
    table = _table(dc, kd, tuning, time.perf_counter() - start, seeds)
    print(table)
    seconds = time.perf_counter() - start
    payload = {"deep_compression": dc, "distillation": kd, "alpha_validation": tuning, "seconds": seconds}
    bench.write_report(Path(args.out) / "compress_goals", payload, table, lambda png: _plot(kd, png) if kd else None)


if __name__ == "__main__":
    main()

"""The issue's goals on the digits task, averaged over 3 seeds (not in CI; ``nox -s goals`` or
``python -m slimtorch.compress.goals [--seeds 0,1,2] [--out DIR]``):

- Deep Compression: LeNet-300-100 >= 40x and LeNet-5 (Caffe 20-50-500) >= 39x smaller on disk than
  fp32 (4 bytes x parameters), top-1 within 1 point of the baseline (Han et al. 2016, Table 1);
- distillation: a half-width LeNet-300-100 trained with KD (teacher: the full-width model) against
  the same student trained on labels alone, on the held-out digits.

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

from slimtorch.compress import container, tasks
from slimtorch.compress.distill import DistillConfig, Distiller
from slimtorch.compress.pipeline.deep_compression import DeepCompressionConfig, deep_compression

EPOCHS = 10
DC = {"sparsity": 0.95, "prune_iterations": 3, "prune_epochs": 2, "share_epochs": 2}
BUILDERS = {"lenet300_100": tasks.lenet300_100, "lenet5": lambda: tasks.lenet5(caffe=True)}


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


def distillation_goal(seed: int, task, progress: bool, teacher_name: str = "lenet300_100") -> dict:
    torch.manual_seed(seed)
    teacher = BUILDERS[teacher_name]()
    tasks.train(teacher, task, EPOCHS, seed=seed, progress=progress, desc=f"teacher seed {seed}")
    torch.manual_seed(seed + 1000)
    student = tasks.lenet300_100(width=0.5)
    kd_student = tasks.lenet300_100(width=0.5)
    kd_student.load_state_dict(student.state_dict())  # the same initial weights for both
    tasks.train(student, task, EPOCHS, seed=seed, progress=progress, desc="student, labels")
    cfg = DistillConfig(temperature=4.0, alpha=0.9, epochs=EPOCHS, seed=seed)
    Distiller(kd_student, teacher, cfg).fit(task, progress=progress)
    return {
        "seed": seed,
        "teacher_model": teacher_name,
        "teacher": tasks.evaluate(teacher, task),
        "labels_only": tasks.evaluate(student, task),
        "kd": tasks.evaluate(kd_student, task),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="goal-results")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--kd-teacher", choices=sorted(BUILDERS), default="lenet300_100")
    parser.add_argument("--only", choices=("all", "kd", "dc"), default="all")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    task = tasks.digits_task()
    start = time.perf_counter()
    dc, kd = [], []
    for s in seeds:  # one line per finished run, so a long run shows its progress
        if args.only != "dc":
            kd.append(distillation_goal(s, task, not args.no_progress, args.kd_teacher))
            print(json.dumps(kd[-1]), flush=True)
        for n in BUILDERS if args.only != "kd" else ():
            dc.append(deep_compression_goal(n, s, task, not args.no_progress))
            print(json.dumps(dc[-1]), flush=True)
    lines = [
        "| model | fp32 top-1 % | DC top-1 % | Δ points | ratio (Huffman) | ratio (ANS) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in BUILDERS:
        rs = [r for r in dc if r["model"] == name]
        if not rs:
            continue
        mean = {
            k: statistics.mean(r[k] for r in rs)
            for k in ("top1_fp32", "top1_dc", "delta_points", "ratio_huffman", "ratio_ans")
        }
        lines.append(
            f"| {name} | {100 * mean['top1_fp32']:.2f} | {100 * mean['top1_dc']:.2f} | "
            f"{mean['delta_points']:+.2f} | {mean['ratio_huffman']:.1f}x | {mean['ratio_ans']:.1f}x |"
        )
    lines += ["", "| half-width LeNet-300-100 | teacher % | labels only % | KD % |", "|---|---:|---:|---:|"]
    for r in kd:
        lines.append(
            f"| seed {r['seed']} | {100 * r['teacher']:.2f} | {100 * r['labels_only']:.2f} | {100 * r['kd']:.2f} |"
        )
    mean = {k: statistics.mean(r[k] for r in kd) if kd else float("nan") for k in ("teacher", "labels_only", "kd")}
    lines.append(f"| mean | {100 * mean['teacher']:.2f} | {100 * mean['labels_only']:.2f} | {100 * mean['kd']:.2f} |")
    table = "\n".join(lines) + f"\n\n{len(seeds)} seeds, {time.perf_counter() - start:.0f} s\n"
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "goals.json").write_text(json.dumps({"deep_compression": dc, "distillation": kd}, indent=1) + "\n")
    (out / "goals.md").write_text(table)


if __name__ == "__main__":
    main()

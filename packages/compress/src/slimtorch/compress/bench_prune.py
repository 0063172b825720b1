"""Side by side: our channel pruner and Torch-Pruning on the same models, ratio and CPU.

    python -m slimtorch.compress.bench_prune [--models resnet50 mobilenet_v2] [--ratio 0.3] [--quick]

For each model (torchvision's ResNet-50 and MobileNetV2, and the zoo's MobileNetV2 when installed):
parameters, MACs (torch.utils.flop_counter: FLOPs / 2) and CPU latency at batch 8, 224x224
(``slimtorch.core.bench.time_fn`` medians, the unpruned model timed in the same run), before and
after pruning with each tool, plus how long each tool took to prune. Both use the L1 filter norm,
the same channel ratio, ``round_to=8`` and keep the classifier. The goal: speedup t0/t1 at least
0.8 x MACs0/MACs1. Torch-Pruning (``pip install slimtorch-compress[bench]``) is a benchmark-only
dependency; without it only our rows are written. Output: ``<out>/cpu/prune.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from slimtorch.compress.prune import Pruner
from slimtorch.core.bench import Environment, save_figure, time_fn, write_report
from slimtorch.core.model_stats import count_macs, count_parameters

DEFAULT_MODELS = ("resnet50", "mobilenet_v2", "slim_mobilenetv2_100")


@dataclass
class Row:
    model: str
    tool: str  # "unpruned" | "slimtorch" | "torch-pruning"
    params: int
    macs: int
    latency_ms: float | None
    prune_s: float | None
    speedup: float | None = None  # t0 / t1
    mac_ratio: float | None = None  # MACs0 / MACs1
    efficiency: float | None = None  # speedup / mac_ratio (goal >= 0.8)
    error: str | None = None


def build(name: str) -> tuple[nn.Module, list[str]]:
    """The model and the names of its classifier (kept by both tools)."""
    if name.startswith("slim_"):
        from slimtorch import zoo

        model = zoo.create_model(name).eval()
        return model, ["classifier"]
    import torchvision

    model = torchvision.models.get_model(name).eval()
    head = "fc" if hasattr(model, "fc") else "classifier"
    return model, [head]


def prune_ours(model: nn.Module, x: torch.Tensor, ratio: float, ignored: list[nn.Module]) -> nn.Module:
    return Pruner(model, x, ratio=ratio, importance="l1", round_to=8, ignored_layers=ignored).step()


def prune_torch_pruning(model: nn.Module, x: torch.Tensor, ratio: float, ignored: list[nn.Module]) -> nn.Module:
    import torch_pruning as tp

    pruner = tp.pruner.MagnitudePruner(
        model,
        x,
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=ignored,
        round_to=8,
    )
    pruner.step()
    return model


def _tools() -> dict[str, Callable]:
    tools = {"slimtorch": prune_ours}
    try:
        import torch_pruning  # noqa: F401

        tools["torch-pruning"] = prune_torch_pruning
    except ImportError:
        print("torch-pruning is not installed (pip install slimtorch-compress[bench]): only our rows")
    return tools


def run(models: list[str], ratio: float, batch: int, rep_ms: float, rounds: int = 3) -> list[Row]:
    """Prune with every tool, then time the unpruned and pruned models in interleaved rounds (a
    shared CPU's load drifts; each model's latency is the median of its rounds)."""
    rows: list[Row] = []
    tools = _tools()
    x_prune = torch.randn(1, 3, 224, 224)
    x = torch.randn(batch, 3, 224, 224)
    for name in tqdm(models, desc="models"):
        base, heads = build(name)
        with torch.no_grad():
            want = base(x_prune).shape
        candidates: dict[str, nn.Module] = {"unpruned": base}
        model_rows = {"unpruned": Row(name, "unpruned", count_parameters(base), count_macs(base, x_prune), None, None)}
        for tool, prune in tools.items():
            model = copy.deepcopy(base)
            ignored = [model.get_submodule(h) for h in heads]
            try:
                start = time.perf_counter()
                pruned = prune(model, x_prune, ratio, ignored)
                seconds = time.perf_counter() - start
                with torch.no_grad():
                    got = pruned(x_prune).shape
                if got != want:
                    raise RuntimeError(f"output shape {tuple(got)} != {tuple(want)}")
                candidates[tool] = pruned
                model_rows[tool] = Row(name, tool, count_parameters(pruned), count_macs(pruned, x_prune), None, seconds)
            except Exception as err:  # a tool that fails on a model is a result, not a crash
                model_rows[tool] = Row(name, tool, 0, 0, None, None, error=f"{type(err).__name__}: {err}"[:300])
        samples: dict[str, list[float]] = {k: [] for k in candidates}
        with torch.no_grad():
            for _ in range(rounds):
                for key, model in candidates.items():
                    samples[key].append(time_fn(lambda model=model: model(x), device="cpu", rep_ms=rep_ms).median_ms)
        for key, values in samples.items():
            model_rows[key].latency_ms = statistics.median(values)
        t0, m0 = model_rows["unpruned"].latency_ms, model_rows["unpruned"].macs
        for key, row in model_rows.items():
            if key != "unpruned" and row.latency_ms:
                row.speedup, row.mac_ratio = t0 / row.latency_ms, m0 / row.macs
                row.efficiency = row.speedup / row.mac_ratio
        rows.extend(model_rows.values())
    return rows


def markdown(rows: list[Row], env: Environment, ratio: float, batch: int) -> str:
    lines = [
        f"# Channel pruning side by side (ratio {ratio}, L1, round_to 8) on {env.device_name}",
        "",
        f"torch {env.torch_version}; latency: batch {batch}, 224x224, median ms. "
        "Efficiency = speedup / MAC reduction (goal >= 0.8).",
        "",
        "| model | tool | params | MACs | latency ms | speedup | MACs0/MACs1 | efficiency | prune s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(v, spec):
        return "" if v is None else format(v, spec)

    for r in rows:
        if r.error:
            lines.append(f"| {r.model} | {r.tool} | failed: {r.error} | | | | | | |")
            continue
        lines.append(
            f"| {r.model} | {r.tool} | {r.params / 1e6:.2f}M | {r.macs / 1e6:.0f}M | {f(r.latency_ms, '.1f')} | "
            f"{f(r.speedup, '.2f')} | {f(r.mac_ratio, '.2f')} | {f(r.efficiency, '.2f')} | {f(r.prune_s, '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def draw(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.tool != "unpruned" and not r.error]
    models = sorted({r.model for r in done})
    tools = sorted({r.tool for r in done})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / max(1, 2 * len(tools))
    for k, tool in enumerate(tools):
        for j, (metric, label) in enumerate((("speedup", "speedup t0/t1"), ("mac_ratio", "MACs0/MACs1"))):
            values = [next((getattr(r, metric) for r in done if r.model == m and r.tool == tool), 0) for m in models]
            offset = (2 * k + j) * width
            axes[0].bar([i + offset for i in range(len(models))], values, width, label=f"{tool}: {label}")
        seconds = [next((r.prune_s for r in done if r.model == m and r.tool == tool), 0) for m in models]
        axes[1].bar([i + k * 0.4 for i in range(len(models))], seconds, 0.4, label=tool)
    for ax, ylabel in zip(axes, ("x", "seconds to prune"), strict=True):
        ax.set_xticks([i + 0.2 for i in range(len(models))], models, rotation=15, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    axes[0].set_title("CPU speedup vs MAC reduction")
    axes[1].set_title("pruning time")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--ratio", type=float, default=0.3, help="fraction of channels removed (0.3: about 50%% MACs)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per model")
    parser.add_argument("--quick", action="store_true", help="one model, short timings")
    args = parser.parse_args(argv)
    models = args.models[:1] if args.quick else args.models
    try:
        import slimtorch.zoo  # noqa: F401
    except ImportError:  # the zoo is optional
        models = [m for m in models if not m.startswith("slim_")]
    rows = run(
        models, args.ratio, args.batch, rep_ms=50.0 if args.quick else 300.0, rounds=1 if args.quick else args.rounds
    )
    env = Environment.collect("cpu")
    text = markdown(rows, env, args.ratio, args.batch)
    payload = {"environment": asdict(env), "ratio": args.ratio, "batch": args.batch, "rows": [asdict(r) for r in rows]}
    stem = Path(args.out) / "cpu" / "prune"
    paths = write_report(stem, payload, text, lambda p: draw(rows, p, f"ratio {args.ratio} on {env.device_name}"))
    print(text)
    print("wrote", ", ".join(str(p) for p in paths.values()))
    return rows


if __name__ == "__main__":
    main()

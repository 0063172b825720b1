"""The main job: compress compact CNNs every way the installed packages can, and compare.

The models: the zoo's MobileNetV2-1.0 and ShuffleNetV2-1.0 (random weights) when
``slimtorch-zoo`` is installed, else a small built-in MobileNet-style CNN; any timm model name
works too. For the float model and each registered :class:`~slimtorch.core.formats.CompressionFormat` that
runs on the chosen device: convert a private copy, run it on the same random batch, and record
parameters represented, bytes in memory and on disk (safetensors), output SQNR against the
float model, top-1 agreement and latency (do_bench on CUDA, a perf_counter median on CPU).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimtorch.core import bench
from slimtorch.core.formats import CompressionFormat, available_formats, import_all_packages
from slimtorch.core.metrics import sqnr
from slimtorch.core.model_stats import count_parameters, disk_bytes, memory_bytes
from slimtorch.core.testing import SmallCompactCNN, randn

BUILTIN_MODELS = {"small-cnn": lambda: SmallCompactCNN(num_classes=10)}
ZOO_MODELS = ("slim_mobilenetv2_100", "slim_shufflenetv2_x1_0")


def default_models() -> tuple[str, ...]:
    """The zoo's MobileNetV2 and ShuffleNetV2 where slimtorch-zoo is installed, else small-cnn."""
    try:
        import slimtorch.zoo  # noqa: F401  (registers the slim_* models with timm)
    except ImportError:
        return ("small-cnn",)
    return ZOO_MODELS


def default_image_size(model_name: str) -> int:
    return 64 if model_name in BUILTIN_MODELS else 224


FLOAT = CompressionFormat(name="float32", family="baseline", description="the uncompressed model", convert=lambda m: m)


@dataclass
class DemoRow:
    format: str
    family: str
    description: str
    params: int
    memory_bytes: int
    disk_bytes: int
    sqnr_db: float
    top1_agreement: float
    latency_ms: float
    error: str | None = None


def build_model(name: str) -> nn.Module:
    """A built-in model by name, else a timm model name (zoo models included; random weights)."""
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name]()
    import_all_packages()  # the zoo, where installed, registers its models with timm
    try:
        import timm
    except ImportError as err:
        raise ValueError(f"model: {name!r} is not built in ({sorted(BUILTIN_MODELS)}) and timm is missing") from err
    try:
        return timm.create_model(name, pretrained=False)
    except RuntimeError as err:
        raise ValueError(f"model: unknown model {name!r}: {err}") from err


def _measure(
    fmt: CompressionFormat,
    model: nn.Module,
    images: torch.Tensor,
    reference: torch.Tensor,
    device: torch.device,
) -> DemoRow:
    converted = fmt.convert(copy.deepcopy(model)).eval()
    x = images if fmt.dtype is None else images.to(fmt.dtype)
    with torch.no_grad():
        out = converted(x).float()
        timing = bench.time_fn(lambda: converted(x), device=device, warmup_ms=20, rep_ms=150)
    return DemoRow(
        format=fmt.name,
        family=fmt.family,
        description=fmt.description,
        params=count_parameters(converted),
        memory_bytes=memory_bytes(converted),
        disk_bytes=disk_bytes(converted),
        sqnr_db=sqnr(reference, out),
        top1_agreement=(out.argmax(1) == reference.argmax(1)).float().mean().item(),
        latency_ms=timing.median_ms,
    )


def run_demo(
    *,
    model_name: str = "small-cnn",
    device: str | torch.device | None = None,
    batch: int = 8,
    image_size: int | None = None,
    formats: Sequence[str] | None = None,
    progress: bool = True,
    seed: int = 0,
) -> list[DemoRow]:
    """Convert ``model_name`` with every available format (or those named) and measure each."""
    from tqdm.auto import tqdm

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    model = build_model(model_name).eval().to(device)
    size = image_size or default_image_size(model_name)
    images = randn((batch, 3, size, size), device=device, seed=seed)
    with torch.no_grad():
        reference = model(images).float()
    candidates = available_formats(device)
    if formats is not None:
        known = {f.name: f for f in available_formats()}
        unknown = sorted(set(formats) - set(known))
        if unknown:
            raise ValueError(f"formats: unknown {unknown}; available: {sorted(known)}")
        candidates = [f for f in candidates if f.name in set(formats)]
    rows = []
    for fmt in tqdm([FLOAT, *candidates], desc=f"demo {model_name}", disable=not progress):
        try:
            rows.append(_measure(fmt, model, images, reference, device))
        except Exception as err:  # a format that fails is reported in the table, not fatal
            rows.append(
                DemoRow(
                    fmt.name,
                    fmt.family,
                    fmt.description,
                    0,
                    0,
                    0,
                    math.nan,
                    math.nan,
                    math.nan,
                    error=f"{type(err).__name__}: {err}"[:200],
                )
            )
    return rows


def format_table(rows: Sequence[DemoRow]) -> str:
    """A markdown table; sizes relative to the float model's disk size."""
    base = next((r.disk_bytes for r in rows if r.format == FLOAT.name and r.disk_bytes), None)
    lines = [
        "| format | family | params | memory KiB | disk KiB | compression (disk) "
        "| SQNR dB | top-1 agree | latency ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.format} | {r.family} | error: {r.error} | | | | | | |")
            continue
        ratio = f"{base / r.disk_bytes:.2f}x" if base and r.disk_bytes else ""
        lines.append(
            f"| {r.format} | {r.family} | {r.params:,} | {r.memory_bytes / 1024:.1f} | "
            f"{r.disk_bytes / 1024:.1f} | {ratio} | {r.sqnr_db:.1f} | {r.top1_agreement:.3f} | {r.latency_ms:.3f} |"
        )
    return "\n".join(lines) + "\n"


def plot_rows(rows: Sequence[DemoRow], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.error is None]
    names = [r.format for r in ok]
    panels = [
        ("disk KiB", [r.disk_bytes / 1024 for r in ok]),
        ("output SQNR dB (vs float)", [min(r.sqnr_db, 150.0) for r in ok]),
        ("latency ms", [r.latency_ms for r in ok]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(15, max(3.0, 0.4 * len(ok) + 1.5)))
    for ax, (label, values) in zip(axes, panels, strict=True):
        ax.barh(names, values, color="tab:blue")
        ax.set_xlabel(label)
        ax.invert_yaxis()
    fig.suptitle(title, fontsize=10)
    bench.save_figure(fig, path)


def write_demo(
    rows: Sequence[DemoRow], out_dir: str | Path, *, model_name: str, device: torch.device
) -> dict[str, Path]:
    """Write ``<out_dir>/demo-<model>.{json,md,png}``; return the paths."""
    env = bench.Environment.collect(device)
    payload = {
        "model": model_name,
        "environment": dataclasses.asdict(env),
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    header = f"# slimtorch demo: {model_name} on {env.device_name} (torch {env.torch_version})\n\n"
    return bench.write_report(
        Path(out_dir) / f"demo-{model_name}",
        payload,
        header + format_table(rows),
        lambda png: plot_rows(rows, png, f"{model_name} on {env.device_name}"),
    )

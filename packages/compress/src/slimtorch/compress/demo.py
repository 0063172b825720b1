"""The main job: train LeNet-300-100 and LeNet-5 on the embedded digits task, compress each every
way slimtorch can, and compare in the form of the compression surveys.

One row per method and model: top-1 on the held-out digits, Δtop-1 against the float baseline,
#params (nonzero weights represented), bytes on disk (the compressed file of
:mod:`slimtorch.core.container`, ANS-coded; Deep Compression's with Huffman as in the paper),
FLOPs of one image (2 · nonzero MACs of every linear/conv; other layers through torch's
``FlopCounterMode``) and latency (the same warm-up, medians, batch and inputs for every row,
baseline timed in the same run: ``core.bench.time_fn``). Methods:

- magnitude pruning with retraining (``prune.prune_unstructured_``), filter pruning (``prune.Pruner``),
- every registered conversion of families quant (int8, int4, ternary, codebook, power-of-two,
  product quantization) and structured (low rank) from core's registry, post-training,
- the quant formats that train: a BNN (binary weights and activations, the model with BatchNorm
  for its ReLUs, trained from scratch), INQ power-of-two 5-bit (its 50/75/87.5/100 % schedule)
  and a mixed-precision plan (``plan_bits`` under a 6x size budget, post-training),
- block-circulant layers (Cheng et al. 2015, CirCNN) with the block size that fits the model's
  layers best (b = 4 for the LeNets: 300, 100 and 500 are not multiples of 8), fine-tuned,
- a half-width student trained with knowledge distillation (and the same student on labels alone),
- Deep Compression (``pipeline.deep_compression``), and distillation + pruning + int8 in one recipe.

A row whose package or algorithm is not installed is printed as "pending", never estimated.
``model_names``/``task`` take it to other models (a zoo or timm name) on an ImageFolder.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimtorch.compress import tasks
from slimtorch.core import bench, container

DEMO_MODELS = ("lenet300_100", "lenet5")
QUANT_ROWS = ("int8", "int4-g32", "ternary", "codebook-4bit", "pow2-5bit", "pq-d4-c16")
PLAN_RATIO = 6.0  # the mixed-precision row's size budget (x smaller than the fp32 weights)
STRUCTURED_ROWS = ("low-rank",)
BLOCK_SIZES = (16, 8, 4, 2)  # the block-circulant row takes the one that fits most weights


@dataclass
class DemoRow:
    model: str
    method: str
    top1: float | None
    top1_delta: float | None
    params: int | None
    disk_bytes: int | None
    flops: int | None
    latency_ms: float | None
    status: str = "ok"  # ok | pending (not landed) | n/a (not applicable to this model) | error
    note: str = ""


@dataclass(frozen=True)
class DemoSettings:
    """Epoch budgets: the defaults fit 5 minutes on 2 CPU cores (the whole demo, both LeNets: 59 s
    on an idle 2-core machine; 17 minutes when that machine ran at load 6-10); ``quick`` for tests."""

    epochs: int = 6
    retrain_epochs: int = 2
    kd_epochs: int = 6
    prune_sparsity: float = 0.9
    dc_sparsity: float = 0.95
    batch: int = 64
    seed: int = 0

    @classmethod
    def quick(cls) -> DemoSettings:
        return cls(epochs=1, retrain_epochs=1, kd_epochs=1)


def build_model(name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """A LeNet of the digits task (LeNet-5 needs 28x28 images), else a zoo/timm name (random weights)."""
    if name == "lenet300_100":
        return tasks.lenet300_100(num_classes, in_features=in_channels * image_size * image_size)
    if name == "lenet5":
        if image_size != 28:
            raise ValueError(f"image_size: lenet5 expects 28x28 images, got {image_size}")
        return tasks.lenet5(num_classes, in_channels, caffe=True)
    from slimtorch.core.registry import import_all_packages

    import_all_packages()
    try:
        import timm
    except ImportError as err:
        raise ValueError(f"model: {name!r} is not one of {DEMO_MODELS} and timm is not installed") from err
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    except RuntimeError as err:
        raise ValueError(f"model: unknown model {name!r}: {err}") from err


def architecture_of(name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> dict:
    if name == "lenet300_100":
        return {"name": name, "kwargs": {"num_classes": num_classes, "in_features": in_channels * image_size**2}}
    if name == "lenet5":
        return {"name": name, "kwargs": {"num_classes": num_classes, "in_channels": in_channels, "caffe": True}}
    return {"name": name, "kwargs": {"num_classes": num_classes, "in_chans": in_channels}}


def student_of(name: str, num_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module | None:
    """The half-width student of a LeNet (None for other models)."""
    if name == "lenet300_100":
        return tasks.lenet300_100(num_classes, in_channels * image_size**2, width=0.5)
    if name == "lenet5":
        return tasks.lenet5(num_classes, in_channels, width=0.5, caffe=True)
    return None


# ----------------------------------------------------------------------------- measurements


def effective_params(model: nn.Module) -> int:
    """Nonzero weights represented (a quantized layer's dequantized weight) plus other parameters."""
    total = 0
    seen: set[int] = set()
    for module in model.modules():
        if hasattr(module, "dequantize") and hasattr(module, "in_features"):
            total += int(torch.count_nonzero(module.dequantize()))
            total += 0 if getattr(module, "bias", None) is None else module.bias.numel()
            seen.update(id(t) for t in module.buffers())
    for p in model.parameters():
        if id(p) not in seen:
            total += int(torch.count_nonzero(p))
    return total


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of ``model(x)`` per sample: 2 · nonzero MACs of linear/conv/quantized layers, and
    torch's FlopCounterMode for any other leaf with parameters (structured layers)."""
    from torch.utils.flop_counter import FlopCounterMode

    total = [0]
    busy = [False]

    def hook(module, inputs, output):
        if busy[0]:
            return
        if type(module) in (nn.Linear, nn.Conv2d):
            w = module.weight.detach()
            rows = output.numel() // output.shape[1] if isinstance(module, nn.Conv2d) else output.numel() // w.shape[0]
            total[0] += 2 * rows * int(torch.count_nonzero(w))
        elif hasattr(module, "dequantize") and hasattr(module, "in_features"):
            rows = output.numel() // module.out_features
            total[0] += 2 * rows * int(torch.count_nonzero(module.dequantize()))
        elif any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
            if any(True for _ in module.children()):
                return
            busy[0] = True
            try:
                with FlopCounterMode(display=False) as counter:
                    module(*inputs)
                total[0] += counter.get_total_flops()
            finally:
                busy[0] = False

    handles = [m.register_forward_hook(hook) for m in model.modules() if not isinstance(m, nn.Sequential)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0] // x.shape[0]


def file_bytes(model: nn.Module, coder: str = "ans") -> tuple[int, str]:
    """Bytes of the compressed file; a model the file cannot hold falls back to its safetensors size."""
    from slimtorch.core.model_stats import disk_bytes

    try:
        with tempfile.TemporaryDirectory() as tmp:
            return container.save_compressed(model, Path(tmp) / "m.safetensors", coder=coder).file_bytes, ""
    except (ValueError, TypeError, KeyError) as err:
        return disk_bytes(model), f"plain safetensors ({str(err)[:60]})"


class Measure:
    """Measures rows against one model's baseline, with the same inputs and timing for each."""

    def __init__(self, model_name: str, task: tasks.Task, device: torch.device, batch: int):
        self.model_name, self.task, self.device = model_name, task, device
        self.x = task.x_test[:batch].to(device)
        self.base_top1: float | None = None

    def row(self, method: str, model: nn.Module, *, coder: str = "ans", note: str = "") -> DemoRow:
        model = model.eval().to(self.device)
        top1 = tasks.evaluate(model, self.task)
        if self.base_top1 is None:
            self.base_top1 = top1
        disk, why = file_bytes(model.cpu(), coder)
        model.to(self.device)
        with torch.no_grad():
            timing = bench.time_fn(lambda: model(self.x), device=self.device, warmup_ms=30, rep_ms=150)
        return DemoRow(
            model=self.model_name,
            method=method,
            top1=top1,
            top1_delta=top1 - self.base_top1,
            params=effective_params(model),
            disk_bytes=disk,
            flops=count_flops(model, self.x[:1]),
            latency_ms=timing.median_ms,
            note="; ".join(n for n in (note, why) if n),
        )


def pending(model: str, method: str, why: str, status: str = "pending") -> DemoRow:
    """A row with no numbers: "pending" (not landed / not installed) or "n/a" (not applicable)."""
    return DemoRow(model, method, None, None, None, None, None, None, status=status, note=why)


# ----------------------------------------------------------------------------- the methods


def _registry_rows(measure: Measure, baseline: nn.Module) -> list[DemoRow]:
    """The quant formats and every low-rank / block-circulant conversion of core's registry, post-training."""
    from slimtorch.core.registry import available_conversions

    entries = {e.name: e for e in available_conversions(measure.device)}
    rows, chosen = [], []
    for name in QUANT_ROWS:
        if name in entries:
            chosen.append(entries[name])
        else:
            rows.append(pending(measure.model_name, name, "slimtorch-quant conversion not registered"))
    for prefix in STRUCTURED_ROWS:
        found = [e for e in entries.values() if e.family == "structured" and e.name.startswith(prefix)]
        chosen += found
        if not found:
            rows.append(pending(measure.model_name, prefix, "slimtorch-structured not installed / not registered"))
    for entry in chosen:
        try:
            report = entry.convert(copy.deepcopy(baseline).eval())
            if not report.converted:
                why = "no layer of this model is eligible: " + "; ".join(sorted(set(report.skipped.values())))[:100]
                rows.append(pending(measure.model_name, entry.name, why, status="n/a"))
                continue
            note = f"{len(report.converted)} layers converted, {len(report.skipped)} left alone (post-training)"
            rows.append(measure.row(entry.name, report.model, note=note))
        except Exception as err:  # a conversion that fails is reported, not fatal
            rows.append(DemoRow(measure.model_name, entry.name, *[None] * 6, status="error", note=str(err)[:120]))
    return rows


def block_size_that_fits(model: nn.Module, sizes: Sequence[int] = BLOCK_SIZES) -> tuple[int, int]:
    """(b, weights converted) for the block size that removes the most weights: a block-circulant
    layer keeps 1/b of an eligible layer's weights (Linear and 1x1 convs whose in and out sizes b
    divides), so the score is Σ weights · (1 − 1/b); the larger b on ties. (0, 0): none fits."""
    best, best_saved = (0, 0), 0.0
    for b in sorted(sizes, reverse=True):
        weights = 0
        for m in model.modules():
            if type(m) is nn.Linear:
                io = (m.in_features, m.out_features)
            elif type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.groups == 1:
                io = (m.in_channels, m.out_channels)
            else:
                continue
            weights += m.weight.numel() if io[0] % b == 0 and io[1] % b == 0 else 0
        if weights * (1 - 1 / b) > best_saved:
            best, best_saved = (b, weights), weights * (1 - 1 / b)
    return best


def _block_circulant_row(measure: Measure, base: nn.Module, s: DemoSettings, progress: bool) -> DemoRow:
    """Block-circulant layers at the block size that fits, fine-tuned like the pruned rows."""
    try:
        from slimtorch.structured import BlockCirculantConfig, structure_
    except ImportError:
        return pending(measure.model_name, "block-circulant", "slimtorch-structured not installed")
    b, weights = block_size_that_fits(base)
    if not b:
        return pending(measure.model_name, "block-circulant", f"no layer size is a multiple of {BLOCK_SIZES}", "n/a")
    report = structure_(copy.deepcopy(base), BlockCirculantConfig(block_size=b))
    model = tasks.train(
        report.model, measure.task, s.retrain_epochs, lr=5e-4, seed=s.seed, progress=progress, desc="fine-tune"
    )
    note = f"{len(report.converted)} layers ({weights:,} weights) b={b}, {len(report.skipped)} left alone, fine-tuned"
    return measure.row(f"block-circulant b={b}", model, note=note)


def bnn_variant(model: nn.Module) -> nn.Sequential | None:
    """The model with a BatchNorm of the preceding layer's width in place of each ReLU (a BNN's
    sign needs centred inputs: after a ReLU every sign is +1); None for other architectures."""
    if not isinstance(model, nn.Sequential):
        return None
    layers: list[nn.Module] = []
    width: tuple[int, int] | None = None  # (features, 1 for Linear / 2 for Conv2d) of the last weighted layer
    for module in model:
        if isinstance(module, nn.Linear):
            width = (module.out_features, 1)
        elif isinstance(module, nn.Conv2d):
            width = (module.out_channels, 2)
        if isinstance(module, nn.ReLU):
            if width is None:
                return None
            layers.append(nn.BatchNorm1d(width[0]) if width[1] == 1 else nn.BatchNorm2d(width[0]))
        else:
            layers.append(module)
    return nn.Sequential(*layers)


def _trained_quant_rows(
    measure: Measure, base: nn.Module, fresh: Callable[[], nn.Module], s: DemoSettings, progress: bool
) -> list[DemoRow]:
    """slimtorch-quant's formats that train: a BNN (Hubara et al. 2016: binary weights and
    activations; the model with BatchNorm for its ReLUs, trained from ``fresh()`` for ``epochs``,
    first and last layer real, packed to the XNOR kernels), INQ power-of-two 5-bit (the
    50/75/87.5/100 % schedule, ``retrain_epochs`` per stage), and a mixed-precision plan
    (``plan_bits`` at PLAN_RATIO x smaller, by KL to the float model on training images; post-training)."""
    try:
        from slimtorch.quant import (
            INQ,
            BinarizeConfig,
            SizeBudget,
            binarize_,
            clip_latent_weights_,
            freeze_,
            kl_to_float,
            plan_bits,
        )
        from slimtorch.quant import quantize_ as quantize
    except ImportError:
        return [pending(measure.model_name, m, "slimtorch-quant not installed") for m in ("BNN", "INQ", "plan_bits")]
    task, rows = measure.task, []

    def attempt(method: str, make: Callable[[], tuple[nn.Module, str]]) -> None:
        try:
            model, note = make()
            rows.append(measure.row(method, model, note=note))
        except Exception as err:  # a method that fails is reported, not fatal
            rows.append(DemoRow(measure.model_name, method, *[None] * 6, status="error", note=str(err)[:120]))

    def bnn():
        torch.manual_seed(s.seed)
        model = bnn_variant(fresh())
        if model is None:
            raise ValueError("the BNN row needs an nn.Sequential model whose ReLUs follow a Linear or Conv2d")
        model = binarize_(model.to(measure.device), BinarizeConfig(scale_activations=False)).model
        tasks.train(
            model, task, s.epochs, lr=1e-3, seed=s.seed, progress=progress, desc="BNN", after_step=clip_latent_weights_
        )
        report = freeze_(model)
        return report.model, f"{len(report.converted)} layers packed (first/last real), BN for ReLU, {s.epochs} epochs"

    def inq():
        model = copy.deepcopy(base)

        def retrain(m, schedule):
            tasks.train(
                m, task, s.retrain_epochs, lr=3e-4, seed=s.seed, progress=progress, after_step=schedule.after_step
            )

        report = INQ(model, bits=5).run(retrain)
        return report.model, f"{len(report.converted)} layers, 50/75/87.5/100 % schedule, retrained"

    def mixed():
        model = copy.deepcopy(base).eval()
        plan = plan_bits(model, kl_to_float(model, task.x_train[:256]), SizeBudget(ratio=PLAN_RATIO), progress=False)
        choice = ", ".join(f"{k}: {v}" for k, v in plan.choices.items())
        return quantize(model, plan.configs).model, f"{PLAN_RATIO:g}x budget: {choice}"[:120]

    attempt("BNN (binary weights + activations)", bnn)
    attempt("INQ power-of-two 5-bit", inq)
    attempt(f"mixed precision (plan_bits, {PLAN_RATIO:g}x)", mixed)
    return rows


def _kd(student: nn.Module, teacher: nn.Module, task, s: DemoSettings, progress: bool) -> nn.Module:
    from slimtorch.compress.distill import DistillConfig, Distiller

    cfg = DistillConfig(temperature=4.0, alpha=0.9, epochs=s.kd_epochs, batch_size=s.batch, seed=s.seed)
    return Distiller(student, teacher, cfg).fit(task, progress=progress)


def run_demo(
    *,
    model_names: Sequence[str] = DEMO_MODELS,
    task: tasks.Task | None = None,
    device: str | torch.device = "cpu",
    settings: DemoSettings | None = None,
    checkpoint: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[DemoRow]:
    """All rows for every model (module docstring)."""
    from slimtorch.compress.pipeline.deep_compression import DeepCompressionConfig, deep_compression
    from slimtorch.compress.pipeline.recipe import parse_recipe, run_recipe
    from slimtorch.compress.prune import UnstructuredConfig, finalize_, prune_unstructured_

    s = settings or DemoSettings()
    device = torch.device(device)
    task = task or tasks.digits_task()
    in_channels, image_size = task.input_shape[0], task.input_shape[-1]
    rows: list[DemoRow] = []
    for name in model_names:
        t0 = time.perf_counter()
        torch.manual_seed(s.seed)
        base = build_model(name, task.num_classes, in_channels, image_size).to(device)
        if checkpoint:
            import safetensors.torch

            base.load_state_dict(safetensors.torch.load_file(checkpoint, device=str(device)))
        else:
            tasks.train(base, task, s.epochs, batch_size=s.batch, seed=s.seed, progress=progress, desc=f"{name} fp32")
        m = Measure(name, task, device, s.batch)
        rows.append(m.row("fp32 baseline", base, note=checkpoint or f"{s.epochs} epochs"))

        # magnitude pruning with retraining (Han 2015), masks kept while retraining
        pruned = copy.deepcopy(base)
        for k in (1, 2):
            prune_unstructured_(pruned, UnstructuredConfig(sparsity=s.prune_sparsity * k / 2, scope="global"))
            tasks.train(pruned, task, s.retrain_epochs, lr=5e-4, seed=s.seed + k, progress=progress, desc="retrain")
        finalize_(pruned)
        rows.append(m.row(f"magnitude prune {s.prune_sparsity:.0%}", pruned, note="global, 2 rounds, retrained"))

        # filter (channel) pruning
        try:
            from slimtorch.compress.prune import Pruner
        except ImportError:
            Pruner = None
        if Pruner is None:
            rows.append(pending(name, "filter prune 50%", "slimtorch.compress.prune.Pruner not available"))
        else:
            try:
                filt = copy.deepcopy(base)
                last = [n for n, mod in filt.named_modules() if isinstance(mod, nn.Linear)][-1:]
                pruner = Pruner(
                    filt, task.x_train[:2].to(device), ratio=0.5, importance="l1", round_to=1, ignored_layers=last
                )
                filt = pruner.step()
                tasks.train(filt, task, s.retrain_epochs, lr=5e-4, seed=s.seed, progress=progress, desc="retrain")
                rows.append(m.row("filter prune 50% (L1)", filt, note="channels removed, retrained"))
            except Exception as err:
                rows.append(DemoRow(name, "filter prune 50% (L1)", *[None] * 6, status="error", note=str(err)[:120]))

        rows += _registry_rows(m, base)
        fresh = lambda name=name: build_model(name, task.num_classes, in_channels, image_size)
        rows += _trained_quant_rows(m, base, fresh, s, progress)
        rows.append(_block_circulant_row(m, base, s, progress))

        # knowledge distillation: a half-width student, with KD and on labels alone
        student = student_of(name, task.num_classes, in_channels, image_size)
        if student is None:
            rows.append(pending(name, "KD student (half width)", "no student architecture for this model"))
            kd_student = None
        else:
            labels_only = copy.deepcopy(student).to(device)
            torch.manual_seed(s.seed)
            tasks.train(
                labels_only,
                task,
                s.kd_epochs,
                batch_size=s.batch,
                seed=s.seed,
                progress=progress,
                desc="student, labels",
            )
            rows.append(m.row("student ½ width, labels only", labels_only))
            kd_student = _kd(copy.deepcopy(student).to(device), base, task, s, progress)
            rows.append(m.row("student ½ width, KD (T=4)", kd_student, note="Hinton soft targets, alpha 0.9"))

        # Deep Compression: prune, retrain, share weights, retrain centroids, Huffman
        dc_model = copy.deepcopy(base)
        dc = deep_compression(
            dc_model,
            task,
            DeepCompressionConfig(
                sparsity=s.dc_sparsity,
                prune_iterations=2,
                prune_epochs=s.retrain_epochs,
                share_epochs=s.retrain_epochs,
                seed=s.seed,
            ),
            progress=progress,
        )
        note = "file bytes: " + ", ".join(f"{k} {v:,}" for k, v in dc.file_bytes.items())
        rows.append(m.row("Deep Compression (Huffman)", dc.model, coder="huffman", note=note))

        # distil + prune + int8, one recipe
        if kd_student is not None:
            recipe = parse_recipe(
                {
                    "seed": s.seed,
                    "step": [
                        {
                            "prune": {
                                "method": "magnitude",
                                "sparsity": s.prune_sparsity,
                                "scope": "global",
                                "retrain_epochs": s.retrain_epochs,
                                "lr": 5e-4,
                            }
                        },
                        {"quantize": {"format": "int8"}},
                    ],
                }
            )
            try:
                out = run_recipe(recipe, copy.deepcopy(kd_student), task, progress=progress)
                rows.append(m.row("KD student + prune + int8", out.model, note="recipe: prune -> int8"))
            except Exception as err:
                rows.append(
                    DemoRow(name, "KD student + prune + int8", *[None] * 6, status="error", note=str(err)[:120])
                )
        else:
            rows.append(pending(name, "KD student + prune + int8", "no student architecture for this model"))
        log(f"{name}: {len([r for r in rows if r.model == name])} rows in {time.perf_counter() - t0:.0f} s")
    return rows


# ----------------------------------------------------------------------------- output


def _ratio(base: float | None, value: float | None) -> str:
    if base is None or value is None or not value:
        return ""
    return f" ({base / value:.1f}x)"


def format_table(rows: Sequence[DemoRow]) -> str:
    """Markdown in the survey's form; ratios against the model's fp32 baseline."""
    lines = [
        "| model | method | top-1 % | Δtop-1 | #params ↓ | bytes on disk ↓ | FLOPs ↓ | latency ms | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    bases = {r.model: r for r in rows if r.method == "fp32 baseline"}
    for r in rows:
        if r.status != "ok":
            lines.append(f"| {r.model} | {r.method} | {r.status} | | | | | | {r.note} |")
            continue
        b = bases.get(r.model)
        lines.append(
            f"| {r.model} | {r.method} | {100 * r.top1:.2f} | {100 * r.top1_delta:+.2f} | "
            f"{r.params:,}{_ratio(b and b.params, r.params)} | "
            f"{r.disk_bytes:,}{_ratio(b and b.disk_bytes, r.disk_bytes)} | "
            f"{r.flops:,}{_ratio(b and b.flops, r.flops)} | {r.latency_ms:.3f} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def plot_rows(rows: Sequence[DemoRow], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, model in enumerate(dict.fromkeys(r.model for r in rows)):
        ok = [r for r in rows if r.model == model and r.status == "ok"]
        ax.scatter([r.disk_bytes / 1024 for r in ok], [100 * r.top1 for r in ok], label=model, color=f"C{i}")
        for r in ok:
            ax.annotate(r.method, (r.disk_bytes / 1024, 100 * r.top1), fontsize=6, alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("bytes on disk (KiB, log)")
    ax.set_ylabel("top-1 % (held-out digits)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    bench.save_figure(fig, path)


def write_demo(rows: Sequence[DemoRow], out_dir: str | Path, *, device: torch.device, name: str = "demo") -> dict:
    """``<out_dir>/<name>.{json,md,png}``; the JSON is one object per row."""
    env = bench.Environment.collect(device)
    payload = {"environment": dataclasses.asdict(env), "rows": [dataclasses.asdict(r) for r in rows]}
    header = f"# slimtorch demo on {env.device_name} (torch {env.torch_version})\n\n"
    return bench.write_report(
        Path(out_dir) / name,
        payload,
        header + format_table(rows),
        lambda png: plot_rows(rows, png, f"accuracy against size, {env.device_name}"),
    )

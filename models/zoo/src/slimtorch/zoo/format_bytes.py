"""``python -m slimtorch.zoo.format_bytes``: bytes of every zoo family under every registered format.

For one representative model per family (random weights, 1000 classes, seed 0) and every conversion
in core's registry (:func:`slimtorch.core.registry.available_conversions`), the conversion runs on
a fresh copy of the model and its :class:`~slimtorch.core.conversions.ConversionReport` gives the
bytes of the parameters and buffers before (fp32) and after; the ratio is before / after. The
report's ``skipped`` says which Linear/Conv2d layers stayed float and why (grouped reasons counted).
Writes ``benchmarks/results/cpu/zoo_format_bytes.{json,md,png}`` (the markdown is the table in
``models/zoo/README.md``). Bytes do not depend on the weights' values, only on the layers and each
format's layout, so random weights give the numbers a trained model has.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

# one model per family of the zoo (the width the papers' headline numbers use)
REPRESENTATIVES: dict[str, str] = {
    "MobileNetV1": "slim_mobilenetv1_100",
    "MobileNetV2": "slim_mobilenetv2_100",
    "MobileNetV3": "slim_mobilenetv3_large_100",
    "ShuffleNet (V1)": "slim_shufflenetv1_g3_100",
    "ShuffleNetV2": "slim_shufflenetv2_x1_0",
    "SqueezeNet": "slim_squeezenet1_1",
    "ShiftNet": "slim_shiftnet_a",
}

OUT = Path("benchmarks/results/cpu/zoo_format_bytes")
NOT_TAKEN = "not taken by this conversion (it converts other layer kinds)"


def reason_class(reason: str) -> str:
    """A skip reason without its layer-specific numbers, so equal reasons count together
    ("groups=58: grouped/depthwise ..." → "groups=N: grouped/depthwise ...")."""
    return re.sub(r"\d+", "N", reason.split(";")[0]).strip()


def _weight_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Every Conv2d / Linear (subclasses included: the convops layers) by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}


def measure(model_name: str, conversion: str) -> dict:
    """Convert a fresh ``model_name`` with ``conversion``; bytes, ratio, and the Conv2d/Linear layers
    still float32 afterwards (the same module object at the same name, weight still fp32) with why:
    the report's reason, or "not taken by this conversion" for layers it does not consider (e.g. the
    convolutions of a Linear-only format)."""
    import slimtorch.zoo as zoo

    torch.manual_seed(0)
    model = zoo.create_model(model_name)
    layers = _weight_layers(model)
    report = zoo.apply_variant(model, conversion)
    after = dict(report.model.named_modules())
    stayed = [
        name for name, module in layers.items() if after.get(name) is module and module.weight.dtype == torch.float32
    ]
    reasons = Counter(reason_class(report.skipped.get(name, NOT_TAKEN)) for name in stayed)
    return {
        "model": model_name,
        "conversion": conversion,
        "bytes_before": report.bytes_before,
        "bytes_after": report.bytes_after,
        "ratio": report.bytes_before / report.bytes_after,
        "layers": len(layers),
        "converted": len(layers) - len(stayed),
        "float": len(stayed),
        "float_reasons": dict(reasons.most_common()),
    }


def markdown(rows: Sequence[dict], conversions: Sequence[str]) -> str:
    """Models as columns, formats as rows: ``MB (ratio×, layers left float)``."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    cell = {(r["model"], r["conversion"]): r for r in rows}
    fp32 = {m: next(r["bytes_before"] for r in rows if r["model"] == m) for m in models}
    lines = [
        "| format | " + " | ".join(f"`{m}`" for m in models) + " |",
        "|---|" + "---:|" * len(models),
        "| fp32 | " + " | ".join(f"{fp32[m] / 1e6:.2f} MB" for m in models) + " |",
    ]
    for name in conversions:
        cells = []
        for m in models:
            r = cell.get((m, name))
            if r is None or "error" in r:
                cells.append("n/a" if r is None else f"error: {r['error']}")
            else:
                cells.append(f"{r['bytes_after'] / 1e6:.2f} MB ({r['ratio']:.2f}x, {r['float']} float)")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", "Why Conv2d/Linear layers stay float32 (per format: reason, layers summed over the models):", ""]
    for name in conversions:
        reasons: Counter = Counter()
        for r in rows:
            if r["conversion"] == name:
                reasons.update(r.get("float_reasons", {}))
        if reasons:
            lines.append(f"- `{name}`: " + "; ".join(f"{reason} ({count})" for reason, count in reasons.most_common()))
    return "\n".join(lines) + "\n"


def draw(rows: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slimtorch.core.bench import save_figure

    models = list(dict.fromkeys(r["model"] for r in rows))
    conversions = list(dict.fromkeys(r["conversion"] for r in rows))
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        ratio = {r["conversion"]: r.get("ratio", 0) for r in rows if r["model"] == m}
        ratios = [ratio.get(c, 0) for c in conversions]
        ax.bar([j + i * width for j in range(len(conversions))], ratios, width, label=m)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(conversions))], conversions, rotation=45, ha="right")
    ax.set_ylabel("bytes(fp32) / bytes(format)")
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.5)
    ax.legend(fontsize=7)
    ax.set_title("zoo: compression ratio per format (parameters + buffers)")
    save_figure(fig, path)


def main(argv: Sequence[str] | None = None) -> None:
    from tqdm import tqdm

    from slimtorch.core.bench import write_report
    from slimtorch.core.registry import available_conversions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(REPRESENTATIVES.values()))
    parser.add_argument("--conversions", nargs="*", default=None, help="default: every registered conversion")
    parser.add_argument("--out", type=Path, default=OUT, help="output stem (.json, .md, .png)")
    args = parser.parse_args(argv)
    conversions = args.conversions or [entry.name for entry in available_conversions()]
    rows = []
    for model_name in tqdm(args.models, desc="models"):
        for conversion in tqdm(conversions, desc=model_name, leave=False):
            try:
                rows.append(measure(model_name, conversion))
            except Exception as error:  # a conversion that cannot take this model: shown, not hidden
                failed = f"{type(error).__name__}: {error}"
                rows.append({"model": model_name, "conversion": conversion, "error": failed})
    table = markdown(rows, conversions)
    paths = write_report(args.out, {"rows": rows}, table, lambda png: draw(rows, png))
    print(table)
    print(json.dumps({k: str(v) for k, v in paths.items()}))


if __name__ == "__main__":
    main()

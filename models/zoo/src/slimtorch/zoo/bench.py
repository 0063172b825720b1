"""``python -m slimtorch.zoo.bench``: images per second of the zoo's models on a CUDA GPU.

Every model runs in eval mode without gradients, in float16 and channels_last, at its default
input size (224x224; 32x32 for the CIFAR models), at batch 1, 32 and 256. Providers:

- ``torchvision``: torchvision's model of the same architecture, random weights (the
  baseline, where torchvision has the model);
- ``torchvision+compile``: ``torch.compile`` of it;
- ``ours``: the zoo model, eager;
- ``ours+compile``: ``torch.compile`` of the zoo model.

Inputs rotate (``slimtorch.core.bench.RotatingInputs``) so that repeated calls do not time the
cache. ``flops`` is ``2 · MACs · batch`` from :func:`slimtorch.zoo.profile`. Results go to
``benchmarks/results/<device>/zoo.{json,md,png}`` (the markdown gains an images/s table).
``--quick`` times MobileNetV2-1.0 at batch 1 and 32 only; ``--all`` every registered model
except the pruned ones; ``--models`` picks by shell pattern.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from slimtorch.core.bench import Bench, Environment, RotatingInputs, ceilings, common_arguments, write_results

BATCHES = (1, 32, 256)
# The models of the speed goals and one headline model per family.
DEFAULT_MODELS = (
    "slim_mobilenetv1_100",
    "slim_mobilenetv2_100",
    "slim_mobilenetv3_large_100",
    "slim_mobilenetv3_small_100",
    "slim_shufflenetv1_g3_100",
    "slim_shufflenetv2_x1_0",
    "slim_squeezenet1_0",
    "slim_squeezenet1_1",
    "slim_shiftnet_a",
    "slim_shiftresnet56",
)
QUICK_MODELS, QUICK_BATCHES = ("slim_mobilenetv2_100",), (1, 32)
BASELINE = "torchvision"


@dataclass
class Case:
    model: str
    provider: str
    batch: int
    fn: Callable[[], object]
    flops: float
    input_size: tuple[int, ...]


def _prepare(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    return model.eval().to(device=device, dtype=dtype, memory_format=torch.channels_last)


def _providers(name: str, device: torch.device, dtype: torch.dtype, compile_models: bool) -> dict[str, nn.Module]:
    import slimtorch.zoo as zoo

    models = {"ours": _prepare(zoo.create_model(name), device, dtype)}
    tv = [eq for eq in zoo.model_card(name).equivalents if eq.library == "torchvision"]
    if tv:
        models[BASELINE] = _prepare(tv[0].build(), device, dtype)
    if compile_models:
        for provider in list(models):
            models[f"{provider}+compile"] = torch.compile(models[provider])
    return models


def cases(
    names: Sequence[str],
    batches: Sequence[int],
    *,
    device: torch.device | str,
    dtype: torch.dtype = torch.float16,
    compile_models: bool = True,
) -> list[Case]:
    """One :class:`Case` per (model, provider, batch); ``fn()`` runs one timed forward."""
    import slimtorch.zoo as zoo

    device = torch.device(device)
    out = []
    for name in names:
        models = _providers(name, device, dtype, compile_models)
        input_size = tuple(models["ours"].pretrained_cfg["input_size"])
        with torch.device("meta"):
            macs = zoo.profile(zoo.create_model(name), (1, *input_size)).macs
        for batch in batches:
            shape = (batch, *input_size)
            make = lambda shape=shape: (
                torch.randn(shape, device=device, dtype=dtype).to(memory_format=torch.channels_last),
            )
            inputs = RotatingInputs(make, device=device)
            for provider, model in models.items():

                def run(model: nn.Module = model, inputs: RotatingInputs = inputs) -> torch.Tensor:
                    with torch.no_grad():
                        return model(*inputs())

                out.append(Case(name, provider, batch, run, 2.0 * macs * batch, input_size))
    return out


def images_per_second_table(results: Sequence) -> str:
    """Markdown: images/s per model and batch, one column per provider."""
    providers = list(dict.fromkeys(r.provider for r in results))
    lines = ["", "## images/s", "", "| model | batch | " + " | ".join(providers) + " |"]
    lines.append("|---|---:|" + "---:|" * len(providers))
    for case, batch in dict.fromkeys((r.case, r.x) for r in results):
        row = {r.provider: r for r in results if (r.case, r.x) == (case, batch)}
        cells = [
            f"{batch / (row[p].median_ms * 1e-3):.0f}" if p in row and row[p].error is None else "" for p in providers
        ]
        lines.append(f"| {case} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    import slimtorch.zoo as zoo

    parser = common_arguments("Images/s of the slimtorch zoo against torchvision (fp16, channels_last).")
    parser.add_argument("--all", action="store_true", help="every registered model except the pruned ones")
    parser.add_argument("--models", nargs="*", default=None, help="shell patterns of model names")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile providers")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda":
        parser.error("slimtorch.zoo.bench measures GPU throughput: run it with a CUDA device")
    if args.quick:
        names, batches = QUICK_MODELS, QUICK_BATCHES
    elif args.models:
        names, batches = [n for n in zoo.list_models() if any(fnmatch.fnmatch(n, p) for p in args.models)], BATCHES
    elif args.all:
        names, batches = [n for n in zoo.list_models() if "pruned" not in n], BATCHES
    else:
        names, batches = DEFAULT_MODELS, BATCHES
    bench = Bench("zoo", device=device, baseline=BASELINE)
    for case in cases(names, batches, device=device, compile_models=not args.no_compile):
        shape = {"batch": case.batch, "input": list(case.input_size)}
        bench.add(
            case.model, x=case.batch, provider=case.provider, fn=case.fn, shape=shape, dtype="float16", flops=case.flops
        )
    ceil = ceilings(device)
    results = bench.run(ceil=ceil)
    env = Environment.collect(device, ceilings=ceil)
    paths = write_results(results, env, args.out, "zoo")
    table = images_per_second_table(results)
    with paths["md"].open("a") as md:
        md.write(table)
    print(table)
    print("wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()

"""The ``slimtorch`` command (also ``python -m slimtorch.compress``).

slimtorch demo [--model lenet300_100,lenet5] [--data digits|DIR] [--quick] [--out DIR]
slimtorch compress MODEL --recipe R.toml [--data digits|DIR] [--checkpoint W.safetensors] --out F.safetensors
slimtorch eval F.safetensors [--data digits|DIR]
slimtorch profile MODEL|F.safetensors      # params, MACs, bytes, latency
slimtorch bench [--model MODEL]            # latency of the model and every registered conversion
slimtorch formats                          # the conversions the installed packages register
slimtorch info                             # versions, devices, dispatch settings, installed packages

Bad arguments get one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from slimtorch.core import container


class UsageError(Exception):
    """A bad argument found after parsing (exit code 2, one line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's default prints the usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name}: expected a positive integer, got {value}")
        return value

    return parse


def _device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"--device: expected cpu or cuda[:N], got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"--device: expected cpu or cuda[:N], got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("--device: cuda requested but no CUDA GPU is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"--device: {text} requested, only {torch.cuda.device_count()} GPUs")
    return device


def _new_file(text: str) -> Path:
    path = Path(text)
    if path.exists():
        raise argparse.ArgumentTypeError(f"--out: {text} exists; choose a new file name")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"--out: the folder {str(path.parent)!r} does not exist")
    return path


def _out_dir(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"--out: {text} exists and is not a folder")
    return path


def _existing_file(what: str):
    def parse(text: str) -> Path:
        if not Path(text).is_file():
            raise argparse.ArgumentTypeError(f"{what}: no such file: {text!r}")
        return Path(text)

    return parse


def _task(args) -> tuple:
    from slimtorch.compress import tasks

    try:
        return tasks.load_task(args.data, image_size=args.image_size, seed=getattr(args, "seed", 0))
    except ValueError as err:
        raise UsageError(str(err)) from err


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------- commands


def _cmd_demo(args: argparse.Namespace) -> int:
    from slimtorch.compress import demo

    models = [m.strip() for m in args.model.split(",") if m.strip()]
    task = _task(args)
    settings = demo.DemoSettings.quick() if args.quick else demo.DemoSettings()
    settings = dataclasses.replace(settings, seed=args.seed, **({"batch": args.batch} if args.batch else {}))
    for name in models:  # fail early, before any training
        try:
            demo.build_model(name, task.num_classes, task.input_shape[0], task.input_shape[-1])
        except ValueError as err:
            raise UsageError(str(err)) from err
    rows = demo.run_demo(
        model_names=models,
        task=task,
        device=args.device,
        settings=settings,
        checkpoint=str(args.checkpoint) if args.checkpoint else None,
        progress=not args.no_progress,
    )
    print(f"\n{task.name}: {len(task.x_train)} training / {len(task.x_test)} held-out images, device {args.device}\n")
    print(demo.format_table(rows))
    paths = demo.write_demo(rows, args.out, device=args.device)
    print("wrote", ", ".join(str(p) for p in paths.values()))
    errors = [f"{r.model}: {r.method}" for r in rows if r.status == "error"]
    if errors:
        print("rows that failed:", ", ".join(errors))
    return 1 if errors else 0


def _build(name: str, task, device) -> torch.nn.Module:
    from slimtorch.compress import demo

    try:
        return demo.build_model(name, task.num_classes, task.input_shape[0], task.input_shape[-1]).to(device)
    except ValueError as err:
        raise UsageError(str(err)) from err


def _cmd_compress(args: argparse.Namespace) -> int:
    import safetensors.torch

    from slimtorch.compress import demo, tasks
    from slimtorch.compress.pipeline import RecipeError, load_recipe, run_recipe

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as err:
        raise UsageError(f"--recipe {args.recipe}: {err}") from err
    task = _task(args)
    model = _build(args.model, task, args.device)
    if args.checkpoint:
        try:
            model.load_state_dict(safetensors.torch.load_file(str(args.checkpoint), device=str(args.device)))
        except Exception as err:
            raise UsageError(f"--checkpoint: cannot load {args.checkpoint} into {args.model}: {err}") from err
    else:
        tasks.train(model, task, args.epochs, batch_size=args.batch, progress=not args.no_progress, desc="baseline")
    before = tasks.evaluate(model, task)
    result = run_recipe(recipe, model, task, progress=not args.no_progress, teachers={"baseline": copy.deepcopy(model)})
    after = tasks.evaluate(result.model, task)
    arch = demo.architecture_of(args.model, task.num_classes, task.input_shape[0], task.input_shape[-1])
    extra = {"recipe": recipe.name, "top1_before": before, "top1_after": after, "report": result.report.to_dict()}
    saved = container.save_compressed(result.model.cpu(), args.out, coder=recipe.coder, architecture=arch, extra=extra)
    print(result.report)
    print(
        f"top-1 {100 * before:.2f}% -> {100 * after:.2f}%; "
        f"wrote {saved.path} ({saved.file_bytes:,} bytes, {recipe.coder})"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from slimtorch.compress import tasks

    try:
        model = container.load_model(args.file, builders=tasks.MODELS).to(args.device)
    except (ValueError, TypeError, ImportError) as err:  # the loader's errors name the file and the key
        raise UsageError(str(err)) from err
    task = _task(args)
    print(
        f"{args.file}: top-1 {100 * tasks.evaluate(model, task):.2f}% "
        f"on {len(task.x_test)} held-out images of {task.name}"
    )
    return 0


def _load_any(target: str, device, image_size: int):
    """A compressed file, or a model name built with random weights."""
    from slimtorch.compress import demo, tasks

    if target.endswith(".safetensors") or Path(target).is_file():
        try:
            return container.load_model(target, builders=tasks.MODELS).to(device)
        except (ValueError, TypeError, ImportError, FileNotFoundError) as err:
            raise UsageError(str(err)) from err
    try:
        return demo.build_model(target, 10, 1, image_size).to(device)
    except ValueError as err:
        raise UsageError(str(err)) from err


def _input_for(model: torch.nn.Module, batch: int, image_size: int, device) -> torch.Tensor:
    first = next(m for m in model.modules() if hasattr(m, "in_features") or hasattr(m, "in_channels"))
    channels = getattr(first, "in_channels", None)
    if channels is None:  # a flattening MLP: in_features = C·S·S
        channels = max(1, first.in_features // (image_size * image_size))
    return torch.randn(batch, channels, image_size, image_size, device=device)


def _cmd_profile(args: argparse.Namespace) -> int:
    from slimtorch.compress import demo
    from slimtorch.core import bench
    from slimtorch.core.model_stats import memory_bytes

    model = _load_any(args.target, args.device, args.image_size).eval()
    x = _input_for(model, args.batch, args.image_size, args.device)
    flops = demo.count_flops(model, x[:1])
    disk, note = demo.file_bytes(model.cpu())
    model.to(args.device)
    with torch.no_grad():
        timing = bench.time_fn(lambda: model(x), device=args.device)
    print(
        f"{args.target}: {demo.effective_params(model):,} nonzero params, {flops // 2:,} MACs/image, "
        f"{memory_bytes(model):,} bytes in memory, {disk:,} on disk{' (' + note + ')' if note else ''}, "
        f"{timing.median_ms:.3f} ms median for batch {args.batch} on {args.device}"
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from slimtorch.compress import demo
    from slimtorch.core import bench
    from slimtorch.core.registry import available_conversions

    model = _load_any(args.model, args.device, args.image_size).eval()
    x = _input_for(model, args.batch, args.image_size, args.device)
    print(f"| conversion | latency ms (median, batch {args.batch}, {args.device}) | bytes on disk |")
    print("|---|---:|---:|")
    for name, convert in [("fp32", lambda m: m)] + [(e.name, e.convert) for e in available_conversions(args.device)]:
        try:
            out = convert(copy.deepcopy(model))
            m = getattr(out, "model", out).eval()
            xi = x.to(next(iter(m.parameters()), next(iter(m.buffers()), x)).dtype)
            with torch.no_grad():
                t = bench.time_fn(lambda m=m, xi=xi: m(xi), device=args.device)
            print(f"| {name} | {t.median_ms:.3f} | {demo.file_bytes(m.cpu())[0]:,} |")
            m.to(args.device)
        except Exception as err:  # one conversion failing is a row, not the end
            print(f"| {name} | error: {str(err)[:80]} | |")
    return 0


def _cmd_formats(args: argparse.Namespace) -> int:
    from slimtorch.core.registry import available_conversions

    for entry in available_conversions():
        print(f"{entry.name:28s} {entry.family:10s} {'/'.join(entry.devices):9s} {entry.description}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from slimtorch.core.registry import import_all_packages

    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), cuda available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name()}")
    try:
        import triton

        print(f"triton {triton.__version__}")
    except ImportError:
        print("triton: not installed")
    print("slimtorch packages:", ", ".join(import_all_packages()))
    for var in ("SLIMTORCH_BACKEND", "SLIMTORCH_DISPATCH", "TRITON_INTERPRET"):
        print(f"{var}={os.environ.get(var, '')}")
    from slimtorch.core.dispatch import preferred_backend

    rule = "core's backend rule; auto = GPU kernels on CUDA, references on CPU"
    print(f"backend preference: {preferred_backend()} ({rule})")
    from slimtorch.core import measured

    for line in measured.describe():  # the mode, the cache file, every cached kernel-vs-torch choice
        print(line)
    return 0


# ----------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser, *, data: bool = True, batch: int | None = 64) -> None:
    p.add_argument("--device", type=_device, default=_default_device(), help="cpu or cuda[:N]")
    p.add_argument("--batch", type=_positive("--batch"), default=batch)
    p.add_argument("--image-size", type=_positive("--image-size"), default=28)
    if data:
        p.add_argument("--data", default="digits", help="'digits' (embedded) or an ImageFolder directory")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="slimtorch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("demo", help="train LeNets on digits, compress them every way, compare")
    p.add_argument(
        "--model", default="lenet300_100,lenet5", help="comma-separated: lenet300_100, lenet5, zoo/timm names"
    )
    p.add_argument(
        "--checkpoint",
        type=_existing_file("--checkpoint"),
        default=None,
        help="safetensors weights of the (single) model instead of training it",
    )
    p.add_argument("--quick", action="store_true", help="one epoch per stage (a smoke run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=_out_dir, default=Path("demo-results"), help="folder for the JSON/markdown/PNG")
    _common(p, batch=None)
    p.set_defaults(run=_cmd_demo)

    p = sub.add_parser("compress", help="compress a model with a TOML recipe into one file")
    p.add_argument("model", help="lenet300_100, lenet5, or a zoo/timm model name")
    p.add_argument("--recipe", required=True, type=_existing_file("--recipe"))
    p.add_argument("--checkpoint", type=_existing_file("--checkpoint"), default=None)
    p.add_argument("--epochs", type=_positive("--epochs"), default=8, help="baseline training without --checkpoint")
    p.add_argument("--out", required=True, type=_new_file)
    _common(p)
    p.set_defaults(run=_cmd_compress)

    p = sub.add_parser("eval", help="top-1 of a compressed file on a data set")
    p.add_argument("file", type=_existing_file("file"))
    _common(p)
    p.set_defaults(run=_cmd_eval)

    p = sub.add_parser("profile", help="params, MACs, bytes and latency of a model or compressed file")
    p.add_argument("target", help="a model name or a compressed .safetensors file")
    _common(p, data=False)
    p.set_defaults(run=_cmd_profile)

    p = sub.add_parser("bench", help="latency of a model and of every registered conversion of it")
    p.add_argument("--model", default="lenet5")
    _common(p, data=False)
    p.set_defaults(run=_cmd_bench)

    sub.add_parser("formats", help="list the conversions installed").set_defaults(run=_cmd_formats)
    sub.add_parser("info", help="versions, device and dispatch settings").set_defaults(run=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
    except UsageError as err:
        print(f"slimtorch {args.command}: error: {err}", file=sys.stderr)
        code = 2
    raise SystemExit(code)

"""The ``slimtorch`` command (also ``python -m slimtorch.compress``).

slimtorch demo [--model small-cnn] [--device cuda] [--formats int8-weight-only,fp16] [--out DIR]
slimtorch formats     # what the installed packages can do
slimtorch info        # versions, devices, dispatch settings, installed packages
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch

from slimtorch.compress import demo
from slimtorch.core.formats import available_formats, import_all_packages


def _cmd_demo(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()] if args.formats else None
    models = [m.strip() for m in args.model.split(",") if m.strip()] if args.model else demo.default_models()
    batch = args.batch or (64 if device.type == "cuda" else 8)
    failed = []
    for name in models:
        size = args.image_size or demo.default_image_size(name)
        rows = demo.run_demo(
            model_name=name,
            device=device,
            batch=batch,
            image_size=size,
            formats=formats,
            progress=not args.no_progress,
        )
        print(f"\n{name} on {device}, batch {batch}, {size}x{size} images\n")
        print(demo.format_table(rows))
        paths = demo.write_demo(rows, args.out, model_name=name, device=device)
        print("wrote", ", ".join(str(p) for p in paths.values()))
        failed += [f"{name}: {r.format}" for r in rows if r.error]
    if failed:
        print("formats that failed:", ", ".join(failed))
    return 1 if failed else 0


def _cmd_formats(args: argparse.Namespace) -> int:
    for fmt in available_formats():
        print(f"{fmt.name:28s} {fmt.family:10s} {'/'.join(fmt.devices):9s} {fmt.description}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), cuda available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name()}")
    try:
        import triton

        print(f"triton {triton.__version__}")
    except ImportError:
        print("triton: not installed")
    print("slimtorch packages:", ", ".join(import_all_packages()))
    for var in ("SLIMTORCH_FORCE_TRITON", "TRITON_INTERPRET", "SLIMTORCH_REFERENCE_ONLY"):
        print(f"{var}={os.environ.get(var, '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimtorch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="compress a compact CNN every available way and compare")
    p.add_argument(
        "--model",
        default=None,
        help="comma-separated model names: small-cnn, zoo or timm names "
        "(default: slim_mobilenetv2_100,slim_shufflenetv2_x1_0 with slimtorch-zoo installed, else small-cnn)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 8 on CPU")
    p.add_argument("--image-size", type=int, default=None, help="default: 224 (64 for small-cnn)")
    p.add_argument("--formats", default=None, help="comma-separated subset (default: all available)")
    p.add_argument("--out", default="demo-results", help="folder for the JSON/markdown/PNG results")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_cmd_demo)
    sub.add_parser("formats", help="list the compression formats installed").set_defaults(run=_cmd_formats)
    sub.add_parser("info", help="versions, device and dispatch settings").set_defaults(run=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    raise SystemExit(args.run(args))

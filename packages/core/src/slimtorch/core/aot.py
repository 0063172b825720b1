"""Compile Triton kernels ahead of time for a real GPU arch, without a GPU.

The Triton interpreter accepts programs the compiler rejects (layouts, reshape/join, dtype
mixes), so the CPU suite also builds every kernel to a cubin for sm_90 with Triton's own compiler
and the ptxas it ships. A package lists its kernels' specialisations in a file exposing

    def aot_specs(quick: bool) -> Iterable[KernelSpec]

(``quick``: one config per kernel and mode, for the test suite; otherwise every autotune config),
and its test calls :func:`check_compiles` on that file. ``python -m slimtorch.core.aot FILE
[--arch 90] [--all]`` does the same by hand. Compilation must happen without
``TRITON_INTERPRET`` (kernels must be real JITFunctions), hence the subprocess.

Specs should come from the launchers themselves: :func:`captured_specs` calls them on fake CUDA
tensors (:mod:`slimtorch.core.capture`) and turns each launch into a spec holding exactly the
specialisation Triton's runtime computes (ints equal to 1 become constants, 16-divisible pointers,
strides and sizes get divisibility hints), so the specs follow signature changes by themselves.
Hand-written specs (kernels with no launcher, e.g. test kernels) model the same two rules with
``aligned`` and ``ones``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import triton


@dataclass(frozen=True)
class KernelSpec:
    """One specialisation: runtime arguments named in ``pointers`` are pointers (e.g. "*fp16"),
    in ``scalars`` scalars of that type (e.g. "fp32"), every other runtime argument is "i32".
    Arguments named in ``aligned`` are specialised as multiples of 16 (as Triton does at run time
    for aligned pointers, strides and sizes), which changes the generated code."""

    name: str
    kernel: object  # the decorated kernel: a JITFunction, possibly under autotune/heuristics
    pointers: dict[str, str]
    constexprs: dict[str, object]
    num_warps: int = 4
    num_stages: int = 3
    scalars: dict[str, str] = field(default_factory=dict)
    aligned: tuple[str, ...] = ()
    ones: tuple[str, ...] = ()  # runtime ints equal to 1: Triton compiles them as constants
    launch: object | None = None  # a captured TritonLaunch: compiled exactly as recorded

    @classmethod
    def from_launch(cls, name: str, launch: object) -> KernelSpec:
        """A spec for one launch captured by :func:`slimtorch.core.capture.capture`."""
        return cls(name, launch.kernel, {}, launch.constexpr_values(), launch.num_warps, 0, launch=launch)

    @classmethod
    def from_config(
        cls,
        name: str,
        kernel: object,
        pointers: dict[str, str],
        constexprs: dict[str, object],
        config: triton.Config,
        scalars: dict[str, str] | None = None,
        aligned: tuple[str, ...] = (),
    ) -> KernelSpec:
        """A spec for one autotune ``config`` (its kwargs join the constexprs)."""
        return cls(
            name,
            kernel,
            pointers,
            {**constexprs, **config.kwargs},
            config.num_warps,
            config.num_stages,
            dict(scalars or {}),
            tuple(aligned),
        )


def _jit_function(kernel: object) -> object:
    """Unwrap autotune / heuristics decorators down to the JITFunction."""
    from triton.runtime.jit import JITFunction

    while not isinstance(kernel, JITFunction):
        if not hasattr(kernel, "fn"):
            raise TypeError(f"kernel: expected a @triton.jit function (TRITON_INTERPRET must be unset), got {kernel!r}")
        kernel = kernel.fn
    return kernel


def compile_spec(spec: KernelSpec, arch: int = 90) -> bytes:
    """Compile one specialisation to a cubin for ``sm_<arch>``; returns the cubin."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if spec.launch is not None:
        return spec.launch.compile(arch).asm["cubin"]
    jit = _jit_function(spec.kernel)
    constexprs = {name: value for name, value in spec.constexprs.items() if name in jit.arg_names}
    constexprs.update({name: 1 for name in spec.ones if name in jit.arg_names})
    signature = {
        name: "constexpr" if name in constexprs else spec.pointers.get(name) or spec.scalars.get(name, "i32")
        for name in jit.arg_names
    }
    unknown = set(spec.constexprs) - set(jit.arg_names)
    unknown |= (set(spec.aligned) | set(spec.ones)) - set(jit.arg_names)
    if unknown:
        raise ValueError(f"{spec.name}: {sorted(unknown)} are not arguments of {jit.__name__}")
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(jit.arg_names) if name in spec.aligned}
    source = ASTSource(jit, signature, constexprs=constexprs, attrs=attrs)
    options = {"num_warps": spec.num_warps, "num_stages": spec.num_stages}
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    return compiled.asm["cubin"]


def captured_specs(prefix: str, run: Callable[[], object], quick: bool) -> list[KernelSpec]:
    """Specs for every Triton launch ``run()`` makes inside :func:`slimtorch.core.capture.capture`
    (call launchers on ``device="cuda"`` tensors there), one per distinct specialisation; ``quick``
    keeps the first autotune config of each autotuned launch."""
    from slimtorch.core.capture import TritonLaunch, capture

    specs, seen = [], set()
    with capture() as launches:
        run()
    for launch in launches:
        if not isinstance(launch, TritonLaunch) or (quick and (launch.config_index or 0) > 0):
            continue
        key = launch.key()
        if key not in seen:
            seen.add(key)
            config = "" if launch.config is None else f" {launch.config}"
            specs.append(KernelSpec.from_launch(f"{prefix} {launch.name}{config}", launch))
    return specs


def load_specs(path: str | Path, quick: bool) -> list[KernelSpec]:
    module_spec = importlib.util.spec_from_file_location(f"_aot_specs_{Path(path).stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise FileNotFoundError(f"specs file: cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return list(module.aot_specs(quick))


compiled_kernels: set[str] = set()  # names of the @triton.jit kernels the last compile_all built


def compile_all(specs: Iterable[KernelSpec], arch: int = 90) -> int:
    """Compile every spec; raise SystemExit naming the first one that fails. Returns the count."""
    count = 0
    compiled_kernels.clear()
    for spec in specs:
        try:
            cubin = compile_spec(spec, arch)
        except Exception as err:
            raise SystemExit(f"{spec.name} failed to compile for sm_{arch}: {type(err).__name__}: {err}") from err
        if cubin[:4] != b"\x7fELF":
            raise SystemExit(f"{spec.name}: the compiler returned no cubin for sm_{arch}")
        compiled_kernels.add(_jit_function(spec.kernel).__name__)
        count += 1
    return count


def check_compiles(specs_file: str | Path, *, arch: int = 90, quick: bool = True, timeout: int = 900) -> str:
    """Compile a package's specs in a fresh interpreter without TRITON_INTERPRET (for tests);
    raises AssertionError with the compiler's message on failure, returns the summary line."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SLIMTORCH_BACKEND")}
    cmd = [sys.executable, "-m", "slimtorch.core.aot", str(specs_file), "--arch", str(arch)]
    run = subprocess.run(
        [*cmd, *([] if quick else ["--all"])], env=env, capture_output=True, text=True, timeout=timeout
    )
    if run.returncode != 0:
        raise AssertionError(f"AOT compile for sm_{arch} failed:\n{run.stdout}\n{run.stderr[-4000:]}")
    return run.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs_file", help="a Python file defining aot_specs(quick)")
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 80 or 90")
    parser.add_argument("--all", action="store_true", help="every autotune config, not only one per kernel")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise SystemExit("unset TRITON_INTERPRET: AOT compilation needs real @triton.jit kernels")
    start = time.time()
    count = compile_all(load_specs(args.specs_file, quick=not args.all), args.arch)
    kernels = ", ".join(sorted(compiled_kernels))
    print(f"compiled {count} kernel specialisations for sm_{args.arch} in {time.time() - start:.0f}s: {kernels}")


if __name__ == "__main__":
    main()

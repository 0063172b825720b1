"""Capture the kernel launches a launcher makes, specialised exactly as at run time, without a GPU.

Inside ``with capture() as launches:`` tensors created on ``"cuda"`` are fake (torch's
``FakeTensorMode``: shapes, dtypes, strides, no data), the device reports an H100/H200 (132 SMs,
sm_90), and calling a launcher (``slimtorch.quant.int4_weight_mm.launcher(x, ...)``) runs its
Python code for real (planning, split-K choice, allocation) while every kernel launch is recorded
instead of run:

- Triton (``JITFunction.run``): the arguments go through Triton's own binder for an sm_90 backend
  (``create_function_from_signature`` + ``JITFunction._pack_args``, the code ``run`` uses, in
  Triton 3.6 and 3.9 alike), so the signature, the constexprs (including ints equal to 1) and the
  16-divisibility attributes (pointers, strides, sizes) are the ones the runtime would compile.
  Tensors reach the binder as stand-ins whose ``data_ptr()`` is a 256-aligned base (what the
  caching allocator returns) plus the view's byte offset, so misaligned views stay misaligned.
- Autotuners (``Autotuner.run``): every config that survives the kernel's own pruning is
  recorded, each as one launch carrying the config and the autotune key.
- CUDA-C (``slimtorch.core.cuda.load_module(...).kernel(name)(grid, block, args)``): name, grid,
  block and dynamic shared memory.

:meth:`TritonLaunch.compile` then builds the recorded specialisation with ``triton.compile`` for
sm_90a (Triton compiles capability 90 as sm_90a), which is what ``slimtorch.core.sass`` reads.
Data-dependent reads in packing code (``bool(t.all())``, ``t.item()``) see 1 / True; code whose
*shapes* depend on data (``nonzero``) raises, and callers then build those tensors on the CPU and
move them to the fake device (:func:`fake_cuda`).
"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import torch
import triton

ARCH = 90  # compute capability compiled for (sm_90a)
SM_COUNT = 132  # H100 SXM and H200: 132 SMs
DEVICE_NAME = "NVIDIA H100/H200 (sm_90, 132 SMs; captured)"
_BASE_PTR = 1 << 40  # fake allocation base: 256-aligned like cudaMalloc


@dataclass
class TritonLaunch:
    """One Triton launch as the runtime would specialise it."""

    kernel: Any  # the JITFunction
    signature: dict[str, str]
    constexprs: dict[tuple, Any]  # argument path -> value (constexpr parameters and specialised ints)
    attrs: dict[tuple, Any]  # argument path -> [["tt.divisibility", 16]] etc.
    options: dict[str, Any]  # the backend options (num_warps, num_stages, ...)
    grid: tuple[int, ...]
    args: dict[str, Any]  # name -> int/float/bool value, or a TensorInfo for tensors
    config: dict[str, Any] | None = None  # the autotune config (kwargs + num_warps/num_stages)
    config_index: int | None = None
    n_configs: int = 1
    autotune_key: tuple | None = None

    @property
    def name(self) -> str:
        return self.kernel.__name__

    @property
    def num_warps(self) -> int:
        return int(self.options["num_warps"])

    @property
    def programs(self) -> int:
        total = 1
        for g in self.grid:
            total *= int(g)
        return total

    def constexpr_values(self) -> dict[str, Any]:
        """Constexprs by parameter name (explicit constexprs and runtime-specialised ints)."""
        names = self.kernel.arg_names
        return {names[path[0]]: value for path, value in self.constexprs.items() if len(path) == 1}

    def specialised_ints(self) -> list[str]:
        """Runtime int arguments the binder turned into constants (== 1)."""
        return [n for n, t in self.signature.items() if t == "constexpr" and not self._is_declared_constexpr(n)]

    def divisible(self) -> list[str]:
        names = self.kernel.arg_names
        return [names[p[0]] for p, a in self.attrs.items() if len(p) == 1 and ["tt.divisibility", 16] in list(a)]

    def _is_declared_constexpr(self, name: str) -> bool:
        return self.kernel.params[self.kernel.arg_names.index(name)].is_constexpr

    def source(self):
        from triton.compiler import ASTSource

        return ASTSource(self.kernel, dict(self.signature), dict(self.constexprs), dict(self.attrs))

    def key(self) -> str:
        """Identifies the compiled binary: the source hash plus the options."""
        options = {k: v for k, v in sorted(self.options.items()) if k != "debug"}
        return f"{self.source().hash()}-{options}"

    def compile(self, arch: int = ARCH):
        """The CompiledKernel (``.asm['cubin']``, ``.metadata``) for ``sm_<arch>`` (90 → sm_90a)."""
        from triton.backends.compiler import GPUTarget

        options = {k: v for k, v in self.options.items() if k != "arch"}  # the target sets it
        return triton.compile(self.source(), target=GPUTarget("cuda", arch, 32), options=options)


@dataclass
class CudaLaunch:
    """One CUDA-C launch through slimtorch.core.cuda."""

    source: str  # the .cu file name
    name: str
    grid: tuple[int, ...]
    block: tuple[int, ...]
    shared_mem: int
    args: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str
    nbytes: int


class _Pointer:
    """What Triton's binder sees for a tensor: dtype and a data_ptr with the view's alignment."""

    def __init__(self, tensor: torch.Tensor):
        self.dtype = tensor.dtype
        self._ptr = _BASE_PTR + tensor.storage_offset() * tensor.element_size()

    def data_ptr(self) -> int:
        return self._ptr


def _info(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorInfo(
            tuple(value.shape), str(value.dtype).removeprefix("torch."), value.numel() * value.element_size()
        )
    return value


def _device_properties(sm_count: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        name=DEVICE_NAME,
        major=9,
        minor=0,
        multi_processor_count=sm_count,
        total_memory=80 * 2**30,
        L2_cache_size=50 * 2**20,
        regs_per_multiprocessor=65536,
        max_threads_per_multi_processor=2048,
        shared_memory_per_multiprocessor=233472,
        shared_memory_per_block_optin=232448,
        warp_size=32,
    )


class _DataScalars(torch.utils._python_dispatch.TorchDispatchMode):
    """Reads of a fake tensor's value (``.item()``, ``bool()``) return 1 / True."""

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            t = args[0]
            return True if t.dtype == torch.bool else (1.0 if t.dtype.is_floating_point else 1)
        return func(*args, **(kwargs or {}))


class _Recorder:
    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget
        from triton.compiler import make_backend

        self.backend = make_backend(GPUTarget("cuda", arch, 32))
        self.launches: list[TritonLaunch | CudaLaunch] = []
        self._binders: dict[int, Callable] = {}
        self.autotune: dict[str, Any] | None = None  # set while an Autotuner walks its configs

    def jit_run(self, fn, *args, grid, warmup, **kwargs):
        from triton.runtime.jit import create_function_from_signature

        binder = self._binders.get(id(fn))
        if binder is None:
            binder = self._binders[id(fn)] = create_function_from_signature(fn.signature, fn.params, self.backend)
        named = dict(zip(fn.arg_names, args, strict=False))
        named.update({k: v for k, v in kwargs.items() if k in fn.arg_names})
        args = tuple(_Pointer(a) if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: _Pointer(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        kwargs.setdefault("debug", False)
        bound, specialization, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(self.backend, kwargs, bound, specialization, options)
        meta = {k: (v if not isinstance(v, _Pointer) else None) for k, v in bound.items()}
        grid = grid(meta) if callable(grid) else grid
        auto = self.autotune or {}
        self.launches.append(
            TritonLaunch(
                kernel=fn,
                signature=dict(signature),
                constexprs=dict(constexprs),
                attrs=dict(attrs),
                options=dict(options.__dict__),
                grid=tuple(int(g) for g in grid),
                args={k: _info(v) for k, v in named.items()},
                config=auto.get("config"),
                config_index=auto.get("index"),
                n_configs=auto.get("count", 1),
                autotune_key=auto.get("key"),
            )
        )
        return None

    def autotune_run(self, tuner, *args, **kwargs):
        tuner.nargs = dict(zip(tuner.arg_names, args, strict=False))
        all_args = {**tuner.nargs, **kwargs}
        key = [all_args[k] for k in tuner.keys if k in all_args]
        key += [str(a.dtype) for a in all_args.values() if hasattr(a, "dtype")]
        configs = tuner.prune_configs(kwargs) if getattr(tuner, "early_config_prune", None) else tuner.configs
        try:
            for index, config in enumerate(configs):
                self.autotune = {
                    "config": {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages},
                    "index": index,
                    "count": len(configs),
                    "key": tuple(key),
                }
                tuner.fn.run(*args, **kwargs, **config.all_kwargs())
        finally:
            self.autotune = None
            tuner.nargs = None

    def cuda_module(self, source, **_):
        recorder = self
        filename = getattr(source, "name", str(source)).rsplit("/", 1)[-1]

        class _Kernel:
            def __init__(self, name: str):
                self.name = name

            def __call__(self, grid, block, args, *, shared_mem=0):
                recorder.launches.append(
                    CudaLaunch(filename, self.name, tuple(grid), tuple(block), shared_mem, [_info(a) for a in args])
                )

        return types.SimpleNamespace(kernel=_Kernel, filename=filename)


@contextlib.contextmanager
def capture(arch: int = ARCH, sm_count: int = SM_COUNT) -> Iterator[list[TritonLaunch | CudaLaunch]]:
    """Fake CUDA device + launch recording (see the module doc); yields the list of launches."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    from slimtorch.core import cuda as core_cuda

    recorder = _Recorder(arch)
    props = _device_properties(sm_count)

    def jit_run(fn, *args, grid, warmup, **kwargs):
        return recorder.jit_run(fn, *args, grid=grid, warmup=warmup, **kwargs)

    def autotune_run(tuner, *args, **kwargs):
        return recorder.autotune_run(tuner, *args, **kwargs)

    patches = [
        mock.patch.object(JITFunction, "run", jit_run),
        mock.patch.object(Autotuner, "run", autotune_run),
        mock.patch.object(torch.cuda, "get_device_properties", lambda *a, **k: props),
        mock.patch.object(torch.cuda, "get_device_capability", lambda *a, **k: (arch // 10, arch % 10)),
        mock.patch.object(torch.cuda, "get_device_name", lambda *a, **k: DEVICE_NAME),
        mock.patch.object(torch.cuda, "current_device", lambda: 0),
        mock.patch.object(core_cuda, "load_module", recorder.cuda_module),
    ]
    with contextlib.ExitStack() as stack, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in patches:
            stack.enter_context(p)
        stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        stack.enter_context(_DataScalars())
        yield recorder.launches


@contextlib.contextmanager
def real() -> Iterator[None]:
    """Inside :func:`capture`: real tensors again (for packing code whose shapes depend on data);
    move the results to the fake device with :func:`fake_cuda`."""
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        yield


def on_fake_device(build: Callable[[str], Any]) -> Any:
    """Inside :func:`capture`: ``build(device)`` on the fake device when its shapes do not depend on
    data, else on the CPU with real data (``build("cpu")``), moved to the fake device."""
    try:
        return build("cuda")
    except Exception:  # data-dependent shapes (nonzero, ...) need real tensors
        with real():
            made = build("cpu")
        return fake_cuda(made)


def fake_cuda(tensors: Any) -> Any:
    """Inside :func:`capture`: move real (CPU) tensors, possibly nested in tuples/lists/dicts, to
    the fake device (shape, dtype and strides kept; data dropped)."""
    if isinstance(tensors, torch.Tensor):
        return tensors.to("cuda")
    if isinstance(tensors, dict):
        return {k: fake_cuda(v) for k, v in tensors.items()}
    if isinstance(tensors, (list, tuple)):
        moved = [fake_cuda(v) for v in tensors]
        return type(tensors)(moved) if not hasattr(tensors, "_fields") else type(tensors)(*moved)
    return tensors

"""CUDA-C kernels: compile with NVRTC (through CuPy's bindings), cache, launch on torch tensors.

Kernel packages keep their sources in ``src/slimtorch/<pkg>/cuda/*.cu`` with ``extern "C"``
entry points (instantiate templates through ``extern "C"`` wrappers). At first use a source is
compiled to a cubin for the current device's arch, cached in memory and on disk under
``$SLIMTORCH_CACHE_DIR`` (default ``~/.cache/slimtorch``), keyed by the SHA-256 of source and
options plus the arch, and loaded with CuPy. :class:`CudaKernel` launches on torch's current
stream, so our kernels order correctly with torch's own work.

:func:`compile_cubin` needs no GPU: NVRTC builds for any arch (sm_80, sm_90, sm_90a), which is
how CI checks that every ``.cu`` file compiles (see :func:`find_cuda_sources`).

Argument passing: a CUDA ``torch.Tensor`` becomes its data pointer; a Python ``int`` becomes a
32-bit ``int`` (an error if it does not fit: pass ``numpy.int64`` for ``long long``), a Python
``float`` a 32-bit ``float``, a ``bool`` a ``bool``; NumPy scalars pass as they are.
"""

from __future__ import annotations

import hashlib
import os
import pkgutil
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

DEFAULT_OPTIONS: tuple[str, ...] = ("-std=c++17",)
ARCHS_COMPILED_IN_CI: tuple[str, ...] = ("sm_80", "sm_90")

_lock = threading.Lock()
_modules: dict[tuple[str, str, int], object] = {}


class CudaCompileError(RuntimeError):
    """NVRTC rejected a source; the message holds the compiler log."""


def require_cupy():
    """CuPy's NVRTC bindings, or an ImportError naming the ``[cuda]`` extra that installs CuPy."""
    try:
        import cupy  # noqa: F401
        from cupy_backends.cuda.libs import nvrtc
    except ImportError as err:
        raise ImportError(
            "the 'cuda' backend (slimtorch's CUDA-C kernels) needs CuPy, which is the optional [cuda] extra: "
            "pip install 'slimtorch-sparse[cuda]' / 'slimtorch-convops[cuda]' / 'slimtorch-core[cuda]' "
            "(or cupy-cuda12x / cupy-cuda13x matching your CUDA)"
        ) from err
    return nvrtc


def cache_dir() -> Path:
    root = os.environ.get("SLIMTORCH_CACHE_DIR") or Path.home() / ".cache" / "slimtorch"
    return Path(root) / "cuda"


def cuda_include_dirs() -> list[str]:
    """Directories holding cuda_fp16.h and friends (pip CUDA packages or a CUDA toolkit)."""
    import cupy

    dirs = []
    root = cupy.cuda.get_cuda_path()
    if root:
        dirs.append(os.path.join(root, "include"))
    dirs.append("/usr/local/cuda/include")
    return [d for d in dirs if os.path.isfile(os.path.join(d, "cuda_fp16.h"))][:1]


def device_arch(device: torch.device | int | None = None) -> str:
    """``sm_XY`` of a CUDA device (default: the current one)."""
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def _source_key(source: str, arch: str, options: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for part in (source, arch, *options):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def compile_cubin(
    source: str,
    arch: str,
    *,
    options: Sequence[str] = DEFAULT_OPTIONS,
    filename: str = "kernel.cu",
) -> bytes:
    """Compile CUDA C ``source`` to a cubin for ``arch`` (e.g. "sm_90"); no GPU needed."""
    if not arch.startswith(("sm_", "compute_")):
        raise ValueError(f"arch: expected 'sm_XY' such as 'sm_90', got {arch!r}")
    nvrtc = require_cupy()
    includes = [f"-I{d}" for d in cuda_include_dirs()]
    opts = [f"--gpu-architecture={arch}", *options, *includes]
    prog = nvrtc.createProgram(source, filename, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, opts)
        except nvrtc.NVRTCError as err:
            log = nvrtc.getProgramLog(prog)
            raise CudaCompileError(f"{filename} ({arch}) failed to compile:\n{log}") from err
        return _whole_elf(nvrtc.getCUBIN(prog))
    finally:
        nvrtc.destroyProgram(prog)


def _whole_elf(cubin: bytes) -> bytes:
    """CuPy's ``getCUBIN`` drops the cubin's last byte (it treats the buffer as a NUL-terminated
    string), so cuobjdump rejects it; pad it back to the size its ELF headers describe (the end of
    the furthest section, section-header or program-header table)."""
    import struct

    if cubin[:4] != b"\x7fELF" or cubin[4] != 2:  # only 64-bit ELF cubins
        return cubin
    phoff, shoff = struct.unpack_from("<QQ", cubin, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", cubin, 0x36)
    end = max(shoff + shentsize * shnum, phoff + phentsize * phnum)
    for i in range(shnum):
        header = shoff + i * shentsize
        if header + 0x28 > len(cubin):
            break
        kind = struct.unpack_from("<I", cubin, header + 4)[0]
        offset, size = struct.unpack_from("<QQ", cubin, header + 0x18)
        if kind != 8:  # SHT_NOBITS occupies no file bytes
            end = max(end, offset + size)
    return cubin + b"\0" * (end - len(cubin)) if end > len(cubin) else cubin


def compile_cached(source: str, arch: str, *, options: Sequence[str], filename: str) -> bytes:
    """:func:`compile_cubin` behind an on-disk cache keyed by source hash, options and arch."""
    path = cache_dir() / f"{Path(filename).stem}-{arch}-{_source_key(source, arch, options)}.cubin"
    if path.is_file():
        return path.read_bytes()
    cubin = compile_cubin(source, arch, options=options, filename=filename)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(cubin)
    tmp.replace(path)
    return cubin


def _to_kernel_arg(value: object, position: int) -> object:
    if isinstance(value, torch.Tensor):
        if not value.is_cuda:
            raise ValueError(f"kernel argument {position}: expected a CUDA tensor, got one on {value.device}")
        return np.uint64(value.data_ptr())
    if isinstance(value, bool):
        return np.bool_(value)
    if isinstance(value, int):
        if not -(2**31) <= value < 2**31:
            raise ValueError(f"kernel argument {position}: {value} does not fit a 32-bit int; pass numpy.int64")
        return np.int32(value)
    if isinstance(value, float):
        return np.float32(value)
    if isinstance(value, np.generic):
        return value
    raise TypeError(f"kernel argument {position}: cannot pass {type(value).__name__} to a CUDA kernel")


class CudaKernel:
    """One ``extern "C"`` kernel of a loaded module, launched on torch's current stream."""

    def __init__(self, function: object, name: str):
        self._function = function
        self.name = name

    def __call__(
        self,
        grid: tuple[int, ...],
        block: tuple[int, ...],
        args: Sequence[object],
        *,
        shared_mem: int = 0,
    ) -> None:
        import cupy

        kernel_args = tuple(_to_kernel_arg(a, i) for i, a in enumerate(args))
        device = torch.cuda.current_device()
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device).cuda_stream, device)
        if shared_mem > 48 * 1024:
            self._function.max_dynamic_shared_size_bytes = shared_mem  # type: ignore[attr-defined]
        with cupy.cuda.Device(device):
            self._function(grid, block, kernel_args, shared_mem=shared_mem, stream=stream)  # type: ignore[operator]


class CudaModule:
    """A compiled ``.cu`` source loaded on one device; kernels fetched by name."""

    def __init__(self, module: object, filename: str):
        self._module = module
        self.filename = filename
        self._kernels: dict[str, CudaKernel] = {}

    def kernel(self, name: str) -> CudaKernel:
        if name not in self._kernels:
            try:
                function = self._module.get_function(name)  # type: ignore[attr-defined]
            except Exception as err:
                raise AttributeError(f'{self.filename} has no kernel {name!r} (is it declared extern "C"?)') from err
            self._kernels[name] = CudaKernel(function, name)
        return self._kernels[name]


def load_module(
    source: str | Path,
    *,
    options: Sequence[str] = DEFAULT_OPTIONS,
    arch: str | None = None,
) -> CudaModule:
    """Compile (first use) and load a CUDA source for the current device.

    ``source`` is a path to a ``.cu`` file or the source text itself.
    """
    require_cupy()
    import cupy

    if isinstance(source, Path) or (isinstance(source, str) and source.endswith(".cu")):
        filename = Path(source).name
        text = Path(source).read_text()
    else:
        filename, text = "inline.cu", str(source)
    device = torch.cuda.current_device()
    arch = arch or device_arch(device)
    key = (_source_key(text, arch, options), arch, device)
    with _lock:
        if key not in _modules:
            cubin = compile_cached(text, arch, options=options, filename=filename)
            with cupy.cuda.Device(device):
                module = cupy.cuda.function.Module()
                module.load(cubin)
            _modules[key] = CudaModule(module, filename)
        return _modules[key]  # type: ignore[return-value]


def find_cuda_sources() -> list[Path]:
    """Every ``cuda/*.cu`` file of every installed ``slimtorch.*`` package."""
    import slimtorch

    found: list[Path] = []
    for info in pkgutil.iter_modules(slimtorch.__path__):
        for root in slimtorch.__path__:
            folder = Path(root) / info.name / "cuda"
            if folder.is_dir():
                found.extend(sorted(folder.glob("*.cu")))
    return sorted(set(found))

"""The CUDA-C loader: every shipped .cu compiles for sm_80 and sm_90 without a GPU (NVRTC);
argument conversion; launches on torch's stream where a GPU exists."""

import numpy as np
import pytest
import torch

from slimtorch.core import cuda

AXPY = r"""
extern "C" __global__ void axpy(const float* x, float* y, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}
"""

HALF = r"""
#include <cuda_fp16.h>
extern "C" __global__ void half_scale(__half* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = __hmul(x[i], __float2half(2.0f));
}
"""


@pytest.mark.parametrize("arch", cuda.ARCHS_COMPILED_IN_CI)
@pytest.mark.parametrize("source", [AXPY, HALF], ids=["axpy", "cuda_fp16"])
def test_compile_inline_source_without_gpu(arch, source):
    cubin = cuda.compile_cubin(source, arch)
    assert cubin[:4] == b"\x7fELF"


@pytest.mark.parametrize("arch", cuda.ARCHS_COMPILED_IN_CI)
@pytest.mark.parametrize("path", cuda.find_cuda_sources(), ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_shipped_cuda_source_compiles(path, arch):
    """CI's compile-only gate: each .cu under slimtorch.*/cuda/ builds for sm_80 and sm_90."""
    cubin = cuda.compile_cubin(path.read_text(), arch, filename=path.name)
    assert cubin[:4] == b"\x7fELF"


def test_compile_error_carries_the_log():
    with pytest.raises(cuda.CudaCompileError, match=r"broken.cu \(sm_90\) failed to compile:(.|\n)*undefined"):
        cuda.compile_cubin('extern "C" __global__ void k() { undefined_call(); }', "sm_90", filename="broken.cu")


def test_bad_arch():
    with pytest.raises(ValueError, match=r"arch: expected 'sm_XY'"):
        cuda.compile_cubin(AXPY, "90")


def test_disk_cache_reuses_cubin(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTORCH_CACHE_DIR", str(tmp_path))
    first = cuda.compile_cached(AXPY, "sm_80", options=cuda.DEFAULT_OPTIONS, filename="axpy.cu")
    files = list((tmp_path / "cuda").glob("axpy-sm_80-*.cubin"))
    assert len(files) == 1 and files[0].read_bytes() == first
    files[0].write_bytes(b"cached")  # a hit must read the file, not recompile
    assert cuda.compile_cached(AXPY, "sm_80", options=cuda.DEFAULT_OPTIONS, filename="axpy.cu") == b"cached"
    other = cuda.compile_cached(AXPY, "sm_90", options=cuda.DEFAULT_OPTIONS, filename="axpy.cu")
    assert other != b"cached" and len(list((tmp_path / "cuda").glob("*.cubin"))) == 2


def test_argument_conversion():
    assert cuda._to_kernel_arg(3, 0).dtype == np.int32
    assert cuda._to_kernel_arg(2.5, 0).dtype == np.float32
    assert cuda._to_kernel_arg(True, 0).dtype == np.bool_
    assert cuda._to_kernel_arg(np.int64(2**40), 0) == 2**40
    with pytest.raises(ValueError, match=r"kernel argument 1: 4294967296 does not fit a 32-bit int"):
        cuda._to_kernel_arg(2**32, 1)
    with pytest.raises(ValueError, match=r"kernel argument 0: expected a CUDA tensor, got one on cpu"):
        cuda._to_kernel_arg(torch.zeros(1), 0)
    with pytest.raises(TypeError, match=r"kernel argument 2: cannot pass str"):
        cuda._to_kernel_arg("x", 2)


@pytest.mark.gpu
def test_load_and_launch_on_torch_stream():
    n = 1000
    x = torch.randn(n, device="cuda")
    y = torch.randn(n, device="cuda")
    expected = 3 * x + y
    kernel = cuda.load_module(AXPY).kernel("axpy")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        kernel(((n + 127) // 128,), (128,), (x, y, 3.0, n))
    stream.synchronize()
    torch.testing.assert_close(y, expected)
    with pytest.raises(AttributeError, match="has no kernel 'nope'"):
        cuda.load_module(AXPY).kernel("nope")

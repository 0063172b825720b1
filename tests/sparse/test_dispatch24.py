"""layers.SparseLinear24 under backend="auto": which kernel for which M / dtype / device / shape
(choose_kernel_24 is pure, so every branch is tested here without a GPU), the torch operand built
lazily per device and kept out of the state_dict; on a GPU, each route against the reference."""

import pytest
import torch
import torch.nn.functional as F

from slimtorch.core.dispatch import use_backend
from slimtorch.core.testing import assert_rel_close, randn, rel_bound
from slimtorch.sparse import layers
from slimtorch.sparse.layers import SMALL_M_MAX, SparseLinear24, choose_kernel_24

HOPPER, AMPERE, TURING = (9, 0), (8, 0), (7, 5)


def choice(m, dtype=torch.float16, capability=HOPPER, k=4096, n=4096, *, torch_sparse=True, min_shape=(16, 16),
           cupy=True):  # fmt: skip
    return choose_kernel_24(m, dtype, capability, k, n, torch_sparse=torch_sparse, torch_min_shape=min_shape, cupy=cupy)


@pytest.mark.parametrize("m", [1, 2, 7, SMALL_M_MAX])
def test_small_m_runs_the_triton_kernels(m):
    assert choice(m) == "triton"


@pytest.mark.parametrize("m", [SMALL_M_MAX + 1, 64, 2048])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_large_m_goes_to_sparse_tensor_cores(m, dtype):
    assert choice(m, dtype) == "torch"  # cuSPARSELt (or CUTLASS) through torch first
    assert choice(m, dtype, AMPERE) == "torch"
    assert choice(m, dtype, torch_sparse=False) == "cuda"  # our mma.sp when torch has no 2:4 path
    assert choice(m, dtype, min_shape=None) == "cuda"  # ... or not for this dtype
    assert choice(m, dtype, k=4096, n=4104) == "cuda"  # N not a multiple of torch's 16 rows
    # neither takes it: the Triton kernel is the only kernel left
    assert choice(m, dtype, torch_sparse=False, cupy=False) == "triton"
    assert choice(m, dtype, k=4100, n=4104) == "triton"  # K % 32 != 0 for mma.sp, N % 16 != 0 for torch


def test_large_m_without_sparse_tensor_cores_or_half_precision_stays_on_triton():
    assert choice(64, torch.float32) == "triton"  # no fp32 sparse tensor-core path
    assert choice(64, capability=TURING) == "triton"  # sparse tensor cores start at sm_80
    assert choice(64, capability=None) == "triton"


def test_the_layer_asks_the_choice_only_for_auto_on_cuda(monkeypatch):
    """On CPU (any M) the choice is never consulted: auto gives the reference."""
    calls = []
    monkeypatch.setattr(layers, "choose_kernel_24", lambda *a, **kw: calls.append(a) or "torch")
    layer = SparseLinear24.from_dense(torch.nn.Linear(64, 32))
    x = randn((SMALL_M_MAX + 3, 64), seed=5)
    with use_backend("auto"):
        out = layer(x)
    assert calls == [] and out.shape == (SMALL_M_MAX + 3, 32)


def test_torch_operand_is_a_per_device_cache_outside_the_state_dict():
    layer = SparseLinear24.from_dense(torch.nn.Linear(64, 32))
    layer._torch_weights[(torch.device("cpu"), torch.float32)] = "stale"
    assert set(layer.state_dict()) == {"values", "meta", "bias"}
    layer.to(torch.float64)  # any .to / .cuda drops it: rebuilt from the canonical values, meta on next use
    assert layer._torch_weights == {}
    layer._torch_weights[(torch.device("cpu"), torch.float64)] = "stale"
    layer.load_state_dict(layer.state_dict())
    assert layer._torch_weights == {}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [3, SMALL_M_MAX + 1, 257])
def test_auto_routes_match_the_reference_on_gpu(dtype, m):
    torch.manual_seed(m)
    linear = torch.nn.Linear(256, 96).to("cuda", dtype)
    layer = SparseLinear24.from_dense(linear, activation="relu")
    x = randn((m, 256), dtype=dtype, device="cuda", seed=m)
    dense = layer.to_dense()
    expected = F.relu(F.linear(x.double(), dense.weight.double(), dense.bias.double()))
    _, min_shape = layers._torch_semi_structured_shape(dtype)
    route = layer._auto_kernel(x)
    assert route == ("triton" if m <= SMALL_M_MAX else "torch" if min_shape else route)
    assert_rel_close(layer(x), expected, rel_bound(dtype, 256))
    if route == "torch":
        assert list(layer._torch_weights) == [(x.device, dtype)]
        assert set(layer.state_dict()) == {"values", "meta", "bias"}  # the operand is a cache, never saved


def test_auto_kernel_passes_the_layer_and_input_to_the_choice(monkeypatch):
    """The wiring of SparseLinear24._auto_kernel (device capability, features, torch's constraints, CuPy)."""
    seen = {}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(layers, "choose_kernel_24", lambda *a, **kw: seen.update(args=a, kw=kw) or "torch")
    layer = SparseLinear24(64, 32).half()
    assert layer._auto_kernel(torch.zeros(SMALL_M_MAX + 5, 64, dtype=torch.float16)) == "torch"
    assert seen["args"] == (SMALL_M_MAX + 5, torch.float16, (9, 0), 64, 32)
    assert set(seen["kw"]) == {"torch_sparse", "torch_min_shape", "cupy"}
    available, min_shape = layers._torch_semi_structured_shape(torch.float16)
    assert seen["kw"]["torch_sparse"] == available and seen["kw"]["torch_min_shape"] == min_shape
    if available:  # torch's fp16 2:4 weights come in multiples of 16 (cuSPARSELt) or more (CUTLASS)
        assert min_shape[0] % 16 == 0 and min_shape[1] % 16 == 0

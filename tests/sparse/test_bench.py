"""bench.py without a GPU: every provider is built and checked for correctness on small CPU shapes
(Triton launchers in the interpreter); the timing itself needs a GPU (python -m slimtorch.sparse.bench)."""

import pytest
import torch
import torch.nn.functional as F

from slimtorch.core.bench import BenchResult, verified
from slimtorch.sparse import bench


def _verify(fn, x, dense):
    """What add_case times for provider ``fn``: the timed call itself when ``fn(x)`` is right."""
    return verified(_timed, lambda: fn(x), lambda: F.linear(x.float(), dense.float()), bench.CHECK_BOUND)


def _timed():
    return None


def test_providers_are_correct_or_report_why():
    torch.manual_seed(0)
    fmt = bench._weight_formats(bench._pruned_weight(32, 64, torch.device("cpu")), 16, with_mma_sp=True)
    providers = bench._providers(fmt)
    assert {"torch dense", "ours 2:4", "ours 2:4 mma.sp", "ours BSR 50%"} <= set(providers)
    x = torch.randn(3, 64, dtype=bench.DTYPE)
    for name in ("torch dense", "ours 2:4", "ours BSR 50%"):
        fn, weight_bytes, key = providers[name]
        assert _verify(fn, x, fmt[key]) is _timed, name
        assert weight_bytes > 0
    assert providers["ours 2:4"][1] < providers["torch dense"][1] * 0.6  # half the values + 1/16 metadata
    # torch's semi-structured tensors and the CUDA kernel need a GPU: reported, not fatal.
    with pytest.raises(RuntimeError, match=r"original_tensor\.device= cpu is not supported! Only CUDA tensors"):
        _verify(providers["torch 2:4 cutlass"][0], x, fmt["dense"])()
    with pytest.raises(RuntimeError, match="wrong result"):
        _verify(lambda a: torch.zeros(3, 32, dtype=a.dtype), x, fmt["dense"])()


def test_goal_summary_reads_speedups():
    common = dict(family="sparse", case="LLM 4096x4096 (KxN)", x=1, p20_ms=1.0, p80_ms=1.0)
    results = [
        BenchResult(provider="torch dense", median_ms=2.0, speedup=1.0, **common),
        BenchResult(provider="ours 2:4", median_ms=1.0, speedup=2.0, pct_peak_bw=80.0, **common),
        BenchResult(provider="torch 2:4 cutlass", median_ms=4.0, speedup=0.5, **common),
    ]
    (line,) = bench.goal_summary(results)
    assert "ours 2:4: 2.00x dense, 80% of copy BW" in line and "vs best torch 2:4: 4.00x" in line


def test_main_refuses_cpu():
    with pytest.raises(SystemExit, match="run it on a CUDA device"):
        bench.main(["--device", "cpu"])

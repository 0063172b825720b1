"""The benchmark's inputs, not its speed: the hard-coded layer shapes are those of the torchvision
models, and the providers of a case compute the same thing (those tagged alike)."""

import pytest
import torch
import torchvision
from torchvision.models.shufflenetv2 import InvertedResidual

from slimtorch.convops import DepthwiseConv2d, bench, fuse_
from slimtorch.core import reference_only
from slimtorch.core.testing import assert_rel_close, rel_bound


def _depthwise_layers(model):
    """(channels, input size, kernel, stride, fused activation) of every depthwise layer, in order."""
    model = fuse_(model.eval()).model
    seen = []

    def record(layer, inputs, output):
        key = (layer.in_channels, inputs[0].shape[2], layer.kernel_size[0], layer.stride[0], layer.activation)
        if key not in seen:
            seen.append(key)

    for m in model.modules():
        if isinstance(m, DepthwiseConv2d):
            m.register_forward_hook(record)
    with torch.no_grad(), reference_only():
        model(torch.randn(1, 3, 224, 224))
    return seen


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_large", "shufflenet_v2_x1_0"])
def test_depthwise_shapes_are_the_torchvision_models(name):
    hard_coded = [
        (s.channels, s.size, s.kernel, s.stride, s.activation) for s in bench.DEPTHWISE_SHAPES if s.model == name
    ]
    assert hard_coded == _depthwise_layers(getattr(torchvision.models, name)())


def test_shuffle_shapes_are_shufflenet_v2_unit_outputs():
    model, seen = torchvision.models.shufflenet_v2_x1_0().eval(), []
    for m in model.modules():
        if isinstance(m, InvertedResidual):
            m.register_forward_hook(lambda mod, i, out: seen.append((out.shape[1], out.shape[2])))
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    assert list(dict.fromkeys(seen)) == list(bench.SHUFFLE_SHAPES)


TINY = {
    "depthwise": bench.DepthwiseShape("tiny", 6, 9, 3, 2, "hardswish"),
    "grouped": (12, 6, 5, "relu", True),
    "shuffle": (10, 5),
    "shift": (11, 7),
    "shiftconv": (11, 7),
}


@pytest.mark.parametrize("family", bench.FAMILIES)
def test_every_provider_computes_the_baseline(family, device):
    builder = bench.BUILDERS[family][0]
    entries = builder(TINY[family], 2, device=device, dtype=torch.float32, compile_=False)
    assert any(e.provider == bench.BASELINES[family] for e in entries), f"no {bench.BASELINES[family]!r} provider"
    expected = {}
    for e in entries:
        if "cuda C" in e.provider and not torch.cuda.is_available():
            continue  # the CUDA C kernel runs on GPUs only (tests/convops/test_shift.py)
        assert e.nbytes > 0 and e.shape["batch"] == 2
        first = expected.setdefault((e.case, e.computes), e.fn())
        # two fp32 computations of the same op (ours vs torch's), reductions ≤ 12 channels · 3x3 taps
        bound = 2 * rel_bound(torch.float32, 12 * 9, device=device)
        assert_rel_close(e.fn(), first, bound, name=f"{e.case} / {e.provider}")
    assert len(expected) == len({(e.case, e.computes) for e in entries})


def test_main_needs_a_gpu():
    with pytest.raises(SystemExit, match="run it on a CUDA device"):
        bench.main(["--device", "cpu"])


def test_run_family_writes_results(tmp_path, monkeypatch):
    """The glue (timing loop, speedups, writers) on a tiny case; CPU timings mean nothing."""
    from slimtorch.core.bench import Ceilings, Environment, read_results, write_results

    monkeypatch.setitem(bench.BUILDERS, "shift", (bench.shift_group, [TINY["shift"]], [TINY["shift"]]))
    monkeypatch.setattr(bench, "QUICK_BATCHES", (1,))
    ceil = Ceilings(copy_gbps=100.0, matmul_tflops=1.0, matmul_dtype="float32")
    results = bench.run_family("shift", device="cpu", quick=True, compile_=False, ceil=ceil)
    by_provider = {r.provider: r for r in results}
    assert by_provider[bench.BASELINES["shift"]].speedup == 1.0
    assert by_provider["ours (triton)"].gbps > 0 and by_provider["ours (triton)"].pct_peak_bw is not None
    if not torch.cuda.is_available():
        assert by_provider["ours (cuda C, unverified)"].error, "a provider that cannot run is reported"
    paths = write_results(results, Environment.collect("cpu", ceilings=ceil), tmp_path, "convops-shift")
    assert len(read_results(paths["json"])[1]) == len(results)

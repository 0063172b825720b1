"""The int8 weight-only and W8A8 ops dispatch by measurement (core.measured) between our kernel and
torch's paths: every candidate matches the reference, the choice is cached per shape bucket, and
``op.launcher`` stays our kernel (benchmarks, the static report). Fake timers, no GPU needed."""

import pytest
import torch

from slimtorch.core import measured
from slimtorch.core.testing import order_measurer, randn
from slimtorch.quant.formats import quantize_int8
from slimtorch.quant.int8_mm import int8_weight_mm, launch_int8_weight_mm
from slimtorch.quant.w8a8_mm import launch_w8a8, w8a8_linear

from .helpers import activations, assert_matches_reference


def test_launchers_stay_our_kernels():
    assert w8a8_linear.launcher is launch_w8a8
    assert int8_weight_mm.launcher is launch_int8_weight_mm


@pytest.mark.parametrize(
    ("op", "times", "expected"),
    [
        (w8a8_linear, (2.0, 1.0), "torch._int_mm"),
        (w8a8_linear, (1.0, 1.0), "triton"),
        (int8_weight_mm, (3.0, 2.0, 1.0), "torch dequant+F.linear"),
        (int8_weight_mm, (3.0, 1.0, 2.0), "torch._weight_int8pack_mm"),
    ],
)
def test_each_choice_matches_the_reference(device, op, times, expected):
    n, k = 21, 40
    packed = quantize_int8(randn((n, k), seed=n))
    bias = randn((n,), device=device, seed=2)
    x = activations(19, k, torch.float32, device, seed=5)
    m = order_measurer(*times)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        assert_matches_reference(op, x, packed.qweight.to(device), packed.scale.to(device), bias=bias)
        ((slot, choice),) = m.choices.items()
        assert choice.choice == expected and not choice.errors
        assert slot == (f"slimtorch::{op._name}", "fake", "32,21,40,float32", "measured")  # M=19 -> bucket 32
        # another M of the same bucket: cached, not timed again
        calls = m.timer.calls
        op(activations(31, k, torch.float32, device, seed=6), packed.qweight.to(device), packed.scale.to(device))
        assert m.timer.calls == calls and len(m.choices) == 1


def test_torch_mode_runs_int_mm_and_nan_rows_stay_nan(device):
    packed = quantize_int8(randn((16, 24), seed=1))
    x = activations(5, 24, torch.float16, device, seed=3)
    x[2, 7] = float("nan")
    m = order_measurer()
    with measured.use_measurer(m), measured.use_dispatch("torch"):
        out = w8a8_linear(x, packed.qweight.to(device), packed.scale.to(device))
    assert next(iter(m.choices.values())).choice == "torch._int_mm"
    assert bool(out[2].isnan().all()) and not bool(out[[0, 1, 3, 4]].isnan().any())


def test_slimtorch_info_shows_the_cached_choices(capsys, monkeypatch):
    cli = pytest.importorskip("slimtorch.compress.cli")
    from slimtorch.core import registry

    monkeypatch.setattr(registry, "import_all_packages", lambda: ["quant"])  # not the zoo's imports
    m = order_measurer(2.0, 1.0)
    packed = quantize_int8(randn((8, 16), seed=1))
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        w8a8_linear(activations(3, 16, torch.float32, "cpu", seed=2), packed.qweight, packed.scale)
        assert cli._cmd_info(None) == 0
    out = capsys.readouterr().out
    assert "dispatch by measurement: measure" in out
    assert "slimtorch::w8a8_linear [fake] 4,8,16,float32: torch._int_mm (measured; triton 2.0000 ms" in out


@pytest.mark.gpu
@pytest.mark.parametrize("op", [w8a8_linear, int8_weight_mm])
def test_measured_on_cuda_matches_the_reference_and_records_the_medians(op):
    n, k = 1536, 1024
    packed = quantize_int8(randn((n, k), seed=3))
    m = measured.Measurer(cache_path=None)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        for rows in (1, 33, 257):
            x = activations(rows, k, torch.float16, "cuda", seed=rows)
            assert_matches_reference(op, x, packed.qweight.cuda(), packed.scale.cuda())
    assert len(m.choices) == 3
    for choice in m.choices.values():
        assert choice.times_ms["triton"] > 0 and choice.times_ms[choice.choice] == min(
            t for t in choice.times_ms.values() if t is not None
        )

"""bench.py builds every provider and checks ours against the references (no timing here: speed
is measured only by running the benchmark on a GPU)."""

import pytest
import torch

from slimtorch.core import bench
from slimtorch.quant import bench as quant_bench


def test_cases_build_and_our_providers_are_correct(device):
    runner = bench.Bench(quant_bench.FAMILY, device=device, baseline=quant_bench.BASELINE)
    added = quant_bench.add_case(runner, "tiny 64->40", 64, 40, (1, 20), torch.device(device))
    names = {name for name, _, _ in added}
    ours = {"ours int8", "ours int4-g64", "ours w8a8", "ours ternary-2bit", "ours binary-1bit", "ours codebook-4bit"}
    assert ours | {quant_bench.BASELINE, "torch _weight_int8pack_mm"} <= names
    assert ("torch _int_mm (int8 GEMM only)", 1) not in {(name, m) for name, m, _ in added}  # needs M > 16
    for name, m, fn in added:
        if name in ours or name == quant_bench.BASELINE:
            assert fn().shape == (m, 40), name  # ours were checked against their references when added


def test_int4_group_choice_and_shapes():
    assert [quant_bench.int4_group_size(k) for k in (4096, 960, 320, 464)] == [128, 64, 64, None]
    assert not any(p.name.startswith("ours int4") for p in quant_bench.providers(464, 1024))


def test_goals_markdown_compares_speedups():
    timing = bench.Timing(1.0, 1.0, 1.0)
    rows = [
        bench.make_result(family="quant", case="llm 4096x4096", provider="ours int4-g128", x=1, timing=timing),
        bench.make_result(family="quant", case="llm 4096x4096", provider="ours int8", x=1, timing=timing),
    ]
    rows[0].speedup, rows[1].speedup = 3.2, 1.5
    md = quant_bench.goals_markdown(rows)
    assert "| ours int4-g128 | llm 4096x4096 | 1 | ≥ 3.0 | 3.20 | yes |" in md
    assert "| ours int8 | llm 4096x4096 | 1 | ≥ 1.8 | 1.50 | no |" in md


def test_main_needs_a_gpu():
    with pytest.raises(SystemExit, match="run it on a CUDA device"):
        quant_bench.main(["--device", "cpu"])

"""bench.py builds every provider and checks ours against the references (no timing claims here:
speed is measured only by running the benchmark on a GPU); a tiny CPU smoke run writes its files."""

import json

import torch

from slimtorch.core import bench
from slimtorch.structured import bench as structured_bench


def test_cases_build_and_our_providers_are_correct(device):
    runner = bench.Bench(structured_bench.FAMILY, device=device, baseline=structured_bench.BASELINE)
    added = structured_bench._case(runner, "tiny", 32, 32, (3,), torch.float32, torch.device(device), square=True)
    names = {name for name, _, _ in added}
    assert {"circulant fft", "fastfood", "fwht", "hashed 1/8", "low-rank r=8", structured_bench.BASELINE} <= names
    assert {"block-circulant b32 fft", "block-circulant b32 direct"} <= names
    for name, m, fn in added:  # a provider that failed its reference check raises here
        assert fn().shape == (m, 32), name


def test_block_size_choice_and_goals_table():
    assert [structured_bench.block_size_for(k, n) for k, n in ((4096, 4096), (464, 1024), (232, 232))] == [64, 16, 8]
    timing = bench.Timing(1.0, 1.0, 1.0)
    row = bench.make_result(family="structured", case="d=8192 float16", provider="circulant fft", x=1024, timing=timing)
    row.speedup = 3.5
    md = structured_bench.goals_markdown([row])
    assert "| circulant fft | d=8192 float16 | 1024 | ≥ 3.00 | 3.50 | yes |" in md
    assert "Static H100 estimates" in md


def test_cpu_smoke_run_writes_results(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "ceilings", lambda device, refresh=False: bench.Ceilings(10.0, 0.1, "float32"))
    monkeypatch.setattr(structured_bench, "CPU_M_VALUES", (2,))
    monkeypatch.setattr(structured_bench, "CPU_SIZES", (64,))
    monkeypatch.setattr(bench, "time_fn", lambda fn, device, **kw: (fn(), bench.Timing(1.0, 0.9, 1.1))[1])
    structured_bench.main(["--quick", "--device", "cpu", "--out", str(tmp_path)])
    (json_path,) = tmp_path.glob("*/structured.json")
    results = json.loads(json_path.read_text())["results"]
    assert not [r for r in results if r["error"]], [r["error"] for r in results if r["error"]]
    assert json_path.with_suffix(".png").is_file() and "Goals" in json_path.with_suffix(".md").read_text()

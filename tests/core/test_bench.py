import json
import math

import pytest
import torch

from slimtorch.core import bench


def test_device_slug():
    assert bench.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert bench.device_slug("  ") == "unknown"


def test_time_fn_on_cpu_orders_quantiles():
    x = torch.randn(256, 256)
    t = bench.time_fn(lambda: x @ x, device="cpu", warmup_ms=2, rep_ms=10)
    assert 0 < t.p20_ms <= t.median_ms <= t.p80_ms


def test_rotating_inputs_cycle():
    made = []

    def make():
        made.append(torch.randn(4))
        return (made[-1],)

    rot = bench.RotatingInputs(make, device="cpu")
    assert len(rot.sets) == 1  # no cache to defeat on CPU
    assert rot()[0] is rot()[0] is made[0]


def test_make_result_derives_rates_and_peaks():
    ceil = bench.Ceilings(copy_gbps=1000.0, matmul_tflops=100.0, matmul_dtype="bfloat16")
    r = bench.make_result(
        family="f",
        case="c",
        provider="p",
        x=4,
        timing=bench.Timing(2.0, 1.9, 2.1),
        flops=2e9,
        nbytes=1e9,
        ceil=ceil,
    )
    assert r.tflops == pytest.approx(1.0) and r.gbps == pytest.approx(500.0)
    assert r.pct_peak_flops == pytest.approx(1.0) and r.pct_peak_bw == pytest.approx(50.0)


def _fake_results():
    t = lambda ms: bench.Timing(ms, ms * 0.9, ms * 1.1)
    rows = []
    for x in (1, 16, 256):
        rows.append(
            bench.make_result(family="demo", case="4096x4096", provider="torch", x=x, timing=t(2.0), nbytes=1e6)
        )
        rows.append(bench.make_result(family="demo", case="4096x4096", provider="ours", x=x, timing=t(1.0), nbytes=1e6))
    return rows


def test_fill_speedups_pairs_case_and_x():
    rows = _fake_results()
    bench.fill_speedups(rows, "torch")
    assert {r.speedup for r in rows if r.provider == "ours"} == {2.0}
    assert {r.speedup for r in rows if r.provider == "torch"} == {1.0}


def test_writers_roundtrip(tmp_path):
    rows = _fake_results()
    bench.fill_speedups(rows, "torch")
    env = bench.Environment.collect("cpu", ceilings=bench.Ceilings(10.0, 1.0, "float32"))
    env.device_name = "Test Device 1"
    paths = bench.write_results(rows, env, tmp_path, "demo")
    assert paths["json"] == tmp_path / "test-device-1" / "demo.json"
    env_back, rows_back = bench.read_results(paths["json"])
    assert env_back["device_name"] == "Test Device 1" and env_back["ceilings"]["copy_gbps"] == 10.0
    assert rows_back == rows
    md = paths["md"].read_text()
    assert "| 4096x4096 | 16 | ours |" in md and "copy 10 GB/s" in md
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_bench_run_reports_failing_provider(tmp_path):
    b = bench.Bench("unit", device="cpu", baseline="good")
    x = torch.randn(64)

    def broken():
        raise RuntimeError("shape not supported")

    b.add("case", x=8, provider="good", fn=lambda: x + 1, nbytes=512)
    b.add("case", x=8, provider="bad", fn=broken)
    results = b.run(progress=False, ceil=bench.Ceilings(1.0, 1.0, "float32"))
    good, bad = results
    assert good.error is None and good.speedup == 1.0 and good.gbps > 0
    assert bad.error == "RuntimeError: shape not supported" and math.isnan(bad.median_ms) and bad.speedup is None
    assert b.run(progress=False, ceil=bench.Ceilings(1.0, 1.0, "float32"))[0].error is None  # re-runnable


def test_ceilings_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMTORCH_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(bench, "_measure_ceilings", lambda d: calls.append(d) or bench.Ceilings(5.0, 6.0, "float32"))
    assert bench.ceilings("cpu").copy_gbps == 5.0
    assert bench.ceilings("cpu").matmul_tflops == 6.0
    assert len(calls) == 1
    bench.ceilings("cpu", refresh=True)
    assert len(calls) == 2


def test_core_bench_main_writes_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLIMTORCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(bench, "time_fn", lambda fn, **kw: (fn(), bench.Timing(0.5, 0.4, 0.6))[1])
    bench.main(["--out", str(tmp_path / "results"), "--device", "cpu", "--quick"])
    out = capsys.readouterr().out
    assert "GB/s" in out and "TFLOP/s" in out
    (json_path,) = (tmp_path / "results").glob("*/core.json")
    payload = json.loads(json_path.read_text())
    assert payload["environment"]["ceilings"]["matmul_dtype"] == "float32"
    cases = {r["case"] for r in payload["results"]}
    assert any(c.startswith("copy") for c in cases) and any("matmul" in c for c in cases)
    assert all(r["gbps"] or r["tflops"] for r in payload["results"])


def test_verified_times_only_correct_providers():
    x = torch.randn(8)
    timed = lambda: x + 1
    assert bench.verified(timed, lambda: x * 2, lambda: x * 2, 1e-6) is timed
    wrong = bench.verified(timed, lambda: x * 3, lambda: x * 2, 1e-3)
    with pytest.raises(RuntimeError, match=r"wrong result: relative error 5.00e-01 > 1e-03"):
        wrong()
    broken = bench.verified(timed, lambda: torch.zeros(3) @ torch.zeros(4), lambda: x, 1e-3)
    with pytest.raises(RuntimeError, match=r"RuntimeError: .*size"):
        broken("any", "arguments")
    with pytest.raises(ValueError, match="kept"):
        bench.failing(ValueError("kept"))()

"""The main job, a few-epoch version on part of the digits: every row measured or 'pending', the
JSON/markdown/PNG written, rows in the survey's form."""

import json

import pytest
import torch

from slimtorch.compress import demo, tasks
from slimtorch.core import reference_only

KEYS = {"model", "method", "top1", "top1_delta", "params", "disk_bytes", "flops", "latency_ms"}


@pytest.fixture(scope="module")
def rows():
    full = tasks.digits_task()
    task = tasks.Task("digits-part", full.x_train[:384], full.y_train[:384], full.x_test, full.y_test, 10)
    settings = demo.DemoSettings(epochs=2, retrain_epochs=1, kd_epochs=1, batch=32)
    with reference_only():  # kernels are tested elsewhere; the demo measures models
        return demo.run_demo(model_names=["lenet300_100"], task=task, settings=settings, progress=False, log=print)


def test_every_family_has_a_row(rows):
    methods = [r.method for r in rows]
    assert methods[0] == "fp32 baseline"
    families = ("magnitude prune", "filter prune", "int8", "int4", "ternary", "codebook", "low-rank")
    families += ("block-circulant", "KD (T=4)", "labels only", "Deep Compression", "KD student + prune + int8")
    families += ("pow2-5bit", "pq-d4-c16", "BNN (binary", "INQ power-of-two", "mixed precision (plan_bits")
    for wanted in families:
        assert any(wanted in m for m in methods), wanted
    assert all(r.status in ("ok", "pending", "n/a") for r in rows), [
        (r.method, r.note) for r in rows if r.status == "error"
    ]
    for r in rows:
        if r.status != "ok":  # never a number for what has not landed or does not apply
            assert r.top1 is None and r.disk_bytes is None and r.note


def test_rows_measure_what_they_claim(rows):
    by = {r.method: r for r in rows}
    base = by["fp32 baseline"]
    assert base.top1 > 0.6 and base.top1_delta == 0 and base.params == 266_610 and base.flops == 2 * 266_200
    assert base.disk_bytes > 4 * 266_610  # fp32 weights and a manifest
    pruned = next(r for r in rows if r.method.startswith("magnitude prune"))
    assert pruned.params < 0.15 * base.params and pruned.flops < 0.15 * base.flops
    assert pruned.disk_bytes < 0.2 * base.disk_bytes  # sparse positions + values in the file
    dc = next(r for r in rows if r.method.startswith("Deep Compression"))
    assert base.disk_bytes / dc.disk_bytes > 30
    int8 = by["int8"]
    assert 3.5 < base.disk_bytes / int8.disk_bytes < 4.5
    circulant = by["block-circulant b=4"]  # 300 and 100 are not multiples of 8: the block size that fits
    assert circulant.status == "ok" and circulant.params < 0.3 * base.params and circulant.top1 > 0.3
    assert circulant.disk_bytes < 0.3 * base.disk_bytes
    for r in rows:
        if r.status == "ok":
            assert 0 <= r.top1 <= 1 and r.latency_ms > 0 and r.flops > 0
            assert abs(r.top1_delta - (r.top1 - base.top1)) < 1e-12


def test_write_demo(rows, tmp_path):
    paths = demo.write_demo(rows, tmp_path, device=torch.device("cpu"))
    payload = json.loads(paths["json"].read_text())
    assert [r["method"] for r in payload["rows"]] == [r.method for r in rows]
    assert all(set(r) >= KEYS for r in payload["rows"])
    table = paths["md"].read_text()
    assert "| lenet300_100 | fp32 baseline |" in table and "Δtop-1" in table
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_flops_count_nonzero_macs():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(3 * 25, 4))
    with torch.no_grad():
        model[0].weight[0] = 0  # one filter removed: 2·9 MACs per pixel fewer
    flops = demo.count_flops(model, torch.randn(2, 2, 5, 5))
    assert flops == 2 * (25 * 2 * 9 * 2 + 4 * 75)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="model: unknown model 'no-such-net'"):
        demo.build_model("no-such-net")

"""bench.py's plan (no timing here: speed is measured on a GPU by the benchmark only)."""

import pytest
import torch

import slimtorch.zoo as zoo
from slimtorch.core.bench import BenchResult
from slimtorch.zoo import bench


def test_cases_pair_every_model_with_torchvision_where_it_exists():
    plan = bench.cases(
        ["slim_squeezenet1_1", "slim_shiftresnet20"], [2], device="cpu", dtype=torch.float32, compile_models=False
    )
    assert [(c.model, c.provider) for c in plan] == [
        ("slim_squeezenet1_1", "ours"),
        ("slim_squeezenet1_1", "torchvision"),
        ("slim_shiftresnet20", "ours"),
    ]
    with torch.device("meta"):
        macs = zoo.profile(zoo.create_model("slim_squeezenet1_1")).macs
    assert plan[0].flops == plan[1].flops == 2 * macs * 2
    assert plan[2].input_size == (3, 32, 32)
    for case in plan:
        out = case.fn()
        assert out.shape == (2, 10 if case.model == "slim_shiftresnet20" else 1000)


def test_default_models_exist_and_cover_the_goals():
    names = set(zoo.list_models())
    assert set(bench.DEFAULT_MODELS) <= names and set(bench.QUICK_MODELS) <= names
    assert {"slim_mobilenetv2_100", "slim_shufflenetv2_x1_0", "slim_squeezenet1_1"} <= set(bench.DEFAULT_MODELS)


def test_images_per_second_table():
    rows = [
        BenchResult("zoo", "slim_mobilenetv2_100", "torchvision", 32, 10.0, 9.0, 11.0),
        BenchResult("zoo", "slim_mobilenetv2_100", "ours", 32, 8.0, 7.0, 9.0),
        BenchResult("zoo", "slim_mobilenetv2_100", "ours+compile", 32, 1.0, 1.0, 1.0, error="RuntimeError: x"),
    ]
    table = bench.images_per_second_table(rows)
    assert "| model | batch | torchvision | ours | ours+compile |" in table
    assert "| slim_mobilenetv2_100 | 32 | 3200 | 4000 |  |" in table


def test_main_refuses_a_cpu(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--quick"])
    assert "run it with a CUDA device" in capsys.readouterr().err

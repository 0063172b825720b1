import json
import math

import pytest

from slimtorch.compress import cli, demo
from slimtorch.core import reference_only

try:
    import slimtorch.zoo  # noqa: F401

    HAS_ZOO = True
except ImportError:  # slimtorch-compress installed alone (nox -s "tests_alone(package='compress')")
    HAS_ZOO = False

SECOND_MODEL = "slim_shufflenetv2_x0_5" if HAS_ZOO else "mobilenetv2_050"  # a zoo or a timm model


@pytest.fixture(scope="module")
def rows():
    with reference_only():  # the demo measures real models; kernels are tested elsewhere
        return demo.run_demo(device="cpu", batch=2, image_size=32, progress=False)


def test_demo_covers_float_and_every_cpu_format(rows):
    from slimtorch.core.formats import available_formats

    names = [r.format for r in rows]
    assert names[0] == "float32"
    assert set(names[1:]) == {f.name for f in available_formats("cpu")}
    assert all(r.error is None for r in rows), [r.error for r in rows if r.error]


def test_demo_measures_each_row(rows):
    base = rows[0]
    assert base.sqnr_db == math.inf and base.top1_agreement == 1.0
    for r in rows:
        assert r.params > 0 and r.memory_bytes > 0 and r.disk_bytes > 0 and r.latency_ms > 0
        assert r.sqnr_db > 10  # every format must stay close to the float model
    bf16 = next(r for r in rows if r.format == "bf16")
    assert bf16.memory_bytes < base.memory_bytes and bf16.disk_bytes < base.disk_bytes


def test_write_demo(rows, tmp_path):
    import torch

    paths = demo.write_demo(rows, tmp_path, model_name="small-cnn", device=torch.device("cpu"))
    payload = json.loads(paths["json"].read_text())
    assert [r["format"] for r in payload["rows"]] == [r.format for r in rows]
    assert "| bf16 | core |" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_unknown_format_and_model_are_named():
    with pytest.raises(ValueError, match=r"formats: unknown \['int3'\]"):
        demo.run_demo(device="cpu", formats=["int3"], progress=False)
    with pytest.raises(ValueError, match="model: unknown model 'no-such-net'"):
        demo.build_model("no-such-net")


def test_timm_models_by_name():
    model = demo.build_model("mobilenetv2_050")
    assert sum(p.numel() for p in model.parameters()) > 1_000_000


def test_cli_demo_end_to_end(tmp_path, capsys):
    with reference_only(), pytest.raises(SystemExit) as exit_info:
        cli.main(
            [
                "demo",
                "--model",
                f"small-cnn,{SECOND_MODEL}",
                "--device",
                "cpu",
                "--batch",
                "2",
                "--image-size",
                "32",
                "--formats",
                "bf16",
                "--out",
                str(tmp_path),
                "--no-progress",
            ]
        )
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.count("| float32 | baseline |") == 2 and out.count("| bf16 | core |") == 2
    assert (tmp_path / "demo-small-cnn.png").is_file()
    assert (tmp_path / f"demo-{SECOND_MODEL}.png").is_file()


def test_default_models_are_the_zoos_mobilenetv2_and_shufflenetv2():
    expected = ("slim_mobilenetv2_100", "slim_shufflenetv2_x1_0") if HAS_ZOO else ("small-cnn",)
    assert demo.default_models() == expected
    assert demo.default_image_size("slim_mobilenetv2_100") == 224 and demo.default_image_size("small-cnn") == 64


def test_cli_formats_and_info(capsys):
    for command in ("formats", "info"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command])
        assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "bf16" in out and "slimtorch packages:" in out

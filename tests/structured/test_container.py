"""Every registered structured conversion in the project's one file format (core.container): the
converted model round-trips bit-exactly into a fresh float model, its layers rebuilt by type."""

import pytest
import torch

from slimtorch.core import container, reference_only
from slimtorch.core.registry import available_conversions
from slimtorch.core.testing import SmallCompactCNN, randn

CONVERSIONS = [e for e in available_conversions() if e.family == "structured"]


def _cnn():
    torch.manual_seed(0)
    return SmallCompactCNN().eval()


@pytest.mark.parametrize("entry", CONVERSIONS, ids=lambda e: e.name)
def test_registered_conversions_round_trip(tmp_path, entry):
    report = entry.convert(_cnn())
    model = report.model.eval()
    if not report.converted:
        pytest.fail(f"{entry.name}: converted no layer of the test model: {report.skipped}")
    path = tmp_path / "m.safetensors"
    container.save_compressed(model, path)
    manifest = container.read_manifest(path)
    assert {v["format"] for v in manifest["layers"].values()} == {"structured"}
    loaded = container.load_compressed(path, _cnn())
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    state = model.state_dict()
    assert set(loaded.state_dict()) == set(state)
    for key, value in loaded.state_dict().items():
        assert value.dtype == state[key].dtype and torch.equal(value, state[key]), key
    x = randn((2, 3, 16, 16), seed=4)
    with reference_only(), torch.no_grad():
        assert torch.equal(loaded(x), model(x))

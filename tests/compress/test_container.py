"""The compressed file: exact round trips, runs from the compressed form, rejects corrupt input."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimtorch.compress import container, tasks
from slimtorch.compress.prune import UnstructuredConfig, finalize_, prune_unstructured_

quant = pytest.importorskip("slimtorch.quant")


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(7)
    if kind == "float":
        return tasks.lenet5()
    model = tasks.lenet5()
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.8, scope="global"))
    finalize_(model)
    if kind == "pruned":
        return model
    config = {
        "codebook": quant.CodebookWeightConfig(bits=5, iterations=10),
        "int8": quant.Int8WeightOnlyConfig(),
        "int4": quant.Int4WeightOnlyConfig(group_size=32),
    }[kind]
    return quant.quantize_(model, config).model


CASES = [("codebook", c) for c in container.CODERS] + [
    ("float", "ans"),
    ("pruned", "ans"),
    ("pruned", "huffman"),
    ("int8", "ans"),
    ("int4", "zstd"),
]


@pytest.mark.parametrize(("kind", "coder"), CASES)
def test_round_trip_is_bit_exact_and_runs_compressed(tmp_path, kind, coder):
    model = _model(kind).eval()
    path = tmp_path / "m.safetensors"
    saved = container.save_compressed(model, path, coder=coder, architecture={"name": "lenet5"})
    loaded = container.load_model(path)
    # the loaded model holds the same compressed layers, and the same tensors bit for bit
    assert [type(m).__name__ for m in loaded.modules()] == [type(m).__name__ for m in model.modules()]
    ref = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert value.dtype == ref[key].dtype and torch.equal(value, ref[key]), key
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # saving the loaded model again writes the same bytes
    again = container.save_compressed(loaded, tmp_path / "again.safetensors", coder=coder)
    container.save_compressed(model, tmp_path / "first.safetensors", coder=coder)
    assert (tmp_path / "first.safetensors").read_bytes() == again.path.read_bytes()
    assert saved.file_bytes == path.stat().st_size


def test_entropy_coding_shrinks_pruned_codebook_models(tmp_path):
    model = _model("codebook")
    sizes = container.file_bytes_by_coder(model, tmp_path)
    assert sizes["ans"] <= sizes["huffman"] < 0.3 * sizes["raw"] and sizes["zstd"] < 0.3 * sizes["raw"]


def test_refuses_masked_models_and_existing_files(tmp_path):
    model = tasks.lenet300_100()
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.5))
    with pytest.raises(ValueError, match="finalize_"):
        container.save_compressed(model, tmp_path / "m.safetensors")
    finalize_(model)
    container.save_compressed(model, tmp_path / "m.safetensors")
    with pytest.raises(FileExistsError, match="exists"):
        container.save_compressed(model, tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="coder"):
        container.save_compressed(model, tmp_path / "n.safetensors", coder="lz4")


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "m.safetensors"
    container.save_compressed(_model("codebook"), path, coder="ans", architecture={"name": "lenet5"})
    return path.read_bytes()


def _load(tmp_path, data: bytes):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    return container.load_model(path)


def test_truncated_and_tampered_files_raise_clear_errors(tmp_path, good_file):
    with pytest.raises(container.CorruptFileError, match=r"truncated|too short"):
        _load(tmp_path, good_file[: len(good_file) // 2])
    with pytest.raises(container.CorruptFileError, match="too short"):
        _load(tmp_path, good_file[:5])
    flipped = bytearray(good_file)
    flipped[-3] ^= 0x10  # a bit in the last tensor's data
    with pytest.raises(container.CorruptFileError, match="checksum"):
        _load(tmp_path, bytes(flipped))
    n = int.from_bytes(good_file[:8], "little")
    header = good_file[8 : 8 + n].replace(b'format_version\\":1', b'format_version\\":2')
    assert header != good_file[8 : 8 + n]
    with pytest.raises(container.CorruptFileError, match="manifest's checksum"):
        _load(tmp_path, good_file[:8] + header + good_file[8 + n :])
    huge = (2**62).to_bytes(8, "little") + good_file[8:]
    with pytest.raises(container.CorruptFileError, match="header length"):
        _load(tmp_path, huge)
    other = tmp_path / "plain.safetensors"
    import safetensors.torch

    safetensors.torch.save_file({"w": torch.zeros(3)}, str(other))
    with pytest.raises(container.CorruptFileError, match="not a slimtorch compressed file"):
        container.load_model(other)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_files_raise_corrupt_file_error_only(tmp_path, good_file, data):
    blob = bytearray(good_file)
    kind = data.draw(st.sampled_from(["flip", "truncate", "splice", "header"]))
    if kind == "flip":
        for pos in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=8)):
            blob[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "splice":
        pos = data.draw(st.integers(0, len(blob)))
        blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=64))
    else:
        n = int.from_bytes(blob[:8], "little")
        pos = data.draw(st.integers(8, 8 + n - 1))
        blob[pos] = data.draw(st.sampled_from(list(b'{}[]":,0123456789-e')))
    if bytes(blob) == good_file:
        return
    with pytest.raises(container.CorruptFileError):
        _load(tmp_path, bytes(blob))


def test_channel_pruned_models_load_into_their_float_architecture(tmp_path):
    pruner = pytest.importorskip("slimtorch.compress.prune.pruner")
    torch.manual_seed(3)
    model = tasks.lenet5(caffe=True).eval()
    x = torch.randn(2, 1, 28, 28)
    report = pruner.prune_channels_(
        model, pruner.PruneConfig(importance="l1", ratio=0.5, round_to=1), example_inputs=x, ignored_layers=["9"]
    )
    model = report.model
    assert model[0].out_channels == 10  # channels really removed
    path = tmp_path / "m.safetensors"
    container.save_compressed(model, path, architecture={"name": "lenet5", "kwargs": {"caffe": True}})
    loaded = container.load_model(path)
    assert loaded[0].out_channels == 10
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="does not fit this architecture"):
        container.load_compressed(path, tasks.lenet300_100())

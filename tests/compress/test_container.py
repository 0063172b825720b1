"""The compressed file (core.container) on the digits LeNets: pruned, codebook, int8 and int4 models
round-trip bit-exactly with every coder and run from the compressed form; channel-pruned models
load into their float architecture. (The format's own tests, the fuzzing included, are in
tests/core/test_container.py; the quantized layers' loader checks in tests/quant/test_container.py.)"""

import pytest
import torch

from slimtorch.compress import tasks
from slimtorch.compress.prune import UnstructuredConfig, finalize_, prune_unstructured_
from slimtorch.core import container, reference_only

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
    loaded = container.load_model(path, builders=tasks.MODELS)
    # the loaded model holds the same compressed layers, and the same tensors bit for bit
    assert [type(m).__name__ for m in loaded.modules()] == [type(m).__name__ for m in model.modules()]
    ref = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert value.dtype == ref[key].dtype and torch.equal(value, ref[key]), key
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), reference_only():  # the CPU path of each packed layer (kernels: their own tests)
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
    loaded = container.load_model(path, builders=tasks.MODELS)
    assert loaded[0].out_channels == 10
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ValueError, match="does not fit this architecture"):
        container.load_compressed(path, tasks.lenet300_100())

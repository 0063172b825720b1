"""Quantized layers in the project's one file format (core.container, registered by quant.api):
every format round-trips bit-exactly and runs packed; the loader checks of the reliability work
(each stored tensor's dtype, shape and range; the layer descriptions; missing and extra tensors;
corrupt files) name the path and the key. Never another exception, never a crash (fuzzed)."""

import hashlib
import json

import pytest
import safetensors
import safetensors.torch
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

from slimtorch.core import container, reference_only
from slimtorch.core.testing import SmallCompactCNN, assert_exact, randn
from slimtorch.quant import api, layers

CONFIGS = [
    api.Int8WeightOnlyConfig(),
    api.Int8DynamicActivationInt8WeightConfig(),
    api.Int4WeightOnlyConfig(group_size=32),
    api.BinaryWeightConfig(),
    api.TernaryWeightConfig(asymmetric=True),
    api.CodebookWeightConfig(bits=3, iterations=5),
]


def _cnn():
    torch.manual_seed(0)
    return SmallCompactCNN().eval()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_every_format_round_trips_bit_exactly_and_runs_packed(tmp_path, config):
    model = api.quantize_(_cnn(), config).model
    coder = "raw" if isinstance(config, api.Int4WeightOnlyConfig) else "ans"
    saved = container.save_compressed(model, tmp_path / "m.safetensors", coder=coder)
    stored = safetensors.torch.load_file(str(saved.path))
    assert not any(key.endswith("head.weight") for key in stored)  # the packed form only
    loaded = container.load_compressed(saved.path, _cnn())
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    for key, value in loaded.state_dict().items():
        assert_exact(value, model.state_dict()[key], name=key)
    x = randn((1, 3, 16, 16), seed=1)
    with reference_only(), torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_codebook_indices_are_entropy_coded(tmp_path):
    model = api.quantize_(_cnn(), api.CodebookWeightConfig(bits=3, iterations=5)).model
    manifest = container.read_manifest(container.save_compressed(model, tmp_path / "m.safetensors").path)
    codes = {k: v for k, v in manifest["tensors"].items() if v["encoding"] == "codes"}
    assert codes and all(v["format"] == "quant" and v["params"]["bits"] == 3 for v in codes.values())
    assert {k.rsplit(".", 1)[1] for k in codes} == {"qweight"}


# ----------------------------------------------------------------------------- bad files


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8))


@pytest.fixture
def saved(tmp_path):
    model = api.quantize_(_model(), api.Int4WeightOnlyConfig(group_size=32), filter_fn=lambda m, fqn: fqn == "0").model
    path = tmp_path / "model.safetensors"
    container.save_compressed(model, path, coder="raw")
    return path, model


def _rewrite(src, dst, *, manifest_edit=None, tensors_edit=None):
    """A copy of ``src`` with its manifest / stored tensors edited and every checksum recomputed:
    a well-formed file that lies, as a hand-crafted one would."""
    manifest = container.read_manifest(src)
    with safetensors.safe_open(str(src), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iteration)
    if tensors_edit is not None:
        tensors_edit(tensors, manifest["tensors"])
    manifest["checksums"] = {n: container.tensor_checksum(t) for n, t in sorted(tensors.items())}
    if manifest_edit is not None:
        manifest_edit(manifest)
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    value = hashlib.sha256(text.encode()).hexdigest() + text
    safetensors.torch.save_file(tensors, str(dst), metadata={container.MANIFEST_KEY: value})
    return dst


def test_valid_file_loads_exactly(saved):
    path, model = saved
    loaded = container.load_compressed(path, _model())
    assert type(loaded[0]) is layers.Int4WeightOnlyLinear
    for k, v in loaded.state_dict().items():
        assert_exact(v, model.state_dict()[k], name=k)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (5, r"manifest 'layers'\['0'\]: expected \{'format'"),
        (
            {"format": "quant", "layer": {"class": "Nope"}},
            r"layer '0' cannot be built .*unknown quantized layer 'Nope",
        ),
        ({"format": "quant", "layer": {"class": "Int4WeightOnlyLinear", "in_features": "32"}}, "cannot be built"),
        ({"format": "quant", "layer": {"class": "Int4WeightOnlyLinear", "in_features": 32}}, "cannot be built"),
    ],
)
def test_bad_layer_descriptions_name_path_and_layer(saved, tmp_path, layer, message):
    path, _ = saved
    bad = _rewrite(path, tmp_path / "meta.safetensors", manifest_edit=lambda m: m["layers"].update({"0": layer}))
    with pytest.raises(ValueError, match=rf"path: .*meta\.safetensors: .*{message}"):
        container.load_compressed(bad, _model())


def test_a_layer_the_model_lacks_or_an_unknown_format(saved, tmp_path, monkeypatch):
    path, _ = saved
    layer = {"format": "quant", "layer": {"class": "Int8WeightOnlyLinear", "in_features": 32, "out_features": 16}}
    bad = _rewrite(path, tmp_path / "nine.safetensors", manifest_edit=lambda m: m["layers"].update({"9": layer}))
    with pytest.raises(ValueError, match=r"path: .*nine\.safetensors: the file has a layer '9' that the model does"):
        container.load_compressed(bad, _model())
    from slimtorch.core import registry

    monkeypatch.setattr(registry, "import_all_packages", lambda: [])
    unknown = {"format": "quant-v9", "layer": {}}
    bad = _rewrite(path, tmp_path / "v9.safetensors", manifest_edit=lambda m: m["layers"].update({"0": unknown}))
    with pytest.raises(ValueError, match=r"path: .*v9\.safetensors: layer '0': layer format 'quant-v9' is not reg"):
        container.load_compressed(bad, _model())


def _drop(tensors, infos, key="0.zero"):
    tensors.pop(key)
    infos.pop(key)


def _extra(tensors, infos):
    tensors["extra"] = torch.zeros(2)
    infos["extra"] = {"dtype": "float32", "shape": [2], "encoding": "raw"}


def _as_float(tensors, infos):
    tensors["0.qweight"] = tensors["0.qweight"].float()
    infos["0.qweight"]["dtype"] = "float32"


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (_drop, ValueError, "does not fit this architecture.*Missing key.*0.zero"),
        (_extra, ValueError, "does not fit this architecture.*Unexpected key.*extra"),
        (_as_float, TypeError, "0.qweight: expected dtype int32, got float32"),
    ],
    ids=["missing", "extra", "dtype"],
)
def test_missing_extra_and_wrong_dtype_tensors_name_path_and_key(saved, tmp_path, edit, error, message):
    path, _ = saved
    bad = _rewrite(path, tmp_path / "edited.safetensors", tensors_edit=edit)
    with pytest.raises(error, match=rf"(?s)^path: .*edited\.safetensors: .*{message}"):
        container.load_compressed(bad, _model())


# (kind, buffer, corruption of the layer in memory before it is saved, message): the file is
# well-formed (valid checksums); the rebuilt layer's load_state_dict refuses the value, naming the key.
OUT_OF_RANGE = [
    (api.Int8WeightOnlyConfig(), "qweight", lambda t: t.fill_(-128), r"0\.qweight: expected values in \[-127, 127\]"),
    (api.Int8WeightOnlyConfig(), "scale", lambda t: t.fill_(float("nan")), r"0\.scale: expected finite"),
    (api.Int4WeightOnlyConfig(group_size=32), "zero", lambda t: t.fill_(17), r"0\.zero: expected values in \[0, 16\]"),
    (api.TernaryWeightConfig(), "qweight", lambda t: t.fill_(0x22222222), "0.qweight: expected ternary codes"),
    (api.CodebookWeightConfig(bits=3), "qweight", lambda t: t.fill_(0x0F0F0F0F), "0.qweight: expected codebook ind"),
]


@pytest.mark.parametrize(("config", "buffer", "corrupt", "message"), OUT_OF_RANGE, ids=lambda v: str(v)[:24])
def test_stored_values_out_of_range_name_path_and_key(tmp_path, config, buffer, corrupt, message):
    model = api.quantize_(_model(), config, filter_fn=lambda m, fqn: fqn == "0").model
    corrupt(getattr(model[0], buffer))
    path = tmp_path / "range.safetensors"
    container.save_compressed(model, path, coder="raw")
    with pytest.raises(ValueError, match=rf"^path: .*range\.safetensors: {message}"):
        container.load_compressed(path, _model())


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    model = api.quantize_(_model(), api.Int4WeightOnlyConfig(group_size=32), filter_fn=lambda m, fqn: fqn == "0").model
    model = api.quantize_(model, api.CodebookWeightConfig(bits=3, iterations=5), filter_fn=lambda m, f: f == "2").model
    path = tmp_path_factory.mktemp("quant") / "valid.safetensors"
    container.save_compressed(model, path, coder="ans")
    return path.read_bytes()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.integers(0, 2**20), in_data=st.booleans(), bit=st.integers(0, 7), truncate=st.booleans())
def test_corrupted_files_raise_corrupt_file_error_naming_the_path(
    valid_file, tmp_path_factory, where, in_data, bit, truncate
):
    data = valid_file
    path = tmp_path_factory.mktemp("corrupt") / "file.safetensors"
    if truncate:
        path.write_bytes(data[: where % len(data)])
    else:
        flipped = bytearray(data)
        header = 8 + int.from_bytes(data[:8], "little")  # u64 header length, the JSON header, then the data
        flipped[header + where % (len(data) - header) if in_data else where % header] ^= 1 << bit
        path.write_bytes(bytes(flipped))
    with pytest.raises(container.CorruptFileError) as info:
        container.load_compressed(path, _model())
    assert str(info.value).startswith(f"path: {path}: "), info.value
    event(f"{'truncate' if truncate else 'flip data' if in_data else 'flip header'}: {str(info.value)[-40:]}")

"""core.container, the one file format: bit-exact round trips of every encoding (raw, sparse,
int8, a registered layer format's symbol codes) with every coder, layers rebuilt through
core.layer_formats, and every kind of bad file refused with an error naming the path (fuzzed)."""

import struct

import numpy as np
import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from slimtorch.core import container, registry
from slimtorch.core.layer_formats import LayerFormat, Symbols, get_layer_format, register_layer_format

LEVELS = 5  # the toy layer's codes are in [0, LEVELS)


class ToyCodes(nn.Module):
    """A packed layer: y = x @ (scale · (codes − 2)).T with uint8 ``codes`` in [0, 5); its
    ``load_state_dict`` refuses codes out of range, as the real packages' layers do."""

    def __init__(self, k: int, n: int):
        super().__init__()
        self.register_buffer("codes", torch.zeros(n, k, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(n))

    def forward(self, x):
        return x @ (self.scale[:, None] * (self.codes.float() - 2)).T

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        codes = state_dict.get(prefix + "codes")
        if codes is not None and codes.numel() and int(codes.max()) >= LEVELS:
            raise ValueError(f"{prefix}codes: expected values in [0, {LEVELS}), got max {int(codes.max())}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _to_symbols(module, name, tensor):
    if isinstance(module, ToyCodes) and name == "codes":
        return Symbols(tensor.numpy().reshape(-1), LEVELS, {"k": tensor.shape[1]})
    return None


def _from_symbols(values, params):
    return torch.from_numpy(values.astype(np.uint8)).view(-1, int(params["k"]))


TOY = register_layer_format(
    LayerFormat(
        name="test-toy",
        family="core-tests",
        claims=lambda m: type(m) is ToyCodes,
        describe=lambda m: {"k": m.codes.shape[1], "n": m.codes.shape[0]},
        build=lambda d, device, dtype: ToyCodes(int(d["k"]), int(d["n"])).to(device),
        to_symbols=_to_symbols,
        from_symbols=_from_symbols,
    )
)


def _float_model() -> nn.Module:
    return nn.Sequential(nn.Linear(37, 21), nn.ReLU(), nn.Linear(21, 11))


def _model() -> nn.Module:
    """A sparse Linear (70% zeros), an int8 buffer, and a toy packed layer with skewed codes."""
    gen = torch.Generator().manual_seed(5)
    model = _float_model()
    with torch.no_grad():
        model[0].weight.mul_(torch.rand(21, 37, generator=gen) > 0.7)
    model[0].register_buffer("levels", torch.randint(-128, 128, (19,), generator=gen, dtype=torch.int8))
    toy = ToyCodes(21, 11)
    skew = torch.tensor([0.05, 0.05, 0.8, 0.05, 0.05])
    toy.codes.copy_(torch.multinomial(skew, 21 * 11, replacement=True, generator=gen).view(11, 21).to(torch.uint8))
    toy.scale.copy_(torch.rand(11, generator=gen) + 0.5)
    model[2] = toy
    return model.eval()


def _fresh() -> nn.Module:
    model = _float_model()
    model[0].register_buffer("levels", torch.zeros(19, dtype=torch.int8))
    return model


@pytest.mark.parametrize("coder", container.CODERS)
def test_round_trip_is_bit_exact_and_the_loaded_model_runs(tmp_path, coder):
    model = _model()
    saved = container.save_compressed(model, tmp_path / "m.safetensors", coder=coder, extra={"note": "x"})
    manifest = container.read_manifest(saved.path)
    assert manifest["layers"] == {"2": {"format": "test-toy", "layer": {"k": 21, "n": 11}}}
    encodings = {k: v["encoding"] for k, v in manifest["tensors"].items()}
    if coder != "raw":
        assert encodings == {"0.weight": "sparse", "0.bias": "raw", "0.levels": "int8", "2.codes": "codes"} | {
            "2.scale": "raw"
        }
    loaded = container.load_compressed(saved.path, _fresh())
    assert type(loaded[2]) is ToyCodes
    ref = model.state_dict()
    assert set(loaded.state_dict()) == set(ref)
    for key, value in loaded.state_dict().items():
        assert value.dtype == ref[key].dtype and torch.equal(value, ref[key]), key
    x = torch.randn(3, 37, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    again = container.save_compressed(loaded, tmp_path / "again.safetensors", coder=coder, extra={"note": "x"})
    assert again.path.read_bytes() == saved.path.read_bytes()  # deterministic bytes


def test_entropy_coders_shrink_skewed_codes(tmp_path):
    toy = ToyCodes(301, 97)  # 29,197 codes, 80% one symbol: about 1.1 bits each against raw's 8
    skew = torch.tensor([0.05, 0.05, 0.8, 0.05, 0.05])
    gen = torch.Generator().manual_seed(2)
    toy.codes.copy_(torch.multinomial(skew, 301 * 97, replacement=True, generator=gen).view(97, 301).to(torch.uint8))
    sizes = container.file_bytes_by_coder(toy, tmp_path)
    assert sizes["ans"] <= sizes["huffman"] < 0.3 * sizes["raw"] and sizes["zstd"] < 0.5 * sizes["raw"]


def test_load_model_rebuilds_the_named_architecture(tmp_path):
    path = tmp_path / "m.safetensors"
    container.save_compressed(_model(), path, architecture={"name": "toy", "kwargs": {}})
    loaded = container.load_model(path, builders={"toy": _fresh})
    assert type(loaded[2]) is ToyCodes
    container.save_compressed(_model(), tmp_path / "anon.safetensors")
    with pytest.raises(ValueError, match="names no architecture"):
        container.load_model(tmp_path / "anon.safetensors", builders={"toy": _fresh})


def test_bad_arguments(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module, got str"):
        container.save_compressed("model", tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="coder: expected one of"):
        container.save_compressed(_model(), tmp_path / "m.safetensors", coder="lz4")
    container.save_compressed(_model(), tmp_path / "m.safetensors")
    with pytest.raises(FileExistsError, match="exists"):
        container.save_compressed(_model(), tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match=r"model: expected a torch\.nn\.Module, got str"):
        container.load_compressed(tmp_path / "m.safetensors", "model")
    monkeypatch.setattr(registry, "import_all_packages", lambda: [])  # (importing every package: slow, not needed)
    with pytest.raises(KeyError, match="'no-such-format' is not registered"):
        get_layer_format("no-such-format")


@pytest.mark.parametrize(
    "content",
    [b"", b"\x01\x02\x03", b"not a safetensors file at all, just text", struct.pack("<Q", 10**9) + b"{}"],
    ids=["empty", "three-bytes", "text", "huge-header"],
)
def test_non_safetensors_files_name_the_path(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(container.CorruptFileError, match=r"path: .*bad\.safetensors: "):
        container.load_compressed(path, _fresh())


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "m.safetensors"
    container.save_compressed(_model(), path, coder="ans")
    return path.read_bytes()


def _write(tmp_path, data: bytes):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    return path


def test_truncated_tampered_and_foreign_files(tmp_path, good_file):
    for keep in (0.3, 0.6, 0.95):
        with pytest.raises(container.CorruptFileError, match=r"path: .*bad\.safetensors: .*(truncated|outside)"):
            container.load_compressed(_write(tmp_path, good_file[: int(len(good_file) * keep)]), _fresh())
    flipped = bytearray(good_file)
    flipped[-3] ^= 0x10  # a bit of the last tensor's data
    with pytest.raises(container.CorruptFileError, match="checksum"):
        container.load_compressed(_write(tmp_path, bytes(flipped)), _fresh())
    n = int.from_bytes(good_file[:8], "little")
    header = good_file[8 : 8 + n].replace(b'format_version\\":1', b'format_version\\":2')
    assert header != good_file[8 : 8 + n]
    with pytest.raises(container.CorruptFileError, match="manifest's checksum"):
        container.load_compressed(_write(tmp_path, good_file[:8] + header + good_file[8 + n :]), _fresh())
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(3)}, str(plain))
    with pytest.raises(container.CorruptFileError, match="not a slimtorch compressed file"):
        container.load_compressed(plain, _fresh())


def test_a_valid_file_that_does_not_fit_names_path_layer_and_key(tmp_path):
    path = tmp_path / "m.safetensors"
    container.save_compressed(_model(), path)
    with pytest.raises(ValueError, match=r"path: .*m\.safetensors: the file has a layer '2' that the model does not"):
        container.load_compressed(path, nn.Sequential(nn.Linear(37, 21)))
    with pytest.raises(ValueError, match=r"(?s)path: .*m\.safetensors: does not fit this architecture.*levels"):
        container.load_compressed(path, _float_model())
    bad = _model()
    bad[2].codes[0, 0] = LEVELS + 3  # written with valid checksums: the layer's own check refuses it
    container.save_compressed(bad, tmp_path / "range.safetensors", coder="raw")  # (the coders refuse it)
    with pytest.raises(ValueError, match=r"path: .*range\.safetensors: 2\.codes: expected values in \[0, 5\)"):
        container.load_compressed(tmp_path / "range.safetensors", _fresh())


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
        blob[data.draw(st.integers(8, 8 + n - 1))] = data.draw(st.sampled_from(list(b'{}[]":,0123456789-e')))
    if bytes(blob) == good_file:
        return
    path = _write(tmp_path, bytes(blob))
    with pytest.raises(container.CorruptFileError, match=r"^path: .*bad\.safetensors: "):
        container.load_compressed(path, _fresh())

"""Sparse layers in the project's one file format (core.container, registered by sparse.api):
2:4, block-sparse and a GemmConv2d around a 2:4 layer round-trip bit-exactly into a fresh dense
model, rebuilt from their descriptions, and run from the packed form; bad descriptions name the key."""

import hashlib
import json

import pytest
import safetensors
import safetensors.torch
import torch
from torch import nn

from slimtorch.core import container, reference_only
from slimtorch.core.layer_formats import stored_layers
from slimtorch.core.modules import GemmConv2d
from slimtorch.core.testing import assert_exact, randn
from slimtorch.sparse import BlockSparseLinear, Sparse24Config, SparseLinear24, prune_24, sparsify_
from slimtorch.sparse.layers import build_layer, describe_layer


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)  # K = 36
        self.block = nn.Linear(128, 32)
        self.head = nn.Linear(32, 7)  # odd N

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        return self.head(torch.relu(self.block(h)))


def _dense():
    torch.manual_seed(0)
    return _Net().eval()


def _sparse():
    model = _dense()
    sparsify_(model, Sparse24Config(), filter_fn=lambda m, fqn: fqn == "conv")
    head = model.head
    with torch.no_grad():
        head.weight.mul_(prune_24(head.weight))
    model.head = SparseLinear24.from_dense(head, permute=True)
    model.block = BlockSparseLinear.from_dense(model.block, block_size=16, density=0.5)
    return model.eval()


@pytest.fixture
def saved(tmp_path):
    model = _sparse()
    path = tmp_path / "m.safetensors"
    container.save_compressed(model, path)
    return path, model


def test_sparse_layers_round_trip_bit_exactly_and_run_packed(saved):
    path, model = saved
    assert isinstance(model.conv, GemmConv2d) and isinstance(model.conv.gemm, SparseLinear24)
    manifest = container.read_manifest(path)
    assert {k: v["format"] for k, v in manifest["layers"].items()} == dict.fromkeys(("conv", "block", "head"), "sparse")
    loaded = container.load_compressed(path, _dense())
    assert type(loaded.conv) is GemmConv2d and type(loaded.conv.gemm) is SparseLinear24
    assert type(loaded.block) is BlockSparseLinear and type(loaded.head) is SparseLinear24
    assert loaded.head.perm is not None
    reference = model.state_dict()
    assert set(loaded.state_dict()) == set(reference)
    for key, value in loaded.state_dict().items():
        assert_exact(value, reference[key], name=key)
    x = randn((2, 4, 4, 4), seed=1)
    with reference_only(), torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_built_layers_have_the_stored_shapes():
    model = _sparse()
    for name, (fmt, layer) in stored_layers(model).items():
        assert fmt.name == "sparse", name
        empty = build_layer(describe_layer(layer))
        shapes = {k: (v.shape, v.dtype) for k, v in empty.state_dict().items()}
        assert shapes == {k: (v.shape, v.dtype) for k, v in layer.state_dict().items()}, name


def test_quant_and_structured_layers_are_not_claimed():
    from slimtorch.sparse.api import SPARSE_LAYER_FORMAT

    assert not SPARSE_LAYER_FORMAT.claims(nn.Linear(8, 8))
    assert not SPARSE_LAYER_FORMAT.claims(GemmConv2d(nn.Linear(36, 8), 4, 3))
    quant = pytest.importorskip("slimtorch.quant")
    q = quant.api.quantize_(nn.Sequential(nn.Linear(32, 8)), quant.api.Int8WeightOnlyConfig()).model
    assert not any(SPARSE_LAYER_FORMAT.claims(m) for m in q.modules())


def _rewrite(src, dst, *, manifest_edit):
    """A copy of ``src`` with its manifest edited and its checksum recomputed (a well-formed file that lies)."""
    manifest = container.read_manifest(src)
    with safetensors.safe_open(str(src), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iteration)
    manifest_edit(manifest)
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    value = hashlib.sha256(text.encode()).hexdigest() + text
    safetensors.torch.save_file(tensors, str(dst), metadata={container.MANIFEST_KEY: value})
    return dst


def _edit(layer: dict, name: str) -> dict:
    return layer["gemm"] if name == "conv" else layer


def test_a_description_whose_blocks_disagree_with_the_stored_structure(saved, tmp_path):
    path, _ = saved

    def shift(manifest):  # a valid structure of the same nnz (2x8 grid, 8 blocks) but other blocks
        layer = manifest["layers"]["block"]["layer"]
        first, last = [list(range(8)), []], [[], list(range(8))]
        layer["blocks"] = last if layer["blocks"] == first else first

    bad = _rewrite(path, tmp_path / "bad.safetensors", manifest_edit=shift)
    with pytest.raises(ValueError, match=r"block\.col_indices: the stored block structure differs"):
        container.load_compressed(bad, _dense())


@pytest.mark.parametrize(
    ("name", "edit", "message"),
    [
        ("block", lambda d: d.update(blocks=d["blocks"][:1]), r"blocks: expected one list of block columns"),
        ("block", lambda d: d["blocks"][0].append(99), r"blocks\[0\]: expected strictly increasing block columns"),
        ("block", lambda d: d["blocks"][0].reverse(), r"blocks\[0\]: expected strictly increasing"),
        ("block", lambda d: d.update(block_size=5), r"block_size: expected one of"),
        ("head", lambda d: d.pop("permuted"), r"permuted: missing from the SparseLinear24 description"),
        ("head", lambda d: d.update(bias="yes"), r"bias: expected true or false"),
        ("head", lambda d: d.update(in_features="32"), r"in_features: expected an int"),
        ("head", lambda d: d.update(extra=1), r"extra: not a key of the SparseLinear24 description"),
        ("head", lambda d: d.update({"class": "Nope"}), r"class: unknown sparse layer 'Nope'"),
        ("conv", lambda d: d.update(in_features=40), r"gemm: expected in_features"),
    ],
)
def test_bad_descriptions_name_the_key(saved, tmp_path, name, edit, message):
    path, _ = saved

    def corrupt(manifest):
        edit(_edit(manifest["layers"][name]["layer"], name))

    bad = _rewrite(path, tmp_path / "bad.safetensors", manifest_edit=corrupt)
    with pytest.raises(ValueError, match=rf"layer {name!r} cannot be built \({message}"):
        container.load_compressed(bad, _dense())

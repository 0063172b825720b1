"""2:4 and block masks (hand-checked patterns), their export to slimtorch.sparse and to the
compressed file: the exported model equals the masked model."""

import copy

import pytest
import torch
from torch import nn

from slimtorch.compress.prune import (
    SemiStructuredConfig,
    SparseExportConfig,
    UnstructuredConfig,
    export_sparse_,
    masks_of,
    prune_semi_structured_,
    prune_unstructured_,
    save_pruned,
)
from slimtorch.core.container import load_compressed
from slimtorch.core.modules import GemmConv2d
from slimtorch.core.testing import rel_bound
from slimtorch.sparse import BlockSparseLinear, SparseLinear24


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.ReLU(), nn.Linear(32, 7)
    )


def _rel(out, ref):
    return ((out - ref).norm() / ref.norm()).item()


def test_24_mask_hand_computed_and_inside_the_old_mask():
    def layer():
        dense = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            dense.weight.copy_(
                torch.tensor([[0.1, -0.9, 0.3, 0.2, 0.5, 0.5, -0.5, 0.0], [1, 2, 3, 4, -4, -3, -2, -1.0]])
            )
        return dense

    model = nn.Sequential(layer())
    prune_semi_structured_(model, SemiStructuredConfig("2:4"))
    assert masks_of(model)["0"].int().tolist() == [
        [0, 1, 1, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
    ]  # ties: lower index
    # scores from another criterion; an already-removed weight stays removed
    scores = {"0": torch.tensor([[9.0, 0, 0, 8, 1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7, 8]])}
    model = nn.Sequential(layer())
    prune_unstructured_(model, UnstructuredConfig(sparsity=1 / 16))  # removes the 0.0 weight (score 4)
    prune_semi_structured_(model, SemiStructuredConfig("2:4"), scores=scores)
    assert masks_of(model)["0"].int().tolist() == [[1, 0, 0, 1, 0, 1, 1, 0], [0, 0, 1, 1, 0, 0, 1, 1]]


def test_block_mask_hand_computed():
    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():  # 2x2 tiles with squared norms [[4, 1], [9, 0.25]] x 4 entries
        layer.weight.copy_(torch.tensor([[2, 2, 1, 1], [2, 2, 1, 1], [3, 3, 0.5, 0.5], [3, 3, 0.5, 0.5]]))
    model = nn.Sequential(layer)
    prune_semi_structured_(model, SemiStructuredConfig("block", sparsity=0.5, block_size=2))
    assert masks_of(model)["0"].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]


@pytest.mark.parametrize("fmt", ["2:4", "block"])
def test_exported_model_equals_the_masked_model(fmt):
    model = _net()
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.3))
    options = {"block_size": 16, "sparsity": 0.5} if fmt == "block" else {}
    report = prune_semi_structured_(model, SemiStructuredConfig(fmt, **options))
    x = torch.randn(3, 16, 5, 5)
    with torch.no_grad():
        ref = model(x)
    exported = export_sparse_(copy.deepcopy(model), SparseExportConfig(fmt, block_size=16))
    kind = SparseLinear24 if fmt == "2:4" else BlockSparseLinear
    converted = exported.converted
    assert set(converted) == set(report.converted) and converted
    for name in converted:  # convolutions: core's GemmConv2d around the sparse GEMM
        module = exported.model.get_submodule(name)
        assert isinstance(module.gemm if isinstance(module, GemmConv2d) else module, kind)
    assert isinstance(exported.model[0], GemmConv2d) and isinstance(exported.model[3], kind)
    with torch.no_grad():
        out = exported.model(x)
    assert _rel(out, ref) <= rel_bound(torch.float32, 16 * 5 * 5)
    assert exported.bytes_after < exported.bytes_before


def test_export_refuses_a_mask_that_is_not_24():
    model = _net()
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.3))
    with pytest.raises(ValueError, match=r"model\.0: expected a 2:4 mask .* got [34] kept in row \d+, group \d+"):
        export_sparse_(model, SparseExportConfig("2:4"))
    with pytest.raises(ValueError, match="block_size"):
        SparseExportConfig("block", block_size=12)
    with pytest.raises(ValueError, match="pattern"):
        SemiStructuredConfig("4:8")


def test_save_pruned_round_trip(tmp_path):
    model = _net(1)
    prune_unstructured_(model, UnstructuredConfig(sparsity=0.8, scope="global"))
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        ref = model(x)
    saved = save_pruned(model, tmp_path / "pruned.slim.safetensors")
    assert masks_of(model)  # the model itself stays masked
    loaded = load_compressed(saved.path, _net(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref, rtol=0, atol=0)
    dense_bytes = 4 * sum(p.numel() for p in _net().parameters())
    assert saved.file_bytes < 0.5 * dense_bytes  # the sparse encoding: 80% zeros

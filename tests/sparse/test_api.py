"""api.py: sparsify_ / to_sparse_ on models, configs, and the registered compression formats."""

import copy

import pytest
import torch
from torch import nn

from slimtorch.core import reference_only
from slimtorch.core.model_stats import count_parameters
from slimtorch.core.modules import GemmConv2d
from slimtorch.core.registry import available_conversions
from slimtorch.core.testing import SmallCompactCNN, assert_rel_close, randn
from slimtorch.sparse import (
    BlockSparseConfig,
    BlockSparseLinear,
    MaskedSparseLinear,
    Sparse24Config,
    SparseLinear24,
    sparsify_,
    to_sparse_,
)


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.pw = nn.Conv2d(32, 32, 1)
        self.pw_grouped = nn.Conv2d(32, 32, 1, groups=2)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.attn = nn.MultiheadAttention(32, 2, batch_first=True)
        self.fc = nn.Linear(32, 16)
        self.odd = nn.Linear(16, 6)
        self.tail = nn.Linear(6, 3)  # K = 6: not 2:4-convertible

    def forward(self, x):
        x = self.conv3(self.pw_grouped(self.pw(x)))
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.attn(tokens, tokens, tokens, need_weights=False)[0]
        return self.tail(self.odd(self.fc(tokens.mean(1))))


def test_sparsify_24_converts_eligible_layers_only():
    torch.manual_seed(0)
    model = Mixed().eval()
    x = randn((2, 32, 3, 3), seed=1)
    report = sparsify_(copy.deepcopy(model), Sparse24Config())
    sparse = report.model
    for name in ("pw", "conv3"):  # convolutions: core's GemmConv2d around the sparse GEMM (K = C·kh·kw)
        assert isinstance(getattr(sparse, name), GemmConv2d) and isinstance(getattr(sparse, name).gemm, SparseLinear24)
    assert isinstance(sparse.fc, SparseLinear24) and isinstance(sparse.odd, SparseLinear24)
    assert type(sparse.pw_grouped) is nn.Conv2d and "groups=2" in report.skipped["pw_grouped"]
    assert type(sparse.tail) is nn.Linear and "not a multiple of 4" in report.skipped["tail"]
    assert type(sparse.attn.out_proj) is type(model.attn.out_proj)  # MHA reads its weight directly
    assert "MultiheadAttention" in report.skipped["attn.out_proj"]
    # Same as the dense model with the same weights pruned in place.
    pruned = copy.deepcopy(model)
    for name in ("fc", "odd"):
        getattr(pruned, name).weight.data = getattr(sparse, name).to_dense().weight.data
    pruned.pw.weight.data = sparse.pw.to_dense().weight.data
    pruned.conv3.weight.data = sparse.conv3.to_dense().weight.data
    with torch.no_grad(), reference_only():
        assert_rel_close(sparse(x), pruned(x).double(), 1e-5)
    assert count_parameters(sparse) < count_parameters(model)


def test_filter_fn_sees_qualified_names():
    seen = []

    def only_fc(module, fqn):
        seen.append(fqn)
        return fqn == "fc"

    report = sparsify_(Mixed(), Sparse24Config(), filter_fn=only_fc)
    assert isinstance(report.model.fc, SparseLinear24) and type(report.model.odd) is nn.Linear
    assert {"", "pw", "fc", "attn", "attn.out_proj"} <= set(seen)
    assert list(report.converted) == ["fc"] and report.skipped["odd"] == "excluded by filter_fn"


def test_sparsify_block_sparse():
    model = sparsify_(Mixed(), BlockSparseConfig(block_size=16, density=0.5)).model
    assert isinstance(model.pw.gemm, BlockSparseLinear) and isinstance(model.fc, BlockSparseLinear)
    assert type(model.odd) is nn.Linear  # N = 6 is not a multiple of 16


def test_sparsify_a_bare_linear_returns_the_new_module():
    layer = sparsify_(nn.Linear(8, 4), Sparse24Config(permute=True)).model
    assert isinstance(layer, SparseLinear24) and layer.perm is not None


def test_masked_training_then_to_sparse():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    masked = sparsify_(copy.deepcopy(model), Sparse24Config(sr_ste=True, sr_ste_lambda=1e-3)).model
    assert isinstance(masked[0], MaskedSparseLinear) and masked[0].sr_ste
    opt = torch.optim.SGD(masked.parameters(), lr=0.05)
    for step in range(3):
        opt.zero_grad()
        masked(randn((4, 16), seed=step)).pow(2).mean().backward()
        opt.step()
    x = randn((3, 16), seed=9)
    with torch.no_grad():
        expected = masked(x)
    final = to_sparse_(masked).model
    assert isinstance(final[0], SparseLinear24) and isinstance(final[2], SparseLinear24)
    with torch.no_grad(), reference_only():
        assert_rel_close(final(x), expected.double(), 1e-5)


def test_masked_training_wraps_pointwise_convs():
    model = sparsify_(nn.Sequential(nn.Conv2d(8, 8, 1)), Sparse24Config(masked_training=True)).model
    assert isinstance(model[0], GemmConv2d) and isinstance(model[0].gemm, MaskedSparseLinear)
    again = sparsify_(model, Sparse24Config())  # a masked layer is left alone, and says why
    assert again.skipped["0"].startswith("already converted") and not again.converted
    model = to_sparse_(model).model
    assert isinstance(model[0].gemm, SparseLinear24)


def test_config_errors():
    with pytest.raises(ValueError, match=r"block_size: expected one of \(16, 32, 64\), got 8"):
        BlockSparseConfig(block_size=8)
    with pytest.raises(ValueError, match=r"density: expected a value in \(0, 1\], got 1.5"):
        BlockSparseConfig(density=1.5)
    with pytest.raises(ValueError, match=r"backend: expected one of"):
        Sparse24Config(backend="fast")
    with pytest.raises(TypeError, match=r"config: expected Sparse24Config or BlockSparseConfig, got dict"):
        sparsify_(nn.Linear(4, 4), {"block_size": 16})


def test_formats_are_registered():
    formats = {f.name: f for f in available_conversions("cpu")}
    assert formats["sparse24"].family == "sparse" and formats["block-sparse-50"].family == "sparse"


@pytest.mark.parametrize("name", ["sparse24", "block-sparse-50"])
def test_formats_convert_cnns(name):
    import timm

    fmt = next(f for f in available_conversions("cpu") if f.name == name)
    for model, shape in ((SmallCompactCNN(), (2, 3, 32, 32)), (timm.create_model("mobilenetv2_050"), (1, 3, 64, 64))):
        model = model.eval()
        x = randn(shape, seed=3)
        with torch.no_grad(), reference_only():
            reference = model(x)
            converted = fmt.convert(copy.deepcopy(model)).model
            out = converted(x)
        assert any(isinstance(m, (SparseLinear24, BlockSparseLinear)) for m in converted.modules())
        assert out.shape == reference.shape and bool(torch.isfinite(out).all())
        assert count_parameters(converted) < count_parameters(model)

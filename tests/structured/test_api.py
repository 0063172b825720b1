"""api.py: structure_ on core's conversion walk (what converts, what is left alone and why,
composition, bytes), every registered structured conversion on a small CNN, config errors."""

import pytest
import torch
from torch import nn

from slimtorch.core.registry import available_conversions
from slimtorch.core.testing import SmallCompactCNN, assert_rel_close, randn
from slimtorch.structured import (
    BlockCirculantConfig,
    BlockCirculantConv2d,
    BlockCirculantLinear,
    LowRankConfig,
    LowRankLinear,
    TTConfig,
    TuckerConfig,
    structure_,
)

STRUCTURED = [c for c in available_conversions("cpu") if c.family == "structured"]


def _model():
    torch.manual_seed(0)
    return SmallCompactCNN(num_classes=10, width=16).eval()


def test_block_circulant_takes_pointwise_convs_and_says_why_not_the_rest():
    report = structure_(_model(), BlockCirculantConfig(block_size=8))
    model = report.model
    assert isinstance(model.pw1[0], BlockCirculantConv2d) and isinstance(model.pw2[0], BlockCirculantConv2d)
    assert "pw1.0" in report.converted and "pw2.0" in report.converted
    assert report.skipped["stem.0"].startswith("kernel_size=(3, 3)")
    assert report.skipped["pw3.0"] == "kernel_size=(1, 1), groups=4: only 1x1 groups=1 convs"
    assert report.skipped["head"] == "in/out sizes (64, 10) are not multiples of block_size 8"
    assert report.bytes_after < report.bytes_before
    again = structure_(model, BlockCirculantConfig(block_size=8))  # composes: already converted
    assert not again.converted and again.skipped["pw1.0"] == "already block-circulant"
    low = structure_(model, LowRankConfig(rank=2), filter_fn=lambda m, fqn: fqn != "stem.0")
    assert isinstance(model.head, LowRankLinear) and low.skipped["stem.0"] == "excluded by filter_fn"
    assert low.skipped["pw1.0"] == "already block-circulant"
    total = report + low
    assert total.bytes_before == report.bytes_before and total.bytes_after == low.bytes_after


def test_low_rank_leaves_layers_it_would_not_shrink():
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 40))
    report = structure_(model, LowRankConfig(rank=5))
    assert report.skipped["0"] == "rank 5 would not be smaller than the dense 6x8 weight"
    assert isinstance(report.model[2], LowRankLinear)
    error = report.model[2].relative_error
    assert report.converted["2"] == f"Linear -> LowRankLinear (rank 5, relative error {error:.4f})"
    assert structure_(nn.Linear(4, 4), LowRankConfig(rank=5)).skipped[""] == "rank 5 > min(out, in) = 4"


def test_tensor_train_and_tucker_configs():
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 4 * 4, 64))
    x = randn((2, 8, 4, 4), seed=1)
    before = model(x)
    assert (
        structure_(model, TuckerConfig(rank_ratio=1.0)).skipped["0"] == "Tucker-2 at these ranks would not be smaller"
    )
    report = structure_(model, TuckerConfig(rank_ratio=0.5))
    assert report.converted["0"].startswith("Conv2d -> TuckerConv2d (ranks (out 8, in 4), relative error 0.")
    report = structure_(report.model, TTConfig(error=0.999, param_ratio=None))
    assert report.converted["2"].startswith("Linear -> TTLinear (TT ranks [1, ")
    assert report.model(x).shape == before.shape


@pytest.mark.parametrize("entry", STRUCTURED, ids=lambda e: e.name)
def test_every_registered_conversion_runs_on_a_small_cnn(entry):
    model = _model()
    x = randn((2, 3, 16, 16), seed=2)
    with torch.no_grad():
        report = entry.convert(model)
        out = report.model(x)
    assert report.converted and out.shape == (2, 10) and torch.isfinite(out).all()
    assert report.bytes_after < report.bytes_before


def test_registry_has_the_issue_names():
    assert {"block-circulant-b8", "low-rank-0.5"} <= {e.name for e in STRUCTURED}


def test_block_circulant_linear_exact_on_block_circulant_weights():
    dense = nn.Linear(16, 24)
    exact = BlockCirculantLinear(16, 24, 8).to_dense()  # a block-circulant weight: projection keeps it
    dense.load_state_dict(exact.state_dict())
    model = structure_(nn.Sequential(dense), BlockCirculantConfig(block_size=8)).model
    x = randn((3, 16), seed=3)
    assert_rel_close(model(x), dense(x), 1e-5)


def test_config_errors():
    with pytest.raises(ValueError, match=r"block_size: expected an int >= 2, got 1"):
        BlockCirculantConfig(block_size=1)
    with pytest.raises(ValueError, match=r"energy: expected a fraction in \(0, 1\], got 1.2"):
        LowRankConfig(energy=1.2)
    with pytest.raises(ValueError, match="expected at most one of"):
        LowRankConfig(rank=2, energy=0.5)

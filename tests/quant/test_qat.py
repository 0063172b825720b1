"""QAT: STE / LSQ / DoReFa / TTQ / codebook gradients against their formulas, training, conversion."""

import pytest
import torch
from torch import nn

from slimtorch.core import reference_only
from slimtorch.core.modules import GemmConv2d
from slimtorch.core.testing import assert_rel_close, randn, rel_bound
from slimtorch.quant import api, layers, qat

ALL_CONFIGS = [
    api.Int8WeightOnlyConfig(),
    api.Int4WeightOnlyConfig(group_size=32),
    api.Int8DynamicActivationInt8WeightConfig(),
    api.BinaryWeightConfig(),
    api.TernaryWeightConfig(),
    api.CodebookWeightConfig(bits=3),
    qat.LSQConfig(bits=8),
    qat.LSQConfig(bits=4, group_size=32),
    qat.DoReFaConfig(bits=3),
    qat.TTQConfig(),
]


def _ids(config):
    return f"{type(config).__name__}-{getattr(config, 'bits', '')}"


def _leaf(shape, seed, scale=1.0):
    return randn(shape, seed=seed, scale=scale).double().requires_grad_()


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("config", [api.Int8WeightOnlyConfig(), api.BinaryWeightConfig(), api.TernaryWeightConfig()])
def test_ste_gradient_is_identity(config):
    w = _leaf((5, 64), 0)
    upstream = randn((5, 64), seed=1).double()
    (qat.STEFakeQuantizer(config)(w) * upstream).sum().backward()
    assert torch.equal(w.grad, upstream)


@pytest.mark.parametrize(("bits", "group_size"), [(8, None), (4, 32)])
def test_lsq_gradients_match_the_paper(bits, group_size):
    w = _leaf((6, 64), 2)
    quantizer = qat.LSQFakeQuantizer(w, bits, group_size).double()
    with torch.no_grad():  # steps small enough that some weights clip at both ends
        quantizer.step.copy_(quantizer._grouped(w.detach()).abs().amax(-1, keepdim=True) / (1.3 * quantizer.q_max))
    upstream = randn((6, 64), seed=3).double()
    (quantizer(w) * upstream).sum().backward()

    step = quantizer.step.detach()
    v = quantizer._grouped(w.detach()) / step
    c = quantizer._grouped(upstream)
    below, above = v < quantizer.q_min, v > quantizer.q_max
    inside = ~(below | above)
    assert bool(below.any()) and bool(above.any())
    expected_w = (c * inside).reshape(6, 64)
    per_weight = torch.where(inside, torch.round(v) - v, torch.where(below, quantizer.q_min, quantizer.q_max) * 1.0)
    n_weights = v.shape[-1]
    expected_step = (c * per_weight).sum(-1, keepdim=True) / (n_weights * quantizer.q_max) ** 0.5
    torch.testing.assert_close(w.grad, expected_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(quantizer.step.grad, expected_step, rtol=1e-12, atol=1e-12)


def test_dorefa_gradient_matches_the_formula():
    w = _leaf((4, 33), 4)
    upstream = randn((4, 33), seed=5).double()
    (qat.DoReFaFakeQuantizer(3)(w) * upstream).sum().backward()
    t = torch.tanh(w.detach())
    m = t.abs().max()
    expected = upstream * (1 - t**2) / m  # d/dw of 2·r with r = tanh(w)/(2m) + 1/2 (STE on the rounding)
    not_max = t.abs() != m  # the max element also moves m
    torch.testing.assert_close(w.grad[not_max], expected[not_max], rtol=1e-12, atol=1e-12)


def test_ttq_gradients_match_the_paper():
    w = _leaf((5, 40), 6)
    quantizer = qat.TTQFakeQuantizer(w, threshold=0.3).double()
    upstream = randn((5, 40), seed=7).double()
    out = quantizer(w)
    (out * upstream).sum().backward()
    delta = 0.3 * w.detach().abs().max()
    pos, neg = w.detach() > delta, w.detach() < -delta
    assert bool(pos.any()) and bool(neg.any()) and bool((~pos & ~neg).any())
    w_pos, w_neg = quantizer.w_pos.detach(), quantizer.w_neg.detach()
    torch.testing.assert_close(out.detach(), w_pos * pos - w_neg * neg)
    expected_w = upstream * torch.where(pos, w_pos, torch.where(neg, w_neg, torch.ones_like(w_pos)))
    torch.testing.assert_close(w.grad, expected_w)
    torch.testing.assert_close(quantizer.w_pos.grad, (upstream * pos).sum())
    torch.testing.assert_close(quantizer.w_neg.grad, -(upstream * neg).sum())


def test_codebook_centroid_gradient_is_the_cluster_sum():
    w = _leaf((4, 30), 8)
    quantizer = qat.CodebookFakeQuantizer(w, bits=2, iterations=5).double()
    upstream = randn((4, 30), seed=9).double()
    (quantizer(w) * upstream).sum().backward()
    _, codes = quantizer.assign(w)
    order = quantizer.centroids.detach().argsort()
    sums = torch.zeros(4, dtype=torch.float64).index_add_(0, codes.reshape(-1), upstream.reshape(-1))
    torch.testing.assert_close(quantizer.centroids.grad[order], sums)
    assert torch.equal(w.grad, upstream)


def test_per_token_activation_fake_quant_has_identity_gradient():
    x = _leaf((3, 20), 10)
    upstream = randn((3, 20), seed=11).double()
    fake = qat.fake_quantize_per_token(x)
    (fake * upstream).sum().backward()
    assert torch.equal(x.grad, upstream)
    assert len(torch.unique((fake / fake.abs().amax(1, keepdim=True) * 127).round().detach())) <= 255


# ----------------------------------------------------------------------------- training and conversion


def _mlp():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))


def _cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: stays float
        nn.Conv2d(8, 16, 1),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 5),
    )


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=_ids)
def test_qat_training_reduces_the_loss_and_converts(config):
    torch.manual_seed(0)
    x = torch.randn(256, 32)
    y = torch.tanh(x @ torch.randn(4, 32).t())
    model = qat.prepare_qat(_mlp(), config).model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = ((model(x) - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    with torch.no_grad(), reference_only():
        fake = model(x)
        converted = qat.convert_qat(model).model
        assert isinstance(converted[0], layers.QuantizedLinear) and isinstance(converted[2], layers.QuantizedLinear)
        assert_rel_close(converted(x), fake, 1e-6)


@pytest.mark.parametrize(
    "config", [qat.TTQConfig(), api.Int8DynamicActivationInt8WeightConfig(), qat.LSQConfig(bits=8)], ids=_ids
)
def test_converted_cnn_on_kernels_matches_the_fake_quant_model(device, config):
    torch.manual_seed(1)
    model = _cnn().to(device)
    report = qat.prepare_qat(model, config)
    assert list(report.converted) == ["0", "3", "5"] and "groups=8" in report.skipped["2"]
    x = randn((2, 3, 4, 4), device=device, seed=2)
    with torch.no_grad():
        fake = model(x)
        converted = qat.convert_qat(model).model
        assert isinstance(converted[0], GemmConv2d) and isinstance(converted[0].gemm, layers.QuantizedLinear)
        # a whole model: each of the 3 GEMM layers adds its K-derived error (K ≤ 16·4·4 = 256) and
        # passes the earlier ones on; on a GPU both sides use tf32 for fp32 (cuDNN convolutions, our
        # dots), so each side's error counts
        bound = 3 * rel_bound(torch.float32, 256, device=device) * (2 if device == "cuda" else 1)
        assert_rel_close(converted(x), fake, bound)


def test_prepare_qat_report_and_errors():
    report = qat.prepare_qat(_cnn(), qat.LSQConfig(bits=4, group_size=32))
    assert list(report.converted) == ["5"] and "not a multiple of group_size 32" in report.skipped["0"]
    again = qat.prepare_qat(report.model, qat.DoReFaConfig())
    assert again.skipped["5"].startswith("already prepared for QAT")
    with pytest.raises(TypeError, match=r"config: expected a quantization or QAT config"):
        qat.prepare_qat(_mlp(), "lsq")
    with pytest.raises(ValueError, match=r"group_size: expected one of \(32, 64, 128\), got None"):
        qat.LSQConfig(bits=4)
    with pytest.raises(ValueError, match="group_size: int8 LSQ steps are per output channel"):
        qat.LSQConfig(bits=8, group_size=32)
    with pytest.raises(ValueError, match=r"threshold: expected a fraction of max\|w\| in \[0, 1\), got 1.5"):
        qat.TTQConfig(threshold=1.5)

"""Power-of-two (INQ) weights: the paper's rounding (against a literal, exact-arithmetic reading of
Eq. 4), exact packing, the exponent-decoding GEMM against its reference in the interpreter, the
layer (state_dict, compressed file, torch.compile, .to), the INQ schedule's portions and masks."""

import itertools
import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from slimtorch.core import container, reference_only
from slimtorch.core.testing import SmallCompactCNN, assert_exact, assert_rel_close, randn, rel_bound
from slimtorch.quant import formats, layers
from slimtorch.quant.api import quantize_
from slimtorch.quant.inq import INQ, INQ_PORTIONS, frozen_count
from slimtorch.quant.pow2 import (
    Pow2Linear,
    Pow2WeightConfig,
    dequantize_pow2,
    largest_exponent,
    pow2_round,
    quantize_pow2,
    storage_bits,
)
from slimtorch.quant.pow2_mm import pow2_weight_mm

from .helpers import activations, assert_matches_reference
from .test_layers import _assert_kernel_matches_reference, _dense

BITS = (3, 4, 5)


# ----------------------------------------------------------------------------- the paper's rule


def _paper_round(weight: torch.Tensor, bits: int) -> list[Fraction]:
    """Eq. 4 of Zhou et al. 2017 read literally, in exact rationals: n1 = floor(log2(4s/3)) as the
    largest n with 2^n <= 4s/3, n2 = n1 + 1 - 2^(b-1)/2, and w -> beta·sgn(w) for the adjacent
    alpha < beta of the sorted non-negative set with (alpha + beta)/2 <= |w| < 3·beta/2, else 0."""
    values = [Fraction(float(v)) for v in weight.reshape(-1).tolist()]
    s = max(abs(v) for v in values)
    n1 = 0
    while Fraction(2) ** (n1 + 1) <= 4 * s / 3:
        n1 += 1
    while Fraction(2) ** n1 > 4 * s / 3:
        n1 -= 1
    n2 = n1 + 1 - 2 ** (bits - 1) // 2
    ladder = [Fraction(0)] + [Fraction(2) ** n for n in range(n2, n1 + 1)]
    out = []
    for v in values:
        hit = [b for a, b in itertools.pairwise(ladder) if (a + b) / 2 <= abs(v) < 3 * b / 2]
        out.append((hit[0] if v > 0 else -hit[0]) if hit else Fraction(0))
    return out


def _boundary_weight(seed: int) -> torch.Tensor:
    """Random weights plus every edge of Eq. 4: thresholds 3·2^(n-2) exactly and one ulp below,
    2^(n2-1) and one ulp below, zeros, and a max of exactly 0.75·2^k (4s/3 a power of two)."""
    w = randn((5, 23), seed=seed, scale=0.05)
    edges = [0.75, -0.0, 0.0]  # max |w| = 0.75: n1 = 0 exactly
    for n in range(-12, 1):
        t = 3 * 2.0 ** (n - 2)
        edges += [t, -t, math.nextafter(t, 0), -math.nextafter(t, 0), 2.0 ** (n - 1), math.nextafter(2.0 ** (n - 1), 0)]
    flat = w.reshape(-1)
    flat[: len(edges)] = torch.tensor(edges)
    return w


@pytest.mark.parametrize("bits", BITS)
def test_rounding_is_the_papers_rule_exactly(bits):
    w = _boundary_weight(seed=bits)
    assert largest_exponent(w) == 0
    expected = torch.tensor([float(v) for v in _paper_round(w, bits)]).reshape(w.shape)
    assert_exact(pow2_round(w, 0, bits), expected)
    packed = quantize_pow2(w, bits)
    assert int(packed.exponent) == 0 and packed.exponent.dtype == torch.int32
    assert_exact(dequantize_pow2(packed.qweight, packed.exponent, bits, w.shape[1]), expected)
    w_rand = randn((3, 40), seed=7, scale=3.0)  # another n1
    expected = torch.tensor([float(v) for v in _paper_round(w_rand, bits)]).reshape(w_rand.shape)
    assert_exact(dequantize_pow2(*quantize_pow2(w_rand, bits)[:2], bits, 40), expected)


@pytest.mark.parametrize(("bits", "k"), [(3, 17), (4, 8), (5, 13), (5, 1)])
def test_packing_round_trips_exactly(bits, k):
    w = randn((6, k), seed=k, scale=0.3)
    packed = quantize_pow2(w, bits)
    per_word = 32 // storage_bits(bits)
    assert packed.qweight.shape == (math.ceil(k / per_word), 6) and packed.qweight.dtype == torch.int32
    codes = formats.unpack_codes(packed.qweight, storage_bits(bits), k)
    assert_exact(formats.pack_codes(codes, storage_bits(bits)), packed.qweight)
    values = dequantize_pow2(packed.qweight, packed.exponent, bits, k)
    assert_exact(values, pow2_round(w, int(packed.exponent), bits))
    nonzero = values[values != 0].abs().log2()
    n1 = int(packed.exponent)
    assert bool((nonzero == nonzero.round()).all()) and int(nonzero.max()) <= n1
    assert int(nonzero.min()) >= n1 + 1 - 2 ** (bits - 2)
    again = quantize_pow2(values, bits)  # the set is a fixed point of the rule
    assert_exact(again.qweight, packed.qweight)
    assert_exact(again.exponent, packed.exponent)


def test_extreme_exponents_and_zero_layer():
    for scale, n1 in ((2.0**-100, -101), (2.0**100, 99)):
        w = torch.full((2, 3), 0.6) * scale  # 4·0.6/3 = 0.8: n1 = log2(scale) - 1
        assert largest_exponent(w) == n1
        assert_exact(dequantize_pow2(*quantize_pow2(w, 5)[:2], 5, 3), torch.full((2, 3), 0.5 * scale))
    zero = quantize_pow2(torch.zeros(3, 9), 4)
    assert int(zero.exponent) == 0 and not bool(zero.qweight.any())
    with pytest.raises(ValueError, match=r"n1: expected n1 in \[-119, 127\] for bits=5"):
        quantize_pow2(torch.full((2, 2), 2.0**-122), 5)


def test_quantizer_errors():
    w = randn((4, 9), seed=0)
    with pytest.raises(ValueError, match=r"bits: expected one of \(3, 4, 5\), got 6"):
        quantize_pow2(w, 6)
    with pytest.raises(ValueError, match="weight: expected finite values"):
        quantize_pow2(torch.tensor([[1.0, float("nan")]]), 5)
    with pytest.raises(ValueError, match="weight: expected finite values"):
        quantize_pow2(torch.tensor([[1.0, float("inf")]]), 5)
    with pytest.raises(ValueError, match=r"bits: expected one of \(3, 4, 5\), got 2"):
        Pow2WeightConfig(bits=2)


# ----------------------------------------------------------------------------- the GEMM


# (bits, M, K, N, dtype, bias, weight scale): split-K GEMV (K = 600), GEMV, tile path (M > 16), K tails
# inside the last word, and layers far from 1 (the decoded 2^(1-e) is relative to n1: 2^n1 in the epilogue)
CASES = [
    (5, 1, 600, 37, torch.float16, True, 0.1),
    (5, 19, 97, 40, torch.float32, False, 2.0**-60),
    (4, 5, 45, 29, torch.bfloat16, False, 0.05),
    (4, 33, 70, 21, torch.float16, True, 1.0),
    (3, 2, 301, 23, torch.float32, True, 2.0**40),
    (3, 18, 40, 50, torch.bfloat16, False, 0.3),
]


@pytest.mark.parametrize(("bits", "m", "k", "n", "dtype", "with_bias", "scale"), CASES)
def test_pow2_weight_mm_matches_reference(device, bits, m, k, n, dtype, with_bias, scale):
    p = quantize_pow2(randn((n, k), seed=k, scale=scale), bits)
    bias = randn((n,), device=device, seed=n) if with_bias else None
    x = activations(m, k, dtype, device, seed=m)
    assert_matches_reference(pow2_weight_mm, x, p.qweight.to(device), p.exponent.to(device), bits, bias=bias)


def test_pow2_weight_mm_nan_rows_and_errors(device):
    p = quantize_pow2(randn((6, 40), seed=1), 5)
    x = randn((3, 40), device=device, seed=2)
    x[1, 7] = float("nan")
    out = pow2_weight_mm(x, p.qweight.to(device), p.exponent.to(device), 5)
    assert bool(out[1].isnan().all()) and bool(out[[0, 2]].isfinite().all())
    x = torch.zeros(2, 40)
    with pytest.raises(ValueError, match=r"bits: expected one of \(3, 4, 5\), got 8"):
        pow2_weight_mm(x, p.qweight, p.exponent, 8)
    with pytest.raises(ValueError, match=r"qweight: expected shape \(5, 6\), got \(10, 6\)"):
        pow2_weight_mm(x, p.qweight, p.exponent, 4)  # 4 bits: 8 codes per word, ceil(40 / 8) = 5 rows
    with pytest.raises(ValueError, match=r"qweight: expected shape \(11, 6\), got \(10, 6\)"):
        pow2_weight_mm(torch.zeros(2, 41), p.qweight, p.exponent, 5)  # x's K = 41 needs 11 rows of 4 codes
    with pytest.raises(TypeError, match="exponent: expected dtype int32, got int64"):
        pow2_weight_mm(x, p.qweight, p.exponent.long(), 5)
    with pytest.raises(ValueError, match=r"exponent: expected shape \(1\), got \(2,\)"):
        pow2_weight_mm(x, p.qweight, p.exponent.repeat(2), 5)


def test_pow2_weight_mm_opcheck(device):
    p = quantize_pow2(randn((11, 50), seed=3), 4)
    args = (randn((3, 50), device=device, seed=1), p.qweight.to(device), p.exponent.to(device), 4, None)
    torch.library.opcheck(pow2_weight_mm, args, test_utils=("test_schema", "test_faketensor"))


# ----------------------------------------------------------------------------- the layer


def test_layer_kernel_state_dict_compile_and_dtype(device):
    layer = Pow2Linear.from_dense(_dense(), bits=5).to(device)
    x = randn((2, 3, 64), dtype=torch.float16, device=device, seed=1)
    assert _assert_kernel_matches_reference(layer, x).shape == (2, 3, 23)
    assert_exact(layer.to_dense().weight.detach(), layer.dequantize())
    fresh = layers.build_layer(layer.describe(), device)
    assert isinstance(fresh, Pow2Linear) and fresh.bits == 5
    fresh.load_state_dict(layer.state_dict())
    x32 = randn((5, 64), device=device, seed=2)
    assert torch.equal(fresh(x32), layer(x32))
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    xb = randn((3, 64), dtype=torch.bfloat16, device=device, seed=3)
    assert_rel_close(compiled(xb), layer(xb), rel_bound(torch.bfloat16, 64, device=device))
    half = layer.to(torch.float16)
    assert half.bias.dtype == torch.float16 and half.exponent.dtype == torch.int32


def test_layer_load_refuses_bad_codes_and_exponents():
    layer = Pow2Linear.from_dense(_dense(k=20, n=3), bits=3)
    state = layer.state_dict()
    bad = dict(state, qweight=state["qweight"].clone().fill_(0x77777777))  # e = 7 > L = 2
    with pytest.raises(ValueError, match=r"qweight: expected 3-bit power-of-two codes .* unused code 7"):
        Pow2Linear(20, 3, bits=3).load_state_dict(bad)
    signed_zero = dict(state, qweight=state["qweight"].clone().fill_(0x08))  # sign bit, e = 0
    with pytest.raises(ValueError, match="unused code 8"):
        Pow2Linear(20, 3, bits=3).load_state_dict(signed_zero)
    with pytest.raises(ValueError, match="exponent"):
        Pow2Linear(20, 3, bits=3).load_state_dict(dict(state, exponent=torch.tensor([200], dtype=torch.int32)))
    with pytest.raises(ValueError, match=r"bits: expected one of \(3, 4, 5\), got 7"):
        Pow2Linear(20, 3, bits=7)


def test_quantize_and_compressed_file_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SmallCompactCNN().eval()
    report = quantize_(model, Pow2WeightConfig(bits=5))
    assert report.converted and any(isinstance(m, Pow2Linear) for m in model.modules())
    saved = container.save_compressed(model, tmp_path / "m.safetensors")
    torch.manual_seed(0)
    loaded = container.load_compressed(saved.path, SmallCompactCNN().eval())
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    for key, value in loaded.state_dict().items():
        assert_exact(value, model.state_dict()[key], name=key)
    x = randn((1, 3, 16, 16), seed=1)
    with reference_only(), torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ----------------------------------------------------------------------------- INQ


def _inq_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 3 * 3, 7), nn.ReLU(), nn.Linear(7, 3)
    )


def test_inq_portions_and_masks_are_exact():
    model = _inq_model()
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    inq = INQ(model, bits=5)
    assert list(inq.layers) == ["0", "3", "5"] and inq.portions == INQ_PORTIONS
    previous = {fqn: torch.zeros_like(layer.frozen) for fqn, layer in inq.layers.items()}
    for portion in INQ_PORTIONS:
        current = {fqn: layer.weight.detach().clone() for fqn, layer in inq.layers.items()}
        inq.freeze(portion)
        for fqn, layer in inq.layers.items():
            numel = layer.weight.numel()
            assert int(layer.frozen.sum()) == frozen_count(portion, numel) == math.floor(portion * numel + 0.5)
            assert bool((layer.frozen | ~previous[fqn]).all())  # the frozen set only grows
            newly = layer.frozen & ~previous[fqn]
            free_before = current[fqn][~previous[fqn]].abs()
            if newly.any() and (~layer.frozen).any():  # the newly frozen are the largest of the free ones
                assert float(current[fqn][newly].abs().min()) >= float(current[fqn][~layer.frozen].abs().max())
            assert free_before.numel() == numel - int(previous[fqn].sum())
            n1 = largest_exponent(pretrained[f"{fqn}.weight"])
            assert layer.n1 == n1
            w2d = current[fqn].reshape(current[fqn].shape[0], -1)
            expected = pow2_round(w2d, n1, 5).reshape(current[fqn].shape)
            assert_exact(layer.weight.detach()[newly], expected[newly])
            previous[fqn] = layer.frozen.clone()
        if portion < 1:  # retrain: Adam with weight decay moves every weight it is allowed to
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.1)
            frozen_values = {fqn: layer.weight.detach()[layer.frozen].clone() for fqn, layer in inq.layers.items()}
            for step in range(3):
                loss = model(randn((4, 2, 5, 5), seed=step)).square().sum()
                optimizer.zero_grad()
                loss.backward()
                for layer in inq.layers.values():
                    assert not bool(layer.weight.grad[layer.frozen].any())  # the mask T_l
                optimizer.step()
                inq.after_step(model)
            for fqn, layer in inq.layers.items():
                assert_exact(layer.weight.detach()[layer.frozen], frozen_values[fqn], name=fqn)
                assert not torch.equal(layer.weight.detach()[~layer.frozen], current[fqn][~layer.frozen])
    frozen = {fqn: layer.weight.detach().clone() for fqn, layer in inq.layers.items()}
    report = inq.convert()
    assert set(report.converted) == {"0", "3", "5"}
    for fqn, values in frozen.items():
        module = model.get_submodule(fqn)
        gemm = getattr(module, "gemm", module)
        assert isinstance(gemm, Pow2Linear) and int(gemm.exponent) == inq.layers[fqn].n1
        assert_exact(gemm.dequantize(), values.reshape(values.shape[0], -1), name=fqn)  # bit-exact, in the set


def test_inq_run_and_errors():
    model = _inq_model()
    calls = []
    report = INQ(model, bits=3, filter_fn=lambda m, fqn: fqn != "5").run(lambda m, inq: calls.append(inq.portion))
    assert calls == [0.5, 0.75, 0.875] and set(report.converted) == {"0", "3"}
    assert type(model[5]) is nn.Linear
    with pytest.raises(ValueError, match="portions: expected increasing fractions in"):
        INQ(_inq_model(), portions=(0.5, 0.4, 1.0))
    with pytest.raises(ValueError, match="portions: expected increasing fractions in"):
        INQ(_inq_model(), portions=(0.5, 0.9))
    with pytest.raises(ValueError, match=r"bits: expected one of \(3, 4, 5\), got 8"):
        INQ(_inq_model(), bits=8)
    inq = INQ(_inq_model())
    inq.freeze(0.5)
    with pytest.raises(ValueError, match="portion: expected a fraction in"):
        inq.freeze(0.5)
    with pytest.raises(ValueError, match="portion: convert"):
        inq.convert()
    with pytest.raises(ValueError, match=r"model: no nn\.Linear"):
        INQ(nn.Sequential(nn.ReLU()))
    bad = _inq_model()
    with torch.no_grad():
        bad[3].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"3\.weight: expected finite values"):
        INQ(bad)

"""XNOR-Net / BNN layers (slimtorch.quant.binary): the STE gradients against the papers' formulas,
the float forward against the XNOR-Net equations in float64, the packed layers against the float
ones, the conversion walk, the file format, compile / dtype / state_dict, errors and NaN."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.core import container
from slimtorch.core.dispatch import use_backend
from slimtorch.core.testing import SmallCompactCNN, assert_exact, assert_rel_close, randn, rel_bound
from slimtorch.quant import binary
from slimtorch.quant.binary import (
    BinarizeConfig,
    BinaryActivationConv2d,
    BinaryActivationLinear,
    XnorConv2d,
    XnorLinear,
    binarize_,
)

# ----------------------------------------------------------------------------- straight-through estimators


def _grad(fn, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    fn(x).backward(g)
    return x.grad


def test_bnn_sign_has_the_hard_tanh_gradient():
    x = torch.tensor([-2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 1.0001, 3.0], dtype=torch.float64)
    g = torch.arange(1.0, 10.0, dtype=torch.float64)
    out = binary.sign_ste(x.clone().requires_grad_(True), "bnn")
    assert out.tolist() == [-1, -1, -1, 1, 1, 1, 1, 1, 1]  # sign(0) = sign(-0) = +1, as the packing
    # BNN (Hubara et al. 2016): g_r = g_q · 1{|r| <= 1}
    assert _grad(lambda t: binary.sign_ste(t, "bnn"), x, g).tolist() == [0, 2, 3, 4, 5, 6, 7, 0, 0]


def _approx_sign_F(x: torch.Tensor) -> torch.Tensor:
    """Bi-Real Net eq. (5): the piecewise polynomial whose derivative replaces sign's."""
    return torch.where(
        x < -1, -1.0, torch.where(x < 0, 2 * x + x * x, torch.where(x < 1, 2 * x - x * x, torch.ones_like(x)))
    )


def test_approx_sign_gradient_is_the_derivative_of_bireal_polynomial():
    x = torch.tensor([-1.5, -1.0, -0.75, -0.25, 0.0, 0.25, 0.75, 1.0, 1.5], dtype=torch.float64)
    grad = _grad(lambda t: binary.sign_ste(t, "approx"), x, torch.ones_like(x))
    assert grad.tolist() == [0.0, 0.0, 0.5, 1.5, 2.0, 1.5, 0.5, 0.0, 0.0]  # 2 + 2x on [-1, 0), 2 - 2x on [0, 1)
    r = randn((301,), dtype=torch.float64, seed=3) * 0.8
    r = r[(r.abs() - 1).abs() > 1e-3]  # away from the kinks at ±1 (and 0 is smooth: F' = 2 both sides)
    h = 1e-6
    numeric = (_approx_sign_F(r + h) - _approx_sign_F(r - h)) / (2 * h)
    g = randn(r.shape, dtype=torch.float64, seed=4)
    assert_rel_close(_grad(lambda t: binary.sign_ste(t, "approx"), r, g), g * numeric, 1e-8)


def test_xnor_weight_forward_and_the_papers_weight_gradient():
    w = randn((5, 3, 2, 2), dtype=torch.float64, seed=5)
    w[0, 0, 0, 0], w[2, 1, 1, 0] = 1.7, -2.5  # some |W| > 1: only the 1/n term passes
    g = randn(w.shape, dtype=torch.float64, seed=6)
    wt = w.clone().requires_grad_(True)
    out = binary.xnor_weight(wt)
    n = 3 * 2 * 2
    for o in range(5):
        alpha = sum(abs(v) for v in w[o].flatten().tolist()) / n  # α = ||W_o||_1 / n
        assert torch.allclose(out[o], alpha * _signs(w[o]), rtol=1e-15, atol=0)
        # XNOR-Net eq. (7): dC/dW = dC/dW~ · (1/n + α · 1{|W| <= 1})
        expected = g[o] * (1.0 / n + alpha * (w[o].abs() <= 1).double())
        out.backward(torch.zeros_like(out).index_put_((torch.tensor([o]),), g[o].unsqueeze(0)), retain_graph=True)
        assert_rel_close(wt.grad[o], expected, 1e-14)
        wt.grad = None


def test_layer_input_gradient_is_the_ste_through_the_binary_matmul():
    """No β: dL/dx = (g · W~) ⊙ 1{|x| <= 1} (BNN), g · W~ ⊙ max(2 - 2|x|, 0) (Bi-Real)."""
    x = randn((7, 13), dtype=torch.float64, seed=7) * 1.2
    g = randn((7, 5), dtype=torch.float64, seed=8)
    for ste, derivative in (("bnn", (x.abs() <= 1).double()), ("approx", (2 - 2 * x.abs()).clamp_min(0))):
        layer = BinaryActivationLinear(13, 5, scale_activations=False, ste=ste, dtype=torch.float64)
        w = layer.weight.detach()
        w_tilde = w.abs().mean(1, keepdim=True) * torch.where(w < 0, -1.0, 1.0)
        assert_rel_close(_grad(layer, x, g), (g @ w_tilde) * derivative, 1e-14)


# ----------------------------------------------------------------------------- the float forward


def _signs(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t < 0, -1.0, 1.0).double()


def test_linear_forward_is_xnor_nets_equation():
    layer = BinaryActivationLinear(45, 9).eval()
    x = randn((6, 45), seed=9)
    w = layer.weight.detach().double()
    alpha = w.abs().mean(1)
    beta = x.double().abs().mean(1, keepdim=True)
    ref = (_signs(x) @ _signs(w).T) * alpha * beta + layer.bias.detach().double()
    assert_rel_close(layer(x), ref, rel_bound(torch.float32, 45))


def test_conv_forward_is_xnor_nets_equation_with_the_k_map():
    layer = BinaryActivationConv2d(6, 4, 3, stride=2, padding=1, bias=True).eval()
    x = randn((2, 6, 7, 8), seed=10)
    w = layer.weight.detach().double()
    dot = F.conv2d(_signs(x), _signs(w), stride=2, padding=1)  # zero padding: padded taps give 0
    k_map = F.avg_pool2d(x.double().abs().mean(1, keepdim=True), 3, 2, 1, count_include_pad=True)
    ref = dot * w.abs().mean((1, 2, 3)).view(1, -1, 1, 1) * k_map + layer.bias.detach().double().view(1, -1, 1, 1)
    assert_rel_close(layer(x), ref, rel_bound(torch.float32, 6 * 9))


# ----------------------------------------------------------------------------- packed == float


@pytest.mark.parametrize("scale", [True, False], ids=["xnor", "bnn"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_packed_linear_equals_the_float_layer(scale, backend):
    torch.manual_seed(11)
    layer = BinaryActivationLinear(71, 13, scale_activations=scale, ste="approx").eval()
    x = randn((2, 3, 71), seed=12)
    packed = layer.freeze()
    assert packed.qweight.shape == (13, 3) and packed.qweight.dtype == torch.int32
    with use_backend(backend), torch.no_grad():
        assert_rel_close(packed(x), layer(x).double(), rel_bound(torch.float32, 71))


@pytest.mark.parametrize(
    ("scale", "stride", "padding", "backend"),
    [
        (True, 1, 1, "reference"),
        (False, 2, 0, "reference"),
        (True, (2, 1), (1, 0), "reference"),
        (True, 2, 1, "triton"),
    ],
)
def test_packed_conv_equals_the_float_layer(scale, stride, padding, backend):
    torch.manual_seed(13)
    layer = BinaryActivationConv2d(35, 5, 3, stride, padding, bias=True, scale_activations=scale).eval()
    small = backend == "triton"  # the interpreter runs the Triton kernel: a small image
    x = randn((1, 35, 5, 4) if small else (2, 35, 9, 7), seed=14)
    packed = layer.freeze()
    assert packed.qweight.shape == (5, 3, 3, 2)
    with use_backend(backend), torch.no_grad():
        out = packed(x)
        assert_rel_close(out, layer(x).double(), rel_bound(torch.float32, 35 * 9))
    assert_rel_close(packed.to_dense().eval()(x), layer(x).double(), rel_bound(torch.float32, 35 * 9))
    assert_rel_close(packed.dequantize(), binary.xnor_weight(layer.weight.detach()), 1e-7)


def test_nan_in_gives_nan_out_in_both_forwards():
    lin = BinaryActivationLinear(33, 4, scale_activations=False).eval()
    x = randn((3, 33), seed=15)
    x[1, 7] = float("inf")
    for out in (lin(x), lin.freeze()(x)):
        assert out[1].isnan().all() and not out[[0, 2]].isnan().any()
    conv = BinaryActivationConv2d(3, 2, 3, padding=1, scale_activations=False).eval()
    x = randn((1, 3, 6, 6), seed=16)
    x[0, 1, 0, 5] = float("nan")
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[0:2, 4:6] = True  # the output positions whose 3x3 window holds pixel (0, 5)
    with use_backend("reference"):
        for out in (conv(x), conv.freeze()(x)):
            assert torch.equal(out[0].isnan().all(0), expected) and torch.equal(out[0].isnan().any(0), expected)


# ----------------------------------------------------------------------------- modules: dtype, state, compile


def test_state_dict_round_trips_and_dtype_casts():
    layer = BinaryActivationConv2d(9, 3, 3, padding=1, bias=True, ste="approx")
    fresh = BinaryActivationConv2d(9, 3, 3, padding=1, bias=True, ste="approx")
    fresh.load_state_dict(layer.state_dict())
    x = randn((1, 9, 5, 5), seed=17)
    assert torch.equal(fresh.eval()(x), layer.eval()(x))
    packed = layer.freeze()
    again = XnorConv2d(9, 3, 3, padding=1, bias=True)
    again.load_state_dict(packed.state_dict())
    with use_backend("reference"):
        assert torch.equal(again(x), packed(x))
        half = copy.deepcopy(packed).to(torch.float16)
        assert half.qweight.dtype == torch.int32 and half.alpha.dtype == torch.float16
        out = half(x.half())
    assert out.dtype == torch.float16
    assert_rel_close(out, packed(x).double(), 4 * rel_bound(torch.float16, 81))
    bf = copy.deepcopy(layer).to(torch.bfloat16)
    assert bf(x.bfloat16()).dtype == torch.bfloat16


def test_torch_compile_of_the_float_layer_matches_eager_with_gradients():
    layer = BinaryActivationLinear(19, 6, ste="approx")
    x = randn((4, 19), seed=18)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    outs = [layer(xs[0]), compiled(xs[1])]
    assert_rel_close(outs[1], outs[0].double(), 1e-6)
    grads = [torch.autograd.grad(o.square().sum(), (xi, layer.weight)) for o, xi in zip(outs, xs, strict=True)]
    for a, b in zip(*grads, strict=True):
        assert_rel_close(b, a.double(), 1e-6)


def test_training_steps_reduce_the_loss():
    torch.manual_seed(19)
    model = nn.Sequential(nn.Linear(8, 32), BinaryActivationLinear(32, 32, ste="approx"), nn.Linear(32, 3))
    x, y = randn((64, 8), seed=20), torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# ----------------------------------------------------------------------------- conversion and file


def test_binarize_keeps_first_last_real_and_freezes_to_the_same_outputs(tmp_path):
    torch.manual_seed(21)
    model = SmallCompactCNN(width=8).eval()
    report = binarize_(model, BinarizeConfig(ste="approx"))
    assert report.conversion.startswith("binarize_(BinarizeConfig(")
    assert set(report.converted) == {"pw1.0", "pw2.0"}
    assert "first/last" in report.skipped["stem.0"] and "first/last" in report.skipped["head"]
    assert "groups=8" in report.skipped["dw1.0"] and "groups=4" in report.skipped["pw3.0"]
    assert isinstance(model.pw1[0], BinaryActivationConv2d)
    x = randn((2, 3, 16, 16), seed=22)
    with torch.no_grad():
        expected = model(x)
    frozen = binarize_(copy.deepcopy(model), BinarizeConfig(freeze=True))
    assert set(frozen.converted) == {"pw1.0", "pw2.0"} and isinstance(frozen.model.pw2[0], XnorConv2d)
    assert frozen.bytes_after < frozen.bytes_before
    again = binarize_(frozen.model, BinarizeConfig(freeze=True))
    assert not again.converted and "already binarized" in again.skipped["pw1.0"]
    with use_backend("reference"), torch.no_grad():
        assert_rel_close(frozen.model(x), expected.double(), 3 * rel_bound(torch.float32, 64))

    saved = container.save_compressed(frozen.model, tmp_path / "xnor.safetensors")
    manifest = container.read_manifest(saved.path)
    assert {v["format"] for v in manifest["layers"].values()} == {"xnor"}
    loaded = container.load_compressed(saved.path, SmallCompactCNN(width=8))
    assert isinstance(loaded.pw1[0], XnorConv2d)
    for key, value in frozen.model.state_dict().items():
        assert_exact(loaded.state_dict()[key], value, name=key)
    with use_backend("reference"), torch.no_grad():
        assert torch.equal(loaded(x), frozen.model(x))


def test_packed_linear_goes_through_the_quant_format(tmp_path):
    torch.manual_seed(23)
    model = nn.Sequential(nn.Linear(5, 40), nn.Linear(40, 37), nn.ReLU(), nn.Linear(37, 3)).eval()
    report = binarize_(model, BinarizeConfig(freeze=True, scale_activations=False))
    assert list(report.converted) == ["1"] and isinstance(model[1], XnorLinear)
    saved = container.save_compressed(model, tmp_path / "m.safetensors")
    assert container.read_manifest(saved.path)["layers"]["1"]["layer"]["class"] == "XnorLinear"
    loaded = container.load_compressed(saved.path, nn.Sequential(nn.Linear(5, 40), nn.Linear(40, 37), nn.ReLU(),
                                                                 nn.Linear(37, 3)))  # fmt: skip
    assert not loaded[1].scale_activations
    x = randn((4, 5), seed=24)
    with use_backend("reference"), torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ----------------------------------------------------------------------------- errors


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"ste: expected one of \('bnn', 'approx'\), got 'tanh'"):
        BinaryActivationLinear(4, 4, ste="tanh")
    with pytest.raises(ValueError, match=r"ste: expected one of"):
        BinarizeConfig(ste="sign")
    with pytest.raises(ValueError, match=r"in_features: expected at most 16777216"):
        BinaryActivationLinear(2**24 + 1, 1)
    with pytest.raises(ValueError, match=r"in_channels"):
        BinaryActivationConv2d(0, 4, 3)
    with pytest.raises(ValueError, match=r"stride: expected an int or a pair of ints >= 1, got \(0, 0\)"):
        BinaryActivationConv2d(3, 4, 3, stride=0)
    with pytest.raises(ValueError, match=r"groups=3: grouped/depthwise"):
        BinaryActivationConv2d.from_dense(nn.Conv2d(3, 3, 3, groups=3))
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 6\) \(in_features\), got \(2, 5\)"):
        BinaryActivationLinear(6, 2)(torch.zeros(2, 5))
    with pytest.raises(TypeError, match=r"x: expected dtype one of \(float16, bfloat16, float32\), got float64"):
        BinaryActivationLinear(6, 2).freeze()(torch.zeros(2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"weight: .*NaN|weight: .*finite"):
        XnorLinear.from_weight(torch.full((2, 3), float("nan")))
    with pytest.raises(TypeError, match=r"config: expected a BinarizeConfig"):
        binarize_(nn.Linear(2, 2), object())


def test_packed_words_that_do_not_fit_k_are_refused():
    layer = BinaryActivationLinear(40, 3).freeze()
    bad_words = binary.XnorPacked(torch.zeros(3, 1, dtype=torch.int32), torch.ones(3))
    with pytest.raises(ValueError, match=r"packed.qweight: expected shape \(3, 2\)"):
        XnorLinear(40, 3).load_packed(bad_words)
    state = layer.state_dict()
    state["qweight"] = state["qweight"].clone()
    state["qweight"][1, 1] |= 1 << 9  # K = 40: bits 8.. of the second word are padding
    with pytest.raises(ValueError, match=r"qweight: expected padding bits 0 past K=40"):
        XnorLinear(40, 3).load_state_dict(state)
    conv = BinaryActivationConv2d(3, 2, 1).freeze().state_dict()
    conv["qweight"] = conv["qweight"].float()
    with pytest.raises(TypeError, match=r"qweight: expected dtype int32, got float32"):
        XnorConv2d(3, 2, 1).load_state_dict(conv)
    with pytest.raises(ValueError, match=r"class: expected 'XnorConv2d'"):
        binary.build_xnor_conv({"class": "Conv2d"})


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_packed_layers_on_the_gpu_kernels_match_the_float_layers(dtype):
    torch.manual_seed(25)
    lin = BinaryActivationLinear(333, 70).cuda().to(dtype).eval()
    conv = BinaryActivationConv2d(67, 19, 3, 1, 1, bias=True).cuda().to(dtype).eval()
    x_lin = randn((5, 333), seed=26, device="cuda", dtype=dtype)
    x_conv = randn((2, 67, 9, 11), seed=27, device="cuda", dtype=dtype)
    with torch.no_grad():
        for layer, x, k in ((lin, x_lin, 333), (conv, x_conv, 67 * 9)):
            packed = layer.freeze()
            assert packed.qweight.is_cuda
            out, ref = packed(x), layer(x)
            assert out.dtype == dtype
            # the float layer's fp16 / tf32 dot products round; the packed popcount is exact
            assert_rel_close(out, ref.double(), 4 * rel_bound(dtype, k, device="cuda"))

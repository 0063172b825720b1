"""layers.py: every structured layer equals ``x @ to_dense().T + b``, trains like its explicit
matrix, round-trips through state_dict and the compressed file, compiles with fullgraph, moves with .to."""

import pytest
import torch
from torch import nn

from slimtorch.core import container
from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.structured import (
    BlockCirculantConv2d,
    BlockCirculantLinear,
    CirculantLinear,
    FastfoodLinear,
    HashedLinear,
)

from .helpers import bound

LAYERS = {
    "circulant-square": (lambda: CirculantLinear(13, 13), False),
    "circulant-wide": (lambda: CirculantLinear(6, 11, path="fft"), False),
    "circulant-narrow-direct": (lambda: CirculantLinear(11, 5, path="direct"), True),
    "block-circulant-fft": (lambda: BlockCirculantLinear(12, 18, 3, path="fft"), False),
    "block-circulant-direct": (lambda: BlockCirculantLinear(15, 10, 5, path="direct"), True),
    "fastfood-adaptive": (lambda: FastfoodLinear(13, 21, adaptive=True, seed=1), False),
    "fastfood-fixed": (lambda: FastfoodLinear(9, 5, bias=False, adaptive=False), False),
    "hashed": (lambda: HashedLinear(13, 9, compression=0.25, seed=4), True),
}


def _make(name: str, device: str) -> tuple[nn.Module, bool]:
    factory, tf32 = LAYERS[name]
    torch.manual_seed(0)
    layer = factory().to(device)
    if getattr(layer, "bias", None) is not None:
        with torch.no_grad():
            layer.bias.normal_()
    return layer, tf32


@pytest.mark.parametrize("name", LAYERS)
def test_forward_equals_the_explicit_matrix_and_trains_like_it(device, name):
    layer, tf32 = _make(name, device)
    x = randn((3, 4, layer.in_features), device=device, seed=1).requires_grad_()
    dense = layer.to_dense()
    assert type(dense) is nn.Linear and dense.weight.shape == (layer.out_features, layer.in_features)
    out = layer(x)
    ref = x.double() @ dense.weight.double().T + (0 if dense.bias is None else dense.bias.double())
    # K: the longest reduction (FFT / Fastfood paths transform twice: 4·K); gradients add the 12 rows of x
    k = 4 * max(layer.in_features, layer.out_features)
    assert_rel_close(out, ref, bound(torch.float32, device, tf32, k=k))
    # gradients: autograd through the explicit (differentiable) matrix in float64
    grad = randn(tuple(out.shape), device=device, seed=2)
    params = [p for p in layer.parameters()]
    got = torch.autograd.grad(out, [x, *params], grad)
    twin, _ = _make(name, device)
    twin.double()
    x64 = x.detach().double().requires_grad_()
    w = twin.dense_weight()
    ref_out = x64 @ w.T + (0 if twin.bias is None else twin.bias)
    want = torch.autograd.grad(ref_out, [x64, *twin.parameters()], grad.double())
    for (pname, _), a, b in zip([("x", None), *layer.named_parameters()], got, want, strict=True):
        assert_rel_close(a, b, bound(torch.float32, device, tf32, k=12 * k), name=f"grad {pname}")


@pytest.mark.parametrize("name", ["circulant-wide", "block-circulant-direct", "fastfood-adaptive", "hashed"])
def test_state_dict_safetensors_to_and_compile(device, name, tmp_path):
    layer, tf32 = _make(name, device)
    layer.eval()
    x = randn((5, layer.in_features), device=device, seed=3)
    want = layer(x)
    twin = LAYERS[name][0]().to(device)
    twin.load_state_dict(layer.state_dict())
    assert_rel_close(twin(x), want, 1e-6, name="state_dict round trip")
    model = nn.Sequential(nn.Linear(layer.in_features, layer.in_features), layer).to(device)
    path = tmp_path / "model.safetensors"
    container.save_compressed(model.cpu(), path, coder="raw")  # the one file format (core.container)
    model.to(device)
    fresh = nn.Sequential(
        nn.Linear(layer.in_features, layer.in_features), nn.Linear(layer.in_features, layer.out_features)
    )
    loaded = container.load_compressed(path, fresh.to(device))
    assert type(loaded[1]) is type(layer)
    for key, value in loaded.state_dict().items():  # bit-exact, and the same computation
        assert torch.equal(value, model.state_dict()[key]), key
    assert torch.equal(loaded(x), model(x))
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    k = 4 * max(layer.in_features, layer.out_features)  # the longest reduction (FFT / Fastfood: twice)
    assert_rel_close(compiled(x), want, bound(torch.float32, device, tf32, k=k), name="compiled")
    half = layer.to(torch.float16)
    assert half(x.half()).dtype == torch.float16
    # x and the weights rounded to fp16 too: twice the bound
    assert_rel_close(half(x.half()), want, bound(torch.float16, device, k=k) * 2, name="fp16")


def test_spectrum_cache_invalidates_when_the_weight_changes(device):
    layer = BlockCirculantLinear(8, 8, 4, path="fft").to(device).eval()
    x = randn((3, 8), device=device, seed=1)
    first = layer(x)
    with torch.no_grad():
        layer.weight.mul_(2.0)
    assert_rel_close(layer(x), 2 * first - layer.bias, 1e-5)
    assert_rel_close(layer(x), x.double() @ layer.to_dense().weight.double().T + layer.bias.double(), 1e-5)


def test_block_circulant_conv_and_from_dense(device):
    conv = nn.Conv2d(16, 24, 1, stride=2).to(device)
    layer = BlockCirculantConv2d.from_dense(conv, 8)
    x = randn((2, 16, 7, 5), device=device, seed=4)
    dense = layer.to_dense()
    assert type(dense) is nn.Conv2d and dense.stride == (2, 2)
    assert_rel_close(
        layer(x), torch.nn.functional.conv2d(x.double(), dense.weight.double(), dense.bias.double(), 2), 1e-3
    )
    assert layer.conversion_source() == "already block-circulant"
    lin = nn.Linear(16, 8).to(device)
    for cls, kwargs in (
        (BlockCirculantLinear, {"block_size": 8}),
        (CirculantLinear, {}),
        (HashedLinear, {"compression": 1.0}),
    ):
        approx = cls.from_dense(lin, **kwargs)
        assert torch.equal(approx.bias, lin.bias)
    exact = HashedLinear.from_dense(lin, compression=1.0)  # as many buckets as weights: still a projection
    assert torch.linalg.norm(exact.to_dense().weight - lin.weight) < torch.linalg.norm(lin.weight)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"in_features \(block_size=8\): expected a multiple of 8, got 12"):
        BlockCirculantLinear(12, 16, 8)
    with pytest.raises(ValueError, match="conv: expected a 1x1 convolution"):
        BlockCirculantConv2d.from_dense(nn.Conv2d(8, 8, 3), 4)
    with pytest.raises(ValueError, match=r"compression: expected a fraction in \(0, 1\], got 2"):
        HashedLinear(4, 4, compression=2)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 9\)"):
        CirculantLinear(9, 9)(torch.randn(2, 8))
    with pytest.raises(TypeError, match=r"linear: expected an nn\.Linear"):
        CirculantLinear.from_dense(nn.Conv2d(2, 2, 1))

"""block_circulant.py: both Triton kernels (FFT-domain and direct) against the explicit matrix in
float64, the references, gradients against autograd through the explicit matrix, the projection,
the path choice and bad arguments."""

import pytest
import torch

from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.structured import block_circulant as bc
from slimtorch.structured.layers import CirculantLinear, project_block_circulant, project_circulant

from .helpers import DTYPES, bound

# p, q, b, M: odd b, M = 1, q = 1; b ≤ 128 takes the DFT-GEMM path, b = 130 cuFFT's. M ≤ 16 runs the direct
# x-expansion GEMV: K = 320 and 260 are split (interpreter: 4 SMs), at multiples of b (b = 8) and not (b = 130)
SHAPES = [(3, 5, 6, 7), (1, 2, 17, 3), (2, 3, 8, 33), (4, 1, 5, 1), (2, 2, 130, 3), (3, 40, 8, 5)]


def explicit(weight: torch.Tensor) -> torch.Tensor:
    """W[i·b + r, j·b + s] = weight[i, j, (r − s) mod b], by loops (independent of the code under test)."""
    p, q, b = weight.shape
    w = torch.empty(p * b, q * b, dtype=weight.dtype)
    for i in range(p):
        for j in range(q):
            for r in range(b):
                for s in range(b):
                    w[i * b + r, j * b + s] = weight[i, j, (r - s) % b]
    return w


def test_matrix_and_circulant_layer_match_the_explicit_loop():
    weight = randn((2, 3, 5), seed=1, dtype=torch.float64)
    assert torch.equal(bc.block_circulant_matrix(weight), explicit(weight))
    for n_in, n_out in ((9, 9), (5, 9), (9, 4)):
        layer = CirculantLinear(n_in, n_out, bias=False).double()
        c = layer.weight.detach()
        d = max(n_in, n_out)
        loop = torch.tensor([[float(c[(r - s) % d]) for s in range(d)] for r in range(d)], dtype=torch.float64)
        assert torch.equal(layer.to_dense().weight.detach(), loop[:n_out, :n_in])


@pytest.mark.parametrize("p, q, b, m", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernels_match_the_explicit_matrix(device, p, q, b, m, dtype):
    weight = randn((p, q, b), dtype=dtype, device=device, seed=p * 100 + b)
    x = randn((m, q * b), dtype=dtype, device=device, seed=m)
    bias = randn((p * b,), dtype=dtype, device=device, seed=3)
    ref = x.double() @ explicit(weight.double().cpu()).to(device).T + bias.double()
    direct = bc.block_circulant_direct_mm.launcher(x, weight, bias)
    fft = bc.block_circulant_fft_mm.launcher(x, bc.weight_spectrum(weight), b, bias)
    assert direct.dtype == fft.dtype == dtype
    assert_rel_close(direct, ref, bound(dtype, device, tf32=True, k=q * b), name="direct")
    assert_rel_close(fft, ref, bound(dtype, device, tf32=dtype != torch.float32, k=4 * q * b), name="fft")


@pytest.mark.parametrize("b", [6, 7])
def test_dft_matrices_are_rfft_and_irfft(b):
    forward, inverse = bc.dft_matrices(b, torch.float64, torch.device("cpu"))
    x = randn((3, b), dtype=torch.float64, seed=b)
    xf = torch.fft.rfft(x)
    assert_rel_close(x @ forward, torch.cat((xf.real, xf.imag), dim=1), 1e-13)
    y = torch.complex(
        randn((3, b // 2 + 1), dtype=torch.float64, seed=1), randn((3, b // 2 + 1), dtype=torch.float64, seed=2)
    )
    assert_rel_close(torch.cat((y.real, y.imag), dim=1) @ inverse, torch.fft.irfft(y, n=b), 1e-13)


@pytest.mark.parametrize("p, q, b, m", SHAPES[:2])
def test_references_are_exact_in_float64(p, q, b, m):
    weight = randn((p, q, b), dtype=torch.float64, seed=5)
    x = randn((m, q * b), dtype=torch.float64, seed=6)
    ref = x @ explicit(weight).T
    spectrum = bc.weight_spectrum(weight)  # fp32 spectrum: exact to fp32 rounding
    assert_rel_close(bc.block_circulant_direct_mm_reference(x, weight), ref, 1e-12)
    assert_rel_close(bc.block_circulant_fft_mm_reference(x, spectrum, b), ref, 1e-6)


def test_nan_in_gives_nan_out(device):
    weight = randn((2, 2, 4), device=device, seed=1)
    x = randn((3, 8), device=device, seed=2)
    x[1, 3] = float("nan")
    for out in (
        bc.block_circulant_direct_mm.launcher(x, weight, None),
        bc.block_circulant_fft_mm.launcher(x, bc.weight_spectrum(weight), 4, None),
    ):
        assert out[1].isnan().any() and not out[[0, 2]].isnan().any()


@pytest.mark.parametrize("path", ["fft", "direct"])
def test_gradients_match_autograd_through_the_explicit_matrix(device, path):
    p, q, b, m = 2, 3, 5, 7
    weight = randn((p, q, b), device=device, seed=11).requires_grad_()
    bias = randn((p * b,), device=device, seed=12).requires_grad_()
    x = randn((m, q * b), device=device, seed=13).requires_grad_()
    grad = randn((m, p * b), device=device, seed=14)
    out = bc.block_circulant_mm(x, weight, bias, path)
    got = torch.autograd.grad(out, (x, weight, bias), grad)
    w64, b64, x64 = (t.detach().double().requires_grad_() for t in (weight, bias, x))
    ref_out = x64 @ bc.block_circulant_matrix(w64).T + b64
    want = torch.autograd.grad(ref_out, (x64, w64, b64), grad.double())
    fft = 4 if path == "fft" else 1  # the FFT path reduces twice (forward and inverse DFT)
    assert_rel_close(out, ref_out, bound(torch.float32, device, tf32=path == "direct", k=fft * q * b))
    for name, g, w in zip(("x", "weight", "bias"), got, want, strict=True):  # dW sums over M·b terms
        assert_rel_close(g, w, bound(torch.float32, device, tf32=path == "direct", k=fft * m * b), name=f"grad {name}")


def test_projection_is_least_squares():
    w = randn((12, 18), dtype=torch.float64, seed=21)
    c = project_block_circulant(w, 3)
    residual = w - bc.block_circulant_matrix(c)
    for seed in range(3):  # the residual is orthogonal to every block-circulant matrix
        other = bc.block_circulant_matrix(randn((4, 6, 3), dtype=torch.float64, seed=seed))
        assert abs(float((residual * other).sum())) < 1e-10
    assert torch.allclose(project_block_circulant(bc.block_circulant_matrix(c), 3), c)  # a projection
    v = project_circulant(w[:7, :5])
    rect = bc.block_circulant_matrix(v.reshape(1, 1, 7))[:7, :5]
    other = bc.block_circulant_matrix(randn((1, 1, 7), dtype=torch.float64, seed=4))[:7, :5]
    assert abs(float(((w[:7, :5] - rect) * other).sum())) < 1e-10


def test_path_choice_static_model():
    # large circulant blocks at large batch: the FFT path; tiny blocks (b = 4, no FFT savings): direct
    assert bc.choose_path(1024, 1, 1, 8192, torch.float16, torch.device("cpu")) == "fft"
    assert bc.choose_path(4096, 64, 64, 4, torch.float16, torch.device("cpu")) == "direct"
    fft = bc.estimate_seconds("fft", 1024, 64, 64, 64, torch.float16)
    assert fft < bc.estimate_seconds("fft", 2048, 64, 64, 64, torch.float16)


@pytest.mark.gpu
def test_measured_path_choice_on_a_gpu():
    """On a GPU "auto" times both kernels once per shape bucket and keeps the faster; both are right."""
    device = torch.device("cuda")
    path = bc.choose_path(1000, 16, 16, 64, torch.float16, device)
    assert path in ("fft", "direct") and bc.choose_path(1024, 16, 16, 64, torch.float16, device) == path  # cached
    weight = randn((16, 16, 64), dtype=torch.float16, device="cuda", seed=1)
    x = randn((1000, 1024), dtype=torch.float16, device="cuda", seed=2)
    ref = x.double() @ bc.block_circulant_matrix(weight.double()).T
    assert_rel_close(bc.block_circulant_mm(x, weight), ref, bound(torch.float16, "cuda", True, k=4 * 1024))


def test_bad_arguments_raise_clear_errors():
    weight = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"x: expected shape \(M, 12\)"):
        bc.block_circulant_direct_mm(torch.randn(3, 10), weight)
    with pytest.raises(ValueError, match="spectrum: expected shape"):
        bc.block_circulant_fft_mm(torch.randn(3, 12), torch.zeros(2, 2, 2, 3), 4)
    with pytest.raises(TypeError, match="x: expected dtype"):
        bc.block_circulant_direct_mm(torch.randn(3, 12, dtype=torch.float64), weight)
    with pytest.raises(ValueError, match="path: expected one of"):
        bc.block_circulant_mm(torch.randn(3, 12), weight, path="dense")
    with pytest.raises(ValueError, match=r"in_features \(columns of the weight\): expected a multiple of 4, got 10"):
        project_block_circulant(torch.randn(12, 10), 4)

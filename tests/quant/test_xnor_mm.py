"""XNOR / BNN kernels (slimtorch.quant.xnor_mm): sign packing exact, the XOR/popcount GEMM and the
implicit-GEMM binary conv exactly equal to the float ±1 matmul / F.conv2d (integers), the scale
epilogue to the output dtype's rounding, NaN propagation and argument errors. Outputs are poisoned
(SLIMTORCH_POISON_OUTPUTS=1, tests/conftest.py): an element a kernel skips is NaN and fails."""

import importlib

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from slimtorch.core.dispatch import poison_outputs
from slimtorch.core.packing import unpack_bits
from slimtorch.core.testing import assert_rel_close, randn, rel_bound

X = importlib.import_module("slimtorch.quant.xnor_mm")  # the module (the package exports the op by that name)


def _signs(x: torch.Tensor) -> torch.Tensor:
    """sign with sign(0) = +1, in float64."""
    return torch.where(x.double() < 0, -1.0, 1.0)


@pytest.mark.parametrize("k", [1, 31, 32, 33, 95])
def test_pack_signs_round_trip_exact(device, k):
    x = randn((3, k), device=device, seed=k)
    x[0, 0] = 0.0
    x[-1, -1] = -0.0  # both +1 (bit 0)
    words = X.pack_signs(x)
    assert words.dtype == torch.int32 and words.shape == (3, X.words_for(k))
    assert torch.equal(words.cpu(), X.pack_signs_reference(x).cpu())
    assert torch.equal(X.unpack_signs(words, k, torch.float64), _signs(x))
    bits = unpack_bits(words.cpu(), 1, 32 * words.shape[1])
    assert not bits[:, k:].any()  # padding bits are 0
    assert torch.equal(bits[:, :k].bool(), (x < 0).cpu())


def test_pack_signs_nan_and_leading_dims(device):
    x = randn((2, 3, 40), dtype=torch.float16, device=device, seed=1)
    x[1, 2, 5] = float("nan")  # documented: NaN packs as +1 (bit 0), deterministically
    words = X.pack_signs(x)
    assert words.shape == (2, 3, 2)
    assert torch.equal(words.cpu(), X.pack_signs_reference(x).cpu())
    assert (words[1, 2, 0].item() >> 5) & 1 == 0
    strided = randn((40, 5), device=device, seed=2).t()  # non-contiguous rows
    assert torch.equal(X.pack_signs(strided).cpu(), X.pack_signs_reference(strided.contiguous()).cpu())


@triton.jit
def _popc_probe_kernel(x_ptr, out_ptr, n, ASM: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0)
    tl.store(out_ptr + offs, X._popc(x, ASM), mask=offs < n)


def test_popcount_exact(device):
    """The popcount the kernels use (PTX popc on a GPU, its pure-Triton twin in the interpreter)."""
    edges = [0, -1, -(2**31), 2**31 - 1, 0x55555555, 0x33333333, 1, 2**30]
    words = torch.cat([torch.tensor(edges, dtype=torch.int32), torch.randint(-(2**31), 2**31 - 1, (57,))]).int()
    expected = torch.tensor([bin(w & 0xFFFFFFFF).count("1") for w in words.tolist()], dtype=torch.int32)
    out = torch.full_like(words, -7).to(device)
    _popc_probe_kernel[(1,)](words.to(device), out, words.numel(), ASM=device == "cuda", BLOCK=128)
    assert torch.equal(out.cpu(), expected)


# (M, N, K): GEMV (M <= 16) and tile paths, K tails inside the last word, one-word K, N and M tails.
MM_SHAPES = [(1, 5, 33), (7, 9, 95), (16, 3, 1), (19, 6, 64), (37, 35, 70)]


@pytest.mark.parametrize(("m", "n", "k"), MM_SHAPES)
def test_xnor_mm_equals_float_pm1_matmul(device, m, n, k):
    assert poison_outputs()
    a = randn((m, k), device=device, seed=m)
    w = randn((n, k), device=device, seed=n + k)
    alpha = torch.ones(n, device=device)
    out = X.xnor_mm(X.pack_signs(a), X.pack_signs(w), k, alpha)
    assert out.dtype == torch.float32 and out.shape == (m, n)
    assert torch.equal(out.double().cpu(), (_signs(a) @ _signs(w).T).cpu())  # exact integers


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("m", "n", "k"), [(3, 11, 75), (21, 13, 47)])
def test_xnor_mm_scale_epilogue(device, dtype, m, n, k):
    a_bits = X.pack_signs(randn((m, k), device=device, seed=1))
    w_bits = X.pack_signs(randn((n, k), device=device, seed=2))
    alpha = randn((n,), device=device, seed=3).abs().to(dtype)
    beta = randn((m,), device=device, seed=4).abs().to(dtype)
    bias = randn((n,), device=device, seed=5).to(dtype)
    out = X.xnor_mm(a_bits, w_bits, k, alpha, beta, bias)
    assert out.dtype == dtype
    ref = X.xnor_mm_reference(a_bits, w_bits, k, alpha.double(), beta.double(), bias.double())
    # the ±1 dot is exact; what is left is the fp32 epilogue (3 roundings) and the one output cast
    assert_rel_close(out.double(), ref, rel_bound(dtype, 16))


def test_xnor_mm_nan_in_scales_gives_nan_out(device):
    m, n, k = 4, 6, 40
    a_bits = X.pack_signs(randn((m, k), device=device, seed=1))
    w_bits = X.pack_signs(randn((n, k), device=device, seed=2))
    alpha = torch.ones(n, device=device)
    beta = torch.ones(m, device=device)
    alpha[2], beta[1] = float("nan"), float("nan")
    out = X.xnor_mm(a_bits, w_bits, k, alpha, beta).cpu()
    nan = torch.zeros(m, n, dtype=torch.bool)
    nan[:, 2], nan[1, :] = True, True
    assert torch.equal(out.isnan(), nan)


def _pm1_conv(a_nhwc, weight, stride, padding):
    return F.conv2d(_signs(a_nhwc).permute(0, 3, 1, 2), _signs(weight), stride=stride, padding=padding)


# (B, C, H, W, O, kh, kw, stride, padding): C tails, non-square kernels, stride and padding both ways
CONV_CASES = [
    (2, 37, 5, 6, 3, 3, 3, [1, 1], [1, 1]),
    (1, 33, 7, 5, 4, 3, 2, [2, 1], [1, 0]),
    (1, 64, 4, 4, 2, 1, 1, [1, 1], [0, 0]),
]


@pytest.mark.parametrize(("b", "c", "h", "w", "o", "kh", "kw", "stride", "padding"), CONV_CASES)
def test_xnor_conv2d_equals_pm1_conv(device, b, c, h, w, o, kh, kw, stride, padding):
    a = randn((b, h, w, c), device=device, seed=c)
    weight = randn((o, c, kh, kw), device=device, seed=o)
    a_bits, w_bits = X.pack_signs(a), X.pack_weight_signs(weight)
    assert w_bits.shape == (o, kh, kw, X.words_for(c))
    out = X.xnor_conv2d(a_bits, w_bits, c, stride, padding, torch.ones(o, device=device))
    ref = _pm1_conv(a, weight, stride, padding)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out.double().cpu(), ref.cpu())  # zero-padding taps contribute 0, exactly


def test_xnor_conv2d_scales_bias_and_nan(device):
    b, c, h, w, o = 2, 35, 5, 4, 3
    a_bits = X.pack_signs(randn((b, h, w, c), device=device, seed=1))
    w_bits = X.pack_weight_signs(randn((o, c, 3, 3), device=device, seed=2))
    alpha = randn((o,), device=device, seed=3).abs().half()
    beta = randn((b, h, w), device=device, seed=4).abs().half()  # XNOR-Net's K map (stride 1, padding 1)
    bias = randn((o,), device=device, seed=5).half()
    out = X.xnor_conv2d(a_bits, w_bits, c, [1, 1], [1, 1], alpha, beta, bias)
    ref = X.xnor_conv2d_reference(a_bits, w_bits, c, [1, 1], [1, 1], alpha.double(), beta.double(), bias.double())
    assert out.dtype == torch.float16
    assert_rel_close(out.double(), ref, rel_bound(torch.float16, 16))
    beta[1, 2, 3] = float("nan")
    out = X.xnor_conv2d(a_bits, w_bits, c, [1, 1], [1, 1], alpha, beta, bias).cpu()
    assert out[1, :, 2, 3].isnan().all() and out.isnan().sum() == o


def test_errors_name_the_argument():
    a_bits = X.pack_signs(randn((3, 40), seed=1))
    w_bits = X.pack_signs(randn((5, 40), seed=2))
    alpha = torch.ones(5)
    X.xnor_mm(a_bits, w_bits, 40, alpha)  # valid
    with pytest.raises(ValueError, match=r"a_bits: expected ceil\(k / 32\) = 3 packed words for k = 70, got 2"):
        X.xnor_mm(a_bits, w_bits, 70, alpha)
    with pytest.raises(ValueError, match="w_bits: expected ceil"):
        X.xnor_mm(a_bits, X.pack_signs(randn((5, 70), seed=2)), 40, alpha)
    with pytest.raises(ValueError, match="k: expected 1 <= k"):
        X.xnor_mm(a_bits, w_bits, 0, alpha)
    with pytest.raises(TypeError, match="a_bits: expected dtype int32"):
        X.xnor_mm(a_bits.float(), w_bits, 40, alpha)
    with pytest.raises(ValueError, match="alpha: expected shape"):
        X.xnor_mm(a_bits, w_bits, 40, torch.ones(4))
    with pytest.raises(TypeError, match="alpha: expected dtype"):
        X.xnor_mm(a_bits, w_bits, 40, torch.ones(5, dtype=torch.int32))
    with pytest.raises(ValueError, match="beta: expected shape"):
        X.xnor_mm(a_bits, w_bits, 40, alpha, torch.ones(5))
    with pytest.raises(ValueError, match="a_bits: expected a contiguous"):
        X.xnor_mm(torch.zeros(2, 6, dtype=torch.int32)[:, ::2], w_bits, 40, alpha)
    with pytest.raises(TypeError, match="x: expected dtype"):
        X.pack_signs(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="K >= 1"):
        X.pack_signs(torch.ones(3, 0))
    with pytest.raises(ValueError, match="words: expected ceil"):
        X.unpack_signs(a_bits, 100)
    conv_a = X.pack_signs(randn((1, 4, 4, 40), seed=3))
    conv_w = X.pack_weight_signs(randn((2, 40, 3, 3), seed=4))
    with pytest.raises(ValueError, match="a_bits: expected ceil\\(channels / 32\\)"):
        X.xnor_conv2d(conv_a, conv_w, 70, [1, 1], [1, 1], torch.ones(2))
    with pytest.raises(TypeError, match="stride: expected a list of 2 ints"):
        X.xnor_conv2d(conv_a, conv_w, 40, [1], [1, 1], torch.ones(2))
    with pytest.raises(ValueError, match="padding: expected values >= 0"):
        X.xnor_conv2d(conv_a, conv_w, 40, [1, 1], [-1, 1], torch.ones(2))
    with pytest.raises(ValueError, match="w_bits: expected a 3x3 kernel that fits"):
        X.xnor_conv2d(X.pack_signs(randn((1, 2, 2, 40), seed=5)), conv_w, 40, [1, 1], [0, 0], torch.ones(2))
    with pytest.raises(ValueError, match="beta: expected shape"):
        X.xnor_conv2d(conv_a, conv_w, 40, [1, 1], [1, 1], torch.ones(2), torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="w_bits: expected kh \\* kw <= 31 taps"):
        X.xnor_conv2d(conv_a, torch.zeros(2, 7, 7, 2, dtype=torch.int32), 40, [1, 1], [3, 3], torch.ones(2))


def _every_config():
    from slimtorch.core.tuning import all_configs

    kernels = {"gemv": X._xnor_gemv, "gemm": X._xnor_gemm, "conv": X._xnor_conv}
    return [(name, i) for name, kernel in kernels.items() for i in range(len(all_configs(kernel)))]


@pytest.mark.parametrize(("path", "index"), _every_config())
def test_every_autotune_config_exact(device, path, index):
    """The interpreter keeps only each list's first config (core.tuning): run every other one too."""
    from slimtorch.core.tuning import all_configs, use_config

    kernel = {"gemv": X._xnor_gemv, "gemm": X._xnor_gemm, "conv": X._xnor_conv}[path]
    with use_config(kernel, all_configs(kernel)[index]):
        if path == "conv":
            a, weight = randn((1, 4, 5, 33), device=device, seed=1), randn((3, 33, 3, 3), device=device, seed=2)
            out = X.xnor_conv2d(X.pack_signs(a), X.pack_weight_signs(weight), 33, [1, 1], [1, 1], torch.ones(3))
            ref = _pm1_conv(a, weight, [1, 1], [1, 1])
        else:
            m = 3 if path == "gemv" else X.GEMV_MAX_M + 4
            a, w = randn((m, 70), device=device, seed=3), randn((9, 70), device=device, seed=4)
            out = X.xnor_mm(X.pack_signs(a), X.pack_signs(w), 70, torch.ones(9, device=device))
            ref = _signs(a) @ _signs(w).T
    assert torch.equal(out.double().cpu(), ref.cpu())

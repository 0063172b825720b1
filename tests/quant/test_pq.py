"""Product quantization (Q-CNN): the LUT GEMM in the interpreter against the dense reference, the
code packing, k-means, the layer (state_dict, compressed file, torch.compile, .to), codebook
fine-tuning and the errors."""

import importlib
import itertools

import pytest
import torch
from torch import nn

from slimtorch.core import container, reference_only
from slimtorch.core.testing import (
    SmallCompactCNN,
    assert_exact,
    assert_rel_close,
    assert_rows_match,
    randn,
    rel_bound,
)
from slimtorch.core.tuning import all_configs, use_config
from slimtorch.quant import api, formats, layers
from slimtorch.quant.pq_mm import pq_code_bits, pq_decode, pq_unpack_codes
from slimtorch.quant.pq_mm import pq_mm as pq_mm_op
from slimtorch.quant.product import (
    ProductQuantConfig,
    ProductQuantizedLinear,
    dequantize_product,
    kmeans,
    product_layers,
    quantize_product,
)

from .helpers import activations, assert_matches_reference

# the module (the package exports the op under the same name)
pq_mm = importlib.import_module("slimtorch.quant.pq_mm")


def _random_format(n, k, d, c, r, seed, dtype=torch.float32):
    """Random codes (N, S) and codebooks (B, S, C, d): every code value and block layout reachable."""
    s, blocks = -(-k // d), -(-n // r)
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, c, (n, s), generator=gen)
    codebooks = randn((blocks, s, c, d), seed=seed + 1).to(dtype)
    return codes, formats.pack_codes(codes, pq_code_bits(c)), codebooks


# (M, K, N, d, C, R, dtype, bias): M = 1 and M > 16 (both config lists), K padded (45 / 4, 30 / 7),
# several row blocks with a short last one, 1/2/4/8-bit codes, fp16/bf16 activations and codebooks.
CASES = [
    (1, 45, 37, 4, 16, 37, torch.float32, True),
    (3, 30, 20, 7, 5, 7, torch.bfloat16, False),
    (2, 40, 21, 8, 256, 21, torch.float16, True),
    (21, 33, 9, 2, 2, 4, torch.float32, False),
    (2, 70, 40, 5, 3, 16, torch.float32, True),
]


@pytest.mark.parametrize(("m", "k", "n", "d", "c", "r", "dtype", "with_bias"), CASES)
def test_pq_mm_matches_dense_reference(device, m, k, n, d, c, r, dtype, with_bias):
    _, packed, codebooks = _random_format(n, k, d, c, r, seed=m + k, dtype=torch.float16 if c == 256 else torch.float32)
    bias = randn((n,), device=device, seed=n) if with_bias else None
    x = activations(m, k, dtype, device, seed=m)
    assert_matches_reference(pq_mm_op, x, packed.to(device), codebooks.to(device), r, bias=bias)


KERNELS = [(pq_mm._small_m_kernel, 5), (pq_mm._large_m_kernel, pq_mm.SMALL_M_MAX + 3)]


@pytest.mark.parametrize(("kernel", "m"), KERNELS, ids=["small", "large"])
def test_every_config_matches_reference(kernel, m):
    _, packed, codebooks = _random_format(29, 40, 4, 16, 29, seed=m)
    x = randn((m, 40), seed=m)
    ref = pq_mm_op.get_reference()(x.double(), packed, codebooks, 29)
    for config in all_configs(kernel):
        with use_config(kernel, config):
            out = pq_mm_op(x, packed, codebooks, 29)
        assert_rel_close(out, ref, rel_bound(torch.float32, 40), name=f"config {config}")


def test_pq_mm_nan_rows_give_nan_rows(device):
    _, packed, codebooks = _random_format(13, 22, 3, 4, 13, seed=3)
    x = randn((4, 22), seed=4)
    x[1, 5], x[3, 21] = float("nan"), float("inf")  # 21: in the last (padded) sub-vector
    out = pq_mm_op(x.to(device), packed.to(device), codebooks.to(device), 13)
    ref = pq_mm_op.get_reference()(x.double(), packed, codebooks, 13)
    assert assert_rows_match(out.cpu(), ref, x, rel_bound(torch.float32, 22)) == 2


def test_pq_mm_opcheck(device):
    _, packed, codebooks = _random_format(9, 12, 4, 4, 9, seed=5)
    args = (randn((2, 12), device=device, seed=6), packed.to(device), codebooks.to(device), 9, None)
    torch.library.opcheck(pq_mm_op, args, test_utils=("test_schema", "test_faketensor"))


# ----------------------------------------------------------------------------- format


@pytest.mark.parametrize("c", [2, 3, 16, 17, 256])
def test_code_packing_round_trips_exactly(c):
    codes, packed, _ = _random_format(11, 37, 2, c, 11, seed=c)  # S = 19: a partial last word
    assert packed.dtype == torch.int32 and packed.shape == (-(-19 // (32 // pq_code_bits(c))), 11)
    assert_exact(pq_unpack_codes(packed, c, 19), codes)


def test_quantize_pads_k_with_zero_weights_and_decodes_exactly():
    w = randn((10, 45), seed=7)
    q = quantize_product(w, sub_dim=4, centroids=10, rows_per_block=4)  # 10 distinct sub-vectors per group at most
    assert q.codebooks.shape == (3, 12, 10, 4) and q.rows_per_block == 4
    assert_exact(q.codebooks[:, -1, :, 1:], torch.zeros(3, 10, 3))  # columns 45..47: the zero padding
    # C >= the points of each group: every sub-vector is its own centroid, the weight exact
    assert_rel_close(dequantize_product(q, 45), w, 1e-6)


def test_kmeans_is_seeded_and_deterministic():
    w = randn((37, 30), seed=8)
    a, b = quantize_product(w, 3, 8, seed=1), quantize_product(w, 3, 8, seed=1)
    assert_exact(a.codes, b.codes)
    assert_exact(a.codebooks, b.codebooks)
    assert not torch.equal(a.codebooks, quantize_product(w, 3, 8, seed=2).codebooks)


def test_kmeans_error_decreases_with_centroids():
    w = randn((41, 30), seed=9)
    errors = [float((dequantize_product(quantize_product(w, 3, c), 30) - w).norm()) for c in (1, 2, 4, 8, 16, 41)]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-6 * float(w.norm())  # a centroid per row: exact


def test_kmeans_converges_to_well_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(60) % 3
    points = centers[labels] + 0.1 * torch.randn(60, 2, generator=gen)
    found, codes = kmeans(points[None], 3, seed=3)
    means = torch.stack([points.double()[codes[0] == c].mean(0) for c in range(3)])
    assert_rel_close(found[0], means, 1e-12)  # a Lloyd fixed point
    assert len({(int(labels[i]), int(codes[0, i])) for i in range(60)}) == 3  # the true partition


# ----------------------------------------------------------------------------- layer


def _dense(k=30, n=23, bias=True, seed=0):
    linear = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(randn((n, k), seed=seed, scale=0.2))
        if bias:
            linear.bias.copy_(randn((n,), seed=seed + 1))
    return linear


OPTIONS = {"sub_dim": 4, "centroids": 6, "rows_per_block": 10}


def test_layer_kernel_state_dict_and_describe(device):
    layer = ProductQuantizedLinear.from_dense(_dense(), **OPTIONS).to(device)
    x = randn((2, 3, 30), dtype=torch.float16, device=device, seed=1)
    out = layer(x)
    with reference_only():
        ref = layer(x)
    assert out.shape == (2, 3, 23)
    assert_rel_close(out, ref, rel_bound(torch.float16, 30, device=device))
    assert_exact(layer.to_dense().weight.detach(), layer.dequantize())
    assert layer.weight_bytes() == 4 * 23 + 3 * 8 * 6 * 4 * 4  # codes: S = 8 codes of 4 bits, one word per row
    fresh = layers.build_layer(layer.describe(), device)
    assert isinstance(fresh, ProductQuantizedLinear) and fresh.describe() == layer.describe()
    fresh.load_state_dict(layer.state_dict())
    assert torch.equal(fresh(x), out)


def test_layer_to_dtype_meta_and_compile(device):
    layer = ProductQuantizedLinear.from_dense(_dense(), **OPTIONS, codebook_dtype=torch.float16).to(device)
    assert layer.codebooks.dtype == torch.float16 and layer.describe()["codebook_dtype"] == "float16"
    codes = layer.codes.clone()
    half = layer.to(torch.bfloat16)
    assert half.codebooks.dtype == torch.bfloat16 and torch.equal(half.codes, codes)
    assert half.to("meta")(torch.empty(7, 30, dtype=torch.bfloat16, device="meta")).shape == (7, 23)
    layer = ProductQuantizedLinear.from_dense(_dense(), **OPTIONS).to(device)
    x = randn((3, 30), device=device, seed=3)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    assert_rel_close(compiled(x), layer(x), rel_bound(torch.float32, 30, device=device))


def test_fine_tuning_moves_only_the_centroids(device):
    layer = ProductQuantizedLinear.from_dense(_dense(), **OPTIONS).to(device).trainable()
    assert [name for name, p in layer.named_parameters() if p.requires_grad] == ["codebooks"]
    x = randn((9, 30), device=device, seed=4).requires_grad_()
    g = randn((9, 23), device=device, seed=5)
    (layer(x) * g).sum().backward()
    # the same gradients by autograd through the dense reference's gather
    cb = layer.codebooks.detach().clone().requires_grad_()
    xr = x.detach().clone().requires_grad_()
    weight = pq_decode(layer.codes, cb, layer.rows_per_block, 30)
    ((xr @ weight.t() + layer.bias) * g).sum().backward()
    assert_rel_close(layer.codebooks.grad, cb.grad, rel_bound(torch.float32, 9 * 23))
    assert_rel_close(x.grad, xr.grad, rel_bound(torch.float32, 23))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=0.1).step()
    after = layer.state_dict()
    assert torch.equal(after["codes"], before["codes"]) and torch.equal(after["bias"], before["bias"])
    assert not torch.equal(after["codebooks"], before["codebooks"])
    assert not layer.trainable(False).codebooks.requires_grad


def test_quantize_config_and_compressed_file_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SmallCompactCNN().eval()
    report = api.quantize_(model, ProductQuantConfig(sub_dim=4, centroids=4, codebook_dtype=torch.float16))
    found = list(product_layers(model))
    assert len(found) == len(report.converted) >= 3  # the 1x1 convs (GemmConv2d) and the head
    assert report.bytes_after < report.bytes_before
    saved = container.save_compressed(model, tmp_path / "m.safetensors", coder="raw")
    torch.manual_seed(0)
    loaded = container.load_compressed(saved.path, SmallCompactCNN().eval())
    for key, value in loaded.state_dict().items():
        assert_exact(value, model.state_dict()[key], name=key)
    x = randn((1, 3, 16, 16), seed=1)
    with reference_only(), torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_config_leaves_layers_that_would_grow():
    model = nn.Sequential(nn.Linear(8, 3), nn.Linear(3, 40))
    report = api.quantize_(model, ProductQuantConfig(sub_dim=4, centroids=16))
    assert "would not be smaller" in report.skipped["0"] and "shorter than sub_dim" in report.skipped["1"]


# ----------------------------------------------------------------------------- errors


def test_bad_options_raise():
    w = randn((6, 12), seed=0)
    with pytest.raises(ValueError, match=r"centroids: expected at most 256 \(codes fit one byte\), got 257"):
        quantize_product(w, 4, 257)
    with pytest.raises(ValueError, match=r"sub_dim: expected 1 <= sub_dim <= min\(in_features = 12, 32\)"):
        quantize_product(w, 13, 4)
    with pytest.raises(ValueError, match=r"centroids: expected at most 256"):
        ProductQuantConfig(centroids=300)
    with pytest.raises(ValueError, match=r"codebook_dtype: expected one of \(torch.float32, "):
        ProductQuantConfig(codebook_dtype=torch.int8)
    with pytest.raises(ValueError, match="weight"):
        quantize_product(torch.full((2, 4), float("nan")), 2, 2)


def test_pq_mm_bad_arguments_raise():
    _, packed, codebooks = _random_format(6, 12, 4, 5, 3, seed=1)
    x = torch.zeros(2, 12)
    with pytest.raises(ValueError, match=r"codebooks: expected shape \(B, S, C, d\) with S = ceil\(K / d\)"):
        pq_mm_op(torch.zeros(2, 13), packed, codebooks, 3)
    with pytest.raises(ValueError, match=r"codebooks: expected ceil\(N / rows_per_block\) = 1 row blocks"):
        pq_mm_op(x, packed, codebooks, 6)
    with pytest.raises(ValueError, match=r"codes: expected shape \(1, 6\), got \(2, 6\)"):
        pq_mm_op(x, torch.zeros(2, 6, dtype=torch.int32), codebooks, 3)  # S = 3 codes of 4 bits: one word
    with pytest.raises(TypeError, match="codes: expected dtype int32"):
        pq_mm_op(x, packed.to(torch.int64), codebooks, 3)


def test_load_rejects_codes_out_of_range_and_wrong_shapes():
    layer = ProductQuantizedLinear.from_dense(_dense(), **OPTIONS)  # C = 6 in 4-bit codes
    state = layer.state_dict()
    bad = state["codes"].clone()
    bad[0, 4] |= 7 << 24  # code of (row 4, subspace 6) becomes 7 or more
    with pytest.raises(ValueError, match=r"codes: expected codes below centroids = 6, found (7|1[0-5])"):
        ProductQuantizedLinear(30, 23, **OPTIONS).load_state_dict({**state, "codes": bad})
    with pytest.raises(ValueError, match=r"codebooks: expected shape \(3, 8, 6, 4\)"):
        ProductQuantizedLinear(30, 23, **OPTIONS).load_state_dict({**state, "codebooks": state["codebooks"][:, :7]})
    with pytest.raises(ValueError, match="codebooks"):
        nan = state["codebooks"].clone()
        nan[0, 0, 0, 0] = float("nan")
        ProductQuantizedLinear(30, 23, **OPTIONS).load_state_dict({**state, "codebooks": nan})

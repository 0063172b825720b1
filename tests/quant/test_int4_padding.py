"""int4 with K not a multiple of the group size (ShuffleNetV2's K = 58, 116, 232): the layout pads K
to K_pad = ceil(K / G)·G with zero weights; x keeps its true K (the kernel masks k ≥ K, the
reference drops the padded columns). Packing exact against a direct per-group quantiser, kernel vs
reference by a derived bound, state_dict and the loaders' checks on the padded layout."""

import pytest
import torch
from torch import nn

from slimtorch.core.modules import GemmConv2d
from slimtorch.core.testing import assert_exact, assert_gemm_close, assert_rel_close, linear_map, randn, rel_bound
from slimtorch.quant import Int4WeightOnlyConfig, formats, int4_mm, layers, quantize_
from slimtorch.quant.int4_mm import int4_weight_mm

K, N = 58, 13  # K: ShuffleNetV2 0.5x's branch width; N odd


def _direct_int4(w: torch.Tensor, group_size: int):
    """Per group over the TRUE columns only (no padding): lo, hi, scale, zero, codes — the oracle."""
    n, k = w.shape
    scales, zeros, codes = [], [], torch.empty(n, k, dtype=torch.int64)
    for g0 in range(0, k, group_size):
        cols = w[:, g0 : g0 + group_size].float()
        lo, hi = cols.amin(1).clamp(max=0.0), cols.amax(1).clamp(min=0.0)
        scale = torch.where(hi > lo, (hi - lo) / 15, torch.ones_like(lo)).clamp(min=torch.finfo(torch.float16).tiny)
        scale = scale.half().float()
        zero = torch.round(-lo / scale).clamp(0, 15)
        codes[:, g0 : g0 + group_size] = (torch.round(cols / scale[:, None]) + zero[:, None]).clamp(0, 15).long()
        scales.append(scale)
        zeros.append(zero)
    return torch.stack(scales).half(), torch.stack(zeros).to(torch.uint8), codes


@pytest.mark.parametrize("group_size", [32, 128])
def test_padded_packing_is_exact(group_size):
    w = randn((N, K), seed=group_size)
    packed = formats.quantize_int4(w, group_size)
    k_pad = formats.padded_k(K, group_size)
    assert k_pad == {32: 64, 128: 128}[group_size]
    assert packed.qweight.shape == (k_pad // 8, N) and packed.scale.shape == (k_pad // group_size, N)
    scale, zero, codes = _direct_int4(w, group_size)
    assert_exact(packed.scale, scale, name="scale")
    assert_exact(packed.zero, zero, name="zero")
    stored = formats.unpack_codes(packed.qweight, 4, k_pad)
    assert_exact(stored[:, :K], codes, name="codes")
    # the padded columns hold each group's zero point: they decode to exact zeros
    last_zero = packed.zero[-1].long()[:, None].expand(N, k_pad - K)
    assert_exact(stored[:, K:], last_zero, name="padded codes")
    full = formats.dequantize_int4(*packed)
    assert_exact(full[:, K:], torch.zeros(N, k_pad - K), name="padded weights")
    assert_exact(formats.dequantize_int4(*packed, k=K), full[:, :K].contiguous(), name="dequantized")
    assert_exact(formats.pack_codes(stored, 4), packed.qweight, name="repacked")
    with pytest.raises(ValueError, match=r"qweight: expected K_pad = .* = 64 packed columns for K = 58 .* got 128"):
        formats.dequantize_int4(*formats.quantize_int4(w, 128)[:3], 32, k=K)


@pytest.mark.parametrize(
    ("m", "group_size", "dtype"),
    [
        (1, 32, torch.float32),
        (2, 128, torch.bfloat16),
        (5, 32, torch.float32),
        (17, 128, torch.float32),
        (3, 32, torch.float16),
    ],
)
def test_kernel_with_true_k_matches_reference(m, group_size, dtype):
    """m ≤ GEMV_MAX_M: the int4 GEMV kernel; m = 3, 5: the dequant GEMM's small-M path; m = 17: its
    tile path. x has K = 58 columns, the packed weights 64 or 128."""
    assert int4_mm.GEMV_MAX_M >= 2
    packed = formats.quantize_int4(randn((N, K), seed=m), group_size)
    x = randn((m, K), dtype=dtype, seed=m + 1)
    bias = randn((N,), dtype=dtype, seed=m + 2)
    out = int4_weight_mm(x, *packed, bias=bias)
    ref = int4_weight_mm.get_reference()(x.double(), *packed, bias.double())
    assert out.shape == (m, N) and out.dtype == dtype
    bound = rel_bound(dtype, K)
    assert_rel_close(out, ref, bound)
    weight = linear_map(lambda e: int4_weight_mm.get_reference()(e, *packed), K)
    assert_gemm_close(out, ref, x, weight, bound, bias=bias)


def test_layer_state_dict_round_trip_and_loader_checks():
    dense = nn.Linear(K, N)
    with torch.no_grad():
        dense.weight.copy_(randn((N, K), seed=1))
    layer = layers.Int4WeightOnlyLinear.from_dense(dense, group_size=32)
    assert layer.to_dense().weight.shape == (N, K)
    x = randn((7, K), seed=2)
    rebuilt = layers.build_layer(layers.describe_layer(layer))
    rebuilt.load_state_dict(layer.state_dict())
    for key, value in layer.state_dict().items():
        assert_exact(rebuilt.state_dict()[key], value, name=key)
    assert_exact(rebuilt(x), layer(x))
    unpadded = dict(layer.state_dict(), qweight=layer.qweight[: K // 8])  # K // 8 = 7 rows: the old layout
    with pytest.raises(ValueError, match=r"qweight: expected shape \(8, 13\), got \(7, 13\)"):
        rebuilt.load_state_dict(unpadded)
    other = formats.quantize_int4(randn((N, 130), seed=5), 32)  # K_pad = 160
    with pytest.raises(ValueError, match=r"packed.qweight: expected K_pad = .* = 64 packed columns for K = 58 .* 160"):
        layers.Int4WeightOnlyLinear.from_packed(other, K, N, group_size=32)
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 58\) \(in_features\), got \(7, 64\)"):
        layer(randn((7, 64), seed=3))


@pytest.mark.parametrize("group_size", [32, 128])
def test_quantize_converts_layers_whose_k_the_group_size_does_not_divide(group_size):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(K, 29, 1), nn.ReLU(), nn.Conv2d(29, 11, 3, padding=1)).eval()
    x = randn((2, K, 5, 7), seed=4)
    with torch.no_grad():
        expected = model(x)
    report = quantize_(model, Int4WeightOnlyConfig(group_size=group_size))
    assert sorted(report.converted) == ["0", "2"] and not report.skipped  # K = 58 and 29·9 = 261
    assert isinstance(model[0], GemmConv2d) and model[0].gemm.qweight.shape[0] * 8 == group_size * (-(-K // group_size))
    with torch.no_grad():
        out = model(x)
    # against the float model: int4's quantisation error (relative ~ 1/(2·15)·√(1/3) per weight), not a kernel bound
    assert_rel_close(out, expected, 0.1)

"""The one-pass W8A8 activation quantizer: x · (1 / s) per row, bit-exact against its reference on
both kernel paths (whole row in registers; chunked max-abs + quantize passes for long rows)."""

import pytest
import torch

from slimtorch.core.testing import assert_exact, randn
from slimtorch.quant import w8a8_mm
from slimtorch.quant.w8a8_mm import quantize_per_token, quantize_per_token_reference


def _check(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q, scale = quantize_per_token(x)
    ref_q, ref_scale = quantize_per_token_reference(x)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert_exact(q, ref_q, name="q")
    assert_exact(scale, ref_scale, name="scale")
    return q, scale


@pytest.fixture(params=["one pass", "two passes"])
def path(request, monkeypatch):
    """Run each test on both kernel paths: shrinking the one-pass limit sends odd K to the chunked loop."""
    if request.param == "two passes":
        monkeypatch.setattr(w8a8_mm, "QUANT_ONE_PASS_MAX_K", 16)
        monkeypatch.setattr(w8a8_mm, "QUANT_BLOCK_K", 32)
    return request.param


@pytest.mark.parametrize(
    ("m", "k", "dtype"), [(5, 77, torch.float16), (3, 131, torch.bfloat16), (7, 45, torch.float32)]
)
def test_matches_the_reciprocal_reference_exactly(device, path, m, k, dtype):
    x = randn((m, k), dtype=dtype, device=device, seed=m * k) * 5
    x[2] = 0  # an all-zero row: scale 1, codes 0
    q, scale = _check(x)
    assert scale[2].item() == 1.0 and int(q[2].abs().max()) == 0
    assert int(q.abs().max()) == 127  # each row's max-abs element maps to ±127


def _disagreeing_row(amax: float, width: int) -> torch.Tensor:
    """A row of max-abs ``amax`` whose other values lie within a few ulps of a rounding boundary
    (k + 1/2)·s, chosen where round(x · (1/s)) != round(x / s)."""
    a = torch.tensor(amax, dtype=torch.float32)
    s = a / 127
    r = torch.reciprocal(s)
    near = (torch.arange(127, dtype=torch.float32) + 0.5) * s
    cands = near[:, None].expand(127, 9).clone()
    for step in range(1, 5):  # ±4 ulps around each boundary
        cands[:, 4 + step] = torch.nextafter(cands[:, 3 + step], torch.tensor(float("inf")))
        cands[:, 4 - step] = torch.nextafter(cands[:, 5 - step], torch.tensor(float("-inf")))
    cands = cands.flatten()
    differ = cands[torch.round(cands * r) != torch.round(cands / s)]
    assert differ.numel(), f"no disagreement near amax={amax}"
    return torch.cat([a[None], differ, torch.zeros(width)])[:width]


def test_reciprocal_rule_differs_from_division(device, path):
    """x · (1/s) and x / s disagree by one code near rounding boundaries: the kernel follows the
    reciprocal rule (a kernel dividing per element fails here)."""
    x = torch.stack([_disagreeing_row(a, 37) for a in (3.3, 0.7131, 1234.5)]).to(device)
    q, scale = _check(x)
    divided = torch.round(x.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    assert int((q != divided).sum()) > 0


def test_ties_round_half_to_even_after_the_multiply(device, path):
    # amax 127 -> s = 1, r = 1: x · r = x exactly, so these are exact ties
    row = [127.0, 0.5, 1.5, 2.5, -2.5, -0.5, 126.5, -125.5, 3.5] + [0.0] * 20
    x = torch.tensor([row, [v / 2 for v in row]], dtype=torch.float32, device=device)
    q, _ = _check(x)
    assert q[0, :9].tolist() == [127, 0, 2, 2, -2, 0, 126, -126, 4]


def test_nonfinite_rows_get_nan_scale_and_zero_codes(device, path):
    x = randn((6, 41), dtype=torch.float16, device=device, seed=3)
    x[1, 40], x[3, 0], x[4, 17] = float("nan"), float("inf"), float("-inf")
    q, scale = _check(x)
    bad = torch.tensor([False, True, False, True, True, False], device=device)
    assert bool(scale[bad].isnan().all()) and not bool(scale[~bad].isnan().any())
    assert int(q[bad].abs().max()) == 0


@pytest.mark.filterwarnings("ignore:overflow encountered in divide")  # the interpreter's 1 / s, before the clamp
def test_tiny_rows_clamp_the_reciprocal(device, path):
    """max-abs below ~3.7e-37 (fp32 / bf16): 1/s overflows, the rule clamps it to FLT_MAX, so zeros stay
    0 (no Inf · 0 = NaN) and the codes are small but finite (such rows are denormal noise)."""
    x = randn((3, 23), dtype=torch.float32, device=device, seed=5) * 1e-38
    x[:, 4] = 0.0
    q, scale = _check(x)
    assert bool(torch.isfinite(scale).all())
    assert int(q[:, 4].abs().max()) == 0 and 0 < int(q.abs().max()) < 127


def test_strided_rows(device, path):
    base = randn((4, 2 * 39), dtype=torch.float16, device=device, seed=9)
    _check(base[:, ::2])  # stride_xk = 2
    _check(randn((39, 5), dtype=torch.float16, device=device, seed=10).t())  # column-major x

"""circulant_fft.py: the fused FFT-product-iFFT kernel against the explicit circulant matrix in float64
(square and rectangular, odd row counts: the last program holds one row), the reference, NaN rows kept
to themselves (two rows share one complex transform), the routing from block_circulant_fft_mm and bad
arguments."""

import pytest
import torch

from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.structured import block_circulant as bc
from slimtorch.structured import circulant_fft as cf

from .helpers import DTYPES, bound


def circulant(c: torch.Tensor) -> torch.Tensor:
    """C[r, s] = c[(r − s) mod n], by a loop (independent of the code under test)."""
    n = c.numel()
    return torch.stack([torch.stack([c[(r - s) % n] for s in range(n)]) for r in range(n)])


def spectrum_of(c: torch.Tensor) -> torch.Tensor:
    f = torch.fft.rfft(c.double())
    return torch.stack((f.real, f.imag)).float().contiguous()


@pytest.mark.parametrize("n, m, k, out", [(16, 1, 16, 16), (64, 5, 64, 64), (128, 3, 100, 77), (32, 4, 9, 32)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_matches_the_explicit_circulant(device, n, m, k, out, dtype):
    c = randn((n,), dtype=torch.float64, seed=n)
    x = randn((m, k), dtype=dtype, device=device, seed=m + k)
    bias = randn((out,), dtype=dtype, device=device, seed=3)
    ref = x.double() @ circulant(c)[:out, :k].to(device).T + bias.double()
    got = cf.circulant_fft_mm.launcher(x, spectrum_of(c).to(device), n, out, bias)
    assert got.dtype == dtype and got.shape == (m, out)
    # forward and inverse transforms: 2·log2(n) butterfly levels, bounded like a 4·n-term reduction
    assert_rel_close(got, ref, bound(dtype, device, k=4 * n), name="fused circulant")
    assert_rel_close(
        cf.circulant_fft_mm_reference(x, spectrum_of(c).to(device), n, out, bias), ref, bound(dtype, device, k=4 * n)
    )


def test_fp32_is_not_rounded_through_half():
    """The bound is tight: the same kernel fed an fp16-rounded input misses the fp32 bound."""
    n = 256
    c = randn((n,), dtype=torch.float64, seed=1)
    x = randn((3, n), seed=2)
    ref = x.double() @ circulant(c).T
    assert_rel_close(
        cf.circulant_fft_mm.launcher(x, spectrum_of(c), n, n, None), ref, bound(torch.float32, "cpu", k=4 * n)
    )
    rounded = cf.circulant_fft_mm.launcher(x.half().float(), spectrum_of(c), n, n, None)
    err = ((rounded.double() - ref).norm() / ref.norm()).item()
    assert err > bound(torch.float32, "cpu", k=4 * n)


def test_nonfinite_rows_stay_in_their_row(device):
    n = 32
    c = randn((n,), dtype=torch.float64, seed=5)
    x = randn((5, n), device=device, seed=6)
    x[0, 3] = float("nan")  # row 0 shares its transform with row 1
    x[3, 7] = float("inf")  # row 3 with row 2
    got = cf.circulant_fft_mm.launcher(x, spectrum_of(c).to(device), n, n, None)
    assert got[0].isnan().all() and got[3].isnan().all()
    ok = [1, 2, 4]
    ref = x[ok].double() @ circulant(c).to(device).T
    assert_rel_close(got[ok], ref, bound(torch.float32, device, k=4 * n))


def test_block_circulant_routes_power_of_two_circulants_to_the_fused_kernel(device, monkeypatch):
    calls = []
    launcher = cf.circulant_fft_mm.launcher
    monkeypatch.setattr(cf.circulant_fft_mm, "launcher", lambda *a, **k: calls.append(a[2]) or launcher(*a, **k))
    c = randn((1, 1, 64), device=device, seed=7)
    x = randn((3, 64), device=device, seed=8)
    got = bc.block_circulant_fft_mm.launcher(x, bc.weight_spectrum(c), 64, None)
    assert calls == [64]
    assert_rel_close(
        got, x.double() @ circulant(c.flatten().double().cpu()).to(device).T, bound(torch.float32, device, k=256)
    )
    bc.block_circulant_fft_mm.launcher(randn((3, 12), device=device, seed=9), bc.weight_spectrum(c[..., :12]), 12, None)
    assert calls == [64]  # 12 is no power of two: torch.fft


@pytest.mark.parametrize(
    "args, match",
    [
        ((randn((2, 8)), torch.zeros(2, 9), 24, 8), "n: expected a power of two"),
        ((randn((2, 8)), torch.zeros(2, 9), 8, 8), "n: expected a power of two"),
        ((randn((2, 17)), torch.zeros(2, 9), 16, 16), "x: expected at most n = 16"),
        ((randn((2, 16)), torch.zeros(2, 8), 16, 16), "spectrum"),
        ((randn((2, 16)), torch.zeros(2, 9), 16, 17), "out_features"),
        ((randn((2, 16)), torch.zeros(2, 9, dtype=torch.float64), 16, 16), "spectrum"),
    ],
)
def test_bad_arguments_name_themselves(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cf.circulant_fft_mm(*args)

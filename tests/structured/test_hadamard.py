"""hadamard.py: the FWHT kernel (one pass and two passes) against Sylvester's matrix in float64,
its gradient, NaN propagation and the size check."""

import pytest
import torch

from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.structured.hadamard import fwht, fwht_reference, hadamard_matrix

from .helpers import DTYPES, bound


def test_hadamard_matrix_is_sylvester():
    h = hadamard_matrix(8)
    assert torch.equal(h @ h.T, 8 * torch.eye(8, dtype=torch.float64))
    assert torch.equal(h[:4, :4], hadamard_matrix(4)) and torch.equal(h[4:, 4:], -hadamard_matrix(4))


@pytest.mark.parametrize("m, n, max_block", [(3, 1, 8192), (5, 2, 8192), (7, 64, 8192), (3, 64, 8), (5, 128, 16)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_matches_the_matrix(device, m, n, max_block, dtype):
    x = randn((m, n), dtype=dtype, device=device, seed=n + m)
    scale = n**-0.5
    out = fwht.launcher(x, scale, max_block)
    assert out.dtype == dtype
    ref = x.double() @ hadamard_matrix(n, device=device) * scale
    assert_rel_close(out, ref, bound(dtype, device, k=n))  # each output sums n terms (log2 n stages)
    assert_rel_close(fwht_reference(x.double(), scale), ref, 1e-12, name="reference")


def test_gradient_and_nan(device):
    x = randn((3, 32), device=device, seed=1).requires_grad_()
    g = randn((3, 32), device=device, seed=2)
    (got,) = torch.autograd.grad(fwht(x, 0.25, 8), x, g)
    assert_rel_close(got, g.double() @ hadamard_matrix(32, device=device) * 0.25, bound(torch.float32, device, k=32))
    y = x.detach().clone()
    y[1, 5] = float("nan")
    out = fwht(y, 1.0)
    assert out[1].isnan().all() and not out[[0, 2]].isnan().any()


def test_non_power_of_two_size_raises():
    with pytest.raises(ValueError, match=r"x.shape\[1\]: expected a power of two .* got 24"):
        fwht(torch.randn(2, 24))
    with pytest.raises(ValueError, match="max_block: expected a power of two >= 2, got 12"):
        fwht(torch.randn(2, 16), 1.0, 12)

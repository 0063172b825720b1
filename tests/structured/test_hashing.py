"""hashing.py: the HashedNets kernel (both orientations) against the explicit virtual matrix, the
hash against a pure-Python transcription, gradients and bad arguments."""

import pytest
import torch

from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.structured.hashing import hash_index, hashed_matrix, hashed_mm

from .helpers import DTYPES, bound


def python_hash(t: int, seed: int) -> int:
    """The module docstring's mix, with Python's unbounded ints (independent of the torch code)."""
    m = 0xFFFFFFFF
    u = ((t & m) * 0x7FEB352D + seed) & m
    u ^= u >> 16
    u = (u * 0x6B43A9B5) & m
    u ^= u >> 13
    u = (u * 0x5BD1E995) & m
    return u ^ (u >> 16)


def test_hash_matches_python_and_spreads():
    bucket, sign = hash_index(9, 11, 13, seed=7)
    for n, k in [(0, 0), (3, 5), (8, 10)]:
        u = python_hash(n * 11 + k, 7)
        assert int(bucket[n, k]) == (u & 0x7FFFFFFF) % 13 and int(sign[n, k]) == 1 - 2 * (u >> 31)
    big_bucket, big_sign = hash_index(64, 64, 16, seed=1)
    counts = torch.bincount(big_bucket.reshape(-1), minlength=16)
    assert counts.min() > 0.6 * 256 and counts.max() < 1.4 * 256  # about 4096 / 16 each
    assert abs(float(big_sign.double().mean())) < 0.06


@pytest.mark.parametrize("m, k, n, buckets", [(5, 13, 11, 17), (1, 40, 33, 7), (33, 9, 3, 1)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_matches_the_virtual_matrix(device, m, k, n, buckets, dtype):
    w = randn((buckets,), dtype=dtype, device=device, seed=buckets)
    x = randn((m, k), dtype=dtype, device=device, seed=m)
    bias = randn((n,), dtype=dtype, device=device, seed=2)
    v = hashed_matrix(w.double(), n, k, seed=5)
    ref = x.double() @ v.T + bias.double()
    assert_rel_close(hashed_mm.launcher(x, w, n, 5, bias), ref, bound(dtype, device, True, k=k))
    g = randn((m, n), dtype=dtype, device=device, seed=3)  # the transposed product sums over N
    assert_rel_close(hashed_mm.launcher(g, w, k, 5, None, True), g.double() @ v, bound(dtype, device, True, k=n))


def test_gradients_match_autograd_through_the_virtual_matrix(device):
    w = randn((19,), device=device, seed=1).requires_grad_()
    x = randn((7, 13), device=device, seed=2).requires_grad_()
    bias = randn((11,), device=device, seed=3).requires_grad_()
    g = randn((7, 11), device=device, seed=4)
    got = torch.autograd.grad(hashed_mm(x, w, 11, 3, bias), (x, w, bias), g)
    w64, x64, b64 = (t.detach().double().requires_grad_() for t in (w, x, bias))
    want = torch.autograd.grad(x64 @ hashed_matrix(w64, 11, 13, 3).T + b64, (x64, w64, b64), g.double())
    for name, a, b in zip(("x", "weight", "bias"), got, want, strict=True):
        # a bucket's gradient sums over every (m, n, k) entry hashed to it: at most M·N·K = 7·11·13 terms
        assert_rel_close(a, b, bound(torch.float32, device, True, k=7 * 11 * 13), name=f"grad {name}")


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"seed: expected an int in \[0, 2147483647\], got -1"):
        hashed_mm(torch.randn(2, 3), torch.randn(4), 5, -1)
    with pytest.raises(ValueError, match=r"bias: expected shape \(5\)"):
        hashed_mm(torch.randn(2, 3), torch.randn(4), 5, 0, torch.randn(4))

import math

import pytest
import torch

from slimtorch.core import testing
from slimtorch.core.metrics import rel_error, sqnr


def test_rel_error_and_sqnr_values():
    ref = torch.tensor([3.0, 4.0])
    assert rel_error(ref, ref) == 0.0
    assert rel_error(torch.tensor([3.0, 4.5]), ref) == pytest.approx(0.1)
    assert sqnr(ref, torch.tensor([3.0, 4.5])) == pytest.approx(20.0)
    assert sqnr(ref, ref) == math.inf
    assert rel_error(torch.zeros(2), torch.zeros(2)) == 0.0


def test_nan_never_passes():
    ref = torch.ones(4)
    out = ref.clone()
    out[2] = float("nan")
    assert math.isnan(rel_error(out, ref))
    assert math.isnan(sqnr(ref, out))
    with pytest.raises(AssertionError, match="relative error nan"):
        testing.assert_rel_close(out, ref, 1.0)


def test_assert_rel_close_reports_location():
    ref = torch.ones(3, 4)
    out = ref.clone()
    out[1, 2] = 2.0
    testing.assert_rel_close(out, ref, 0.5)
    with pytest.raises(AssertionError, match=r"max \|diff\| 1.000e\+00 at \(1, 2\)"):
        testing.assert_rel_close(out, ref, 1e-3)
    with pytest.raises(AssertionError, match="shape"):
        testing.assert_rel_close(out[:2], ref, 1.0)
    with pytest.raises(ValueError, match=r"out: expected shape \(3, 4\)"):
        rel_error(out[:2], ref)


def test_assert_exact():
    a = torch.arange(10, dtype=torch.int32)
    testing.assert_exact(a, a.clone())
    b = a.clone()
    b[7] = -1
    with pytest.raises(AssertionError, match=r"1 of 10 elements differ; first at \(7,\): -1 != 7"):
        testing.assert_exact(b, a)
    with pytest.raises(AssertionError, match="int64"):
        testing.assert_exact(a.long(), a)


def test_assert_sqnr():
    ref = torch.randn(1000)
    testing.assert_sqnr_at_least(ref, ref + 1e-3 * torch.randn(1000), 40.0)
    with pytest.raises(AssertionError, match="SQNR"):
        testing.assert_sqnr_at_least(ref, ref + 0.5 * torch.randn(1000), 40.0)


def test_odd_sizes_avoid_powers_of_two():
    sizes = testing.odd_sizes(6, low=4, high=200, multiple_of=4, seed=1)
    assert len(set(sizes)) == 6
    for s in sizes:
        assert s % 4 == 0 and s & (s - 1) != 0 and s % 64 != 0
    with pytest.raises(ValueError, match="no multiple of 50"):
        testing.odd_sizes(1, low=1, high=10, multiple_of=50)


def test_randn_is_reproducible_and_placed():
    a = testing.randn((3, 5), dtype=torch.float16, seed=7)
    b = testing.randn((3, 5), dtype=torch.float16, seed=7)
    assert a.dtype == torch.float16 and torch.equal(a, b)


def test_poison():
    t = testing.poison_(torch.zeros(4, dtype=torch.int16))
    assert bool((t == torch.iinfo(torch.int16).min).all())


def test_small_cnn_runs_and_has_every_layer_kind():
    model = testing.SmallCompactCNN(num_classes=5).eval()
    out = model(torch.randn(2, 3, 33, 31))
    assert out.shape == (2, 5)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert any(m.groups == m.in_channels > 1 for m in convs)  # depthwise
    assert any(m.kernel_size == (1, 1) and m.groups == 1 for m in convs)  # pointwise
    assert any(m.kernel_size == (1, 1) and 1 < m.groups < m.in_channels for m in convs)  # grouped 1x1
    assert any(isinstance(m, torch.nn.Linear) for m in model.modules())

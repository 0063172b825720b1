"""hashed_mm dispatches by measurement (core.measured) between our kernel and torch's path (V materialised
by the same hash, then F.linear): the faster is chosen and cached per bucket, a raising one never is,
kernel/torch modes are deterministic, the choice is never slower than torch's, and both candidates equal
the reference (our kernel in the interpreter). Fake timers, no GPU needed."""

import random

import pytest
import torch

from slimtorch.core import measured
from slimtorch.core.testing import assert_rel_close, order_measurer, randn, rel_bound
from slimtorch.structured import hashing
from slimtorch.structured.hashing import hashed_mm, launch_hashed_mm

OP, TORCH = "slimtorch::hashed_mm", "torch V+F.linear"
N, K, P = 21, 37, 50


def args(dtype=torch.float32, rows=7, transposed=False, seed=0):
    x = randn((rows, K), dtype=dtype, seed=seed)
    return (x, randn((P,), dtype=dtype, seed=seed + 1), N, 5, randn((N,), dtype=dtype, seed=seed + 2), transposed)


def reference(a):
    x, w, n, seed, bias, transposed = a
    return hashing.hashed_mm_reference(x.double(), w.double(), n, seed, bias.double(), transposed)


def test_the_launcher_stays_our_kernel():
    assert hashed_mm.launcher is launch_hashed_mm


@pytest.mark.parametrize(
    ("dtype", "transposed", "times", "expected"),
    [
        (torch.float32, False, (2.0, 1.0), TORCH),
        (torch.float32, True, (1.0, 2.0), "triton"),
        (torch.float16, False, (3.0, 1.0), TORCH),
        (torch.bfloat16, True, (1.0, 1.0), "triton"),  # a tie: ours
    ],
)
def test_each_choice_matches_the_reference_and_is_cached(dtype, transposed, times, expected):
    a = args(dtype, transposed=transposed, seed=len(expected))
    a[0][3, 4] = float("nan")  # NaN in, NaN out (the row)
    m = order_measurer(*times)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        out = hashed_mm(*a)
        ((slot, choice),) = m.choices.items()
        assert choice.choice == expected and not choice.errors and m.timer.calls == 2
        assert slot == (OP, "fake", f"8,{N},{K},{str(dtype)[6:]},{P},{int(transposed)}", "measured")
        assert out.shape == (7, N) and out.dtype == dtype and bool(out[3].isnan().all())
        rows = [0, 1, 2, 4, 5, 6]
        assert_rel_close(out[rows], reference(a)[rows], rel_bound(dtype, K))
        hashed_mm(*args(dtype, rows=5, transposed=transposed, seed=9))  # the same bucket (M 5..8): cached
        assert m.timer.calls == 2 and len(m.choices) == 1


def test_a_raising_torch_path_is_never_chosen(monkeypatch):
    def unsupported(*a):
        raise RuntimeError("out of memory materialising V")

    monkeypatch.setattr(hashing, "hashed_mm_torch", unsupported)
    m = order_measurer(5.0)
    a = args()
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        out = hashed_mm(*a)
    (choice,) = m.choices.values()
    assert choice.choice == "triton" and "out of memory" in choice.errors[TORCH]
    assert_rel_close(out, reference(a), rel_bound(torch.float32, K))


def test_kernel_and_torch_modes_are_deterministic(monkeypatch):
    ran = []
    real_torch, real_ours = hashing.hashed_mm_torch, hashing.launch_hashed_mm
    monkeypatch.setattr(hashing, "hashed_mm_torch", lambda *a: ran.append(TORCH) or real_torch(*a))
    monkeypatch.setattr(hashing, "launch_hashed_mm", lambda *a: ran.append("triton") or real_ours(*a))
    a = args()
    for mode, expected in (("kernel", "triton"), ("torch", TORCH)):
        ran.clear()
        m = order_measurer()
        with measured.use_measurer(m), measured.use_dispatch(mode):
            out = hashed_mm(*a)
            hashed_mm(*a)
        assert ran == [expected, expected] and m.timer.calls == 0
        assert_rel_close(out, reference(a), rel_bound(torch.float32, K))


def test_never_slower_than_torch_over_random_timings():
    rng = random.Random(5)
    a = args(rows=3)
    for _ in range(10):
        ours, theirs = rng.choice([1.0, rng.uniform(0.1, 3.0)]), rng.choice([1.0, rng.uniform(0.1, 3.0)])
        m = order_measurer(ours, theirs)
        with measured.use_measurer(m), measured.use_dispatch("measure"):
            hashed_mm(*a)
        (choice,) = m.choices.values()
        assert choice.times_ms[choice.choice] == min(ours, theirs) <= theirs
        assert choice.choice == ("triton" if ours <= theirs else TORCH)


def test_gradients_flow_through_either_choice():
    """The candidates run inside the op: its backward (our kernels) is the same whichever was chosen."""
    grads = []
    for times in ((2.0, 1.0), (1.0, 2.0)):
        x, w, n, seed, bias, transposed = args(rows=4)
        w.requires_grad_(True)
        with measured.use_measurer(order_measurer(*times)), measured.use_dispatch("measure"):
            hashed_mm(x, w, n, seed, bias, transposed).square().sum().backward()
        grads.append(w.grad)
    assert_rel_close(grads[0], grads[1], rel_bound(torch.float32, 4 * K))


def test_slimtorch_info_lists_the_hashed_choice(capsys, monkeypatch):
    cli = pytest.importorskip("slimtorch.compress.cli")
    from slimtorch.core import registry

    monkeypatch.setattr(registry, "import_all_packages", lambda: ["structured"])
    m = order_measurer(2.0, 1.0)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        hashed_mm(*args(rows=3))
        assert cli._cmd_info(None) == 0
    line = f"{OP} [fake] 4,{N},{K},float32,{P},0: {TORCH} (measured; triton 2.0000 ms, {TORCH} 1.0000 ms)"
    assert line in capsys.readouterr().out


@pytest.mark.gpu
def test_measured_on_cuda_matches_the_reference_and_picks_the_minimum():
    m = measured.Measurer(cache_path=None)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        for rows in (1, 300):
            a = [t.cuda() if torch.is_tensor(t) else t for t in args(torch.float16, rows=rows)]
            assert_rel_close(hashed_mm(*a), reference(a), rel_bound(torch.float16, K, device="cuda"))
    assert len(m.choices) == 2
    for choice in m.choices.values():
        assert choice.times_ms[choice.choice] == min(t for t in choice.times_ms.values() if t is not None)

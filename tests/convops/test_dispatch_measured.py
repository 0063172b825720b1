"""pointwise_conv2d dispatches by measurement (core.measured) between our kernel and torch's path
(cuDNN F.conv2d + the same shift / shuffles / epilogue in torch): the faster is chosen and cached per
bucket, a raising one never is, kernel/torch modes are deterministic, the choice is never slower than
torch's, and both candidates equal the reference (our kernel in the interpreter). Fake timers."""

import random

import pytest
import torch

from slimtorch.convops import pointwise
from slimtorch.convops.pointwise import launch_pointwise_conv2d, pointwise_conv2d, pointwise_measure_key
from slimtorch.core import measured
from slimtorch.core.testing import assert_rel_close, order_measurer, randn, rel_bound

OP = "slimtorch::pointwise_conv2d"
TORCH = "torch cuDNN"
OFFSETS = torch.tensor([[(c % 3) - 1, (c * 7 % 5) - 2] for c in range(12)], dtype=torch.int32)


def inputs(dtype, shifted, seed=0, channels_last=True, batch=2):
    """(x, weight, scale, shift, offsets, groups, in_shuffle, out_shuffle, stride, activation)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = randn((batch, 12, 9, 7), dtype=dtype, seed=seed).contiguous(memory_format=fmt)
    w = randn((18, 4, 1, 1), dtype=dtype, seed=seed + 1, scale=0.3)
    scale, shift = randn((18,), dtype=dtype, seed=seed + 2), randn((18,), dtype=dtype, seed=seed + 3)
    return (x, w, scale, shift, OFFSETS if shifted else None, 3, 3 if shifted else 1, 6, 2 if shifted else 1, "silu")


def reference(args):
    return pointwise_conv2d.get_reference()(*[a.double() if torch.is_tensor(a) and a.is_floating_point() else a
                                              for a in args])  # fmt: skip


def test_the_launcher_stays_our_kernel():
    assert pointwise_conv2d.launcher is launch_pointwise_conv2d


@pytest.mark.parametrize(
    ("dtype", "shifted", "times", "expected"),
    [
        (torch.float32, True, (2.0, 1.0), TORCH),
        (torch.float32, False, (1.0, 2.0), "triton"),
        (torch.float16, False, (3.0, 1.0), TORCH),
        (torch.bfloat16, True, (1.0, 1.0), "triton"),  # a tie: ours
    ],
)
def test_each_choice_matches_the_reference_and_is_cached(dtype, shifted, times, expected):
    args = inputs(dtype, shifted, seed=len(expected))
    m = order_measurer(*times, *times)  # two buckets
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        out = pointwise_conv2d(*args)
        ((slot, choice),) = m.choices.items()
        assert choice.choice == expected and not choice.errors and m.timer.calls == 2
        assert slot == (OP, "fake", ",".join(map(str, pointwise_measure_key(*args))), "measured")
        assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
        assert_rel_close(out, reference(args), rel_bound(dtype, 4))  # K = C_in / groups
        pointwise_conv2d(*inputs(dtype, shifted, seed=9))  # new data, the same bucket: cached, not timed again
        assert m.timer.calls == 2 and len(m.choices) == 1
        pointwise_conv2d(*inputs(dtype, shifted, seed=9, channels_last=False))
        assert len(m.choices) == 2  # the layout is part of the bucket


def test_a_raising_torch_path_is_never_chosen(monkeypatch):
    def unsupported(*args):
        raise RuntimeError("cuDNN: no kernel for this configuration")

    monkeypatch.setattr(pointwise, "pointwise_conv2d_torch", unsupported)
    m = order_measurer(5.0)
    args = inputs(torch.float32, False)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        out = pointwise_conv2d(*args)
    (choice,) = m.choices.values()
    assert choice.choice == "triton" and "no kernel" in choice.errors[TORCH] and choice.times_ms[TORCH] is None
    assert_rel_close(out, reference(args), rel_bound(torch.float32, 4))


def test_kernel_and_torch_modes_are_deterministic(monkeypatch):
    ran = []
    real_torch, real_ours = pointwise.pointwise_conv2d_torch, pointwise.launch_pointwise_conv2d
    monkeypatch.setattr(pointwise, "pointwise_conv2d_torch", lambda *a: ran.append(TORCH) or real_torch(*a))
    monkeypatch.setattr(pointwise, "launch_pointwise_conv2d", lambda *a: ran.append("triton") or real_ours(*a))
    args = inputs(torch.float32, False, batch=1)
    for mode, expected in (("kernel", "triton"), ("torch", TORCH)):
        ran.clear()
        m = order_measurer()
        with measured.use_measurer(m), measured.use_dispatch(mode):
            out = pointwise_conv2d(*args)
            pointwise_conv2d(*args)
        assert ran == [expected, expected] and m.timer.calls == 0
        assert_rel_close(out, reference(args), rel_bound(torch.float32, 4))


def test_never_slower_than_torch_over_random_timings():
    rng = random.Random(11)
    args = inputs(torch.float32, False, batch=1)
    for _ in range(6):
        ours, theirs = rng.choice([1.0, rng.uniform(0.1, 3.0)]), rng.choice([1.0, rng.uniform(0.1, 3.0)])
        m = order_measurer(ours, theirs)
        with measured.use_measurer(m), measured.use_dispatch("measure"):
            pointwise_conv2d(*args)
        (choice,) = m.choices.values()
        chosen = choice.times_ms[choice.choice]
        assert chosen <= theirs and chosen == min(ours, theirs)
        assert choice.choice == ("triton" if ours <= theirs else TORCH)


def test_slimtorch_info_lists_the_pointwise_choice(capsys, monkeypatch):
    cli = pytest.importorskip("slimtorch.compress.cli")
    from slimtorch.core import registry

    monkeypatch.setattr(registry, "import_all_packages", lambda: ["convops"])
    m = order_measurer(2.0, 1.0)
    args = inputs(torch.float32, False, batch=1)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        pointwise_conv2d(*args)
        assert cli._cmd_info(None) == 0
    key = ",".join(map(str, pointwise_measure_key(*args)))
    assert f"{OP} [fake] {key}: {TORCH} (measured; triton 2.0000 ms, {TORCH} 1.0000 ms)" in capsys.readouterr().out


@pytest.mark.gpu
def test_measured_on_cuda_matches_the_reference_and_picks_the_minimum():
    m = measured.Measurer(cache_path=None)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        for dtype, shifted in ((torch.float16, False), (torch.float32, True)):
            args = [a.cuda() if torch.is_tensor(a) else a for a in inputs(dtype, shifted, batch=3)]
            assert_rel_close(pointwise_conv2d(*args), reference(args), rel_bound(dtype, 4, device="cuda"))
    assert len(m.choices) == 2
    for choice in m.choices.values():
        assert choice.times_ms[choice.choice] == min(t for t in choice.times_ms.values() if t is not None)

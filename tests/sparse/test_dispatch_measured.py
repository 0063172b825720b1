"""SparseLinear24 and BlockSparseLinear dispatch by measurement (core.measured) between our kernels and
torch's paths: per bucket the fastest candidate that runs is chosen and cached, a raising one never is,
SLIMTORCH_DISPATCH=kernel/torch are deterministic, the choice is never slower than torch's best, the
dense copy is held only while chosen, and every candidate that runs here equals the op's reference.
Fake timers and a fake "measurable" test stand in for the GPU (the CPU runs the torch candidates and
the ops' CPU path)."""

import random

import pytest
import torch

from slimtorch.core import dispatch, measured
from slimtorch.core.testing import assert_rel_close, randn, rel_bound
from slimtorch.sparse import layers
from slimtorch.sparse.bsr import bsr_mm_reference
from slimtorch.sparse.layers import TORCH_BSR, TORCH_DENSE, TORCH_SEMI_STRUCTURED, BlockSparseLinear, SparseLinear24
from slimtorch.sparse.sparse24 import sparse24_mm_reference

K, N = 48, 32  # odd-ish sizes: K a multiple of 4 and of the BSR block 16, N/16 = 2 block rows


class NameTimer:
    """Median ms per candidate name (names tagged on the candidates by the ``named`` fixture)."""

    def __init__(self, times: dict[str, float]):
        self.times, self.calls = times, []

    def __call__(self, fn) -> float:
        self.calls.append(fn.name)
        return self.times[fn.name]


@pytest.fixture
def named(monkeypatch):
    """Tag each candidate function with its name before core.measured.run sees it; SLIMTORCH_BACKEND auto."""
    real = measured.run

    def run(op, key, candidates, like):
        for name, fn in candidates.items():
            fn.name = name
        return real(op, key, candidates, like)

    monkeypatch.setattr(measured, "run", run)
    with dispatch.use_backend("auto"), torch.no_grad():
        yield


def fake(times: dict[str, float]) -> measured.Measurer:
    return measured.Measurer(NameTimer(times), None, device_tag=lambda d: "fake", measurable=lambda t: True)


def make_24(dtype=torch.float32, activation="relu") -> SparseLinear24:
    torch.manual_seed(3)
    return SparseLinear24.from_dense(torch.nn.Linear(K, N).to(dtype), activation=activation)


def make_bsr(dtype=torch.float32, activation="relu") -> BlockSparseLinear:
    torch.manual_seed(4)
    linear = torch.nn.Linear(K, N).to(dtype)
    return BlockSparseLinear.from_dense(linear, block_size=16, density=0.5, activation=activation)


def reference(layer, x: torch.Tensor) -> torch.Tensor:
    """The op's own reference in float64."""
    bias = layer.bias.detach().double()
    if isinstance(layer, SparseLinear24):
        return sparse24_mm_reference(x.double(), layer.values.detach().double(), layer.meta, bias, layer.activation)
    values = layer.values.detach().double()
    return bsr_mm_reference(x.double(), layer.crow_indices, layer.col_indices, values, bias, layer.activation)


# The candidates that run on CPU, in order (torch's semi-structured path is CUDA only: it raises here).
RUNS_24 = ("triton", TORCH_DENSE)
RUNS_BSR = ("triton", TORCH_BSR, TORCH_DENSE)
LAYERS = [(make_24, layers.OP_24, RUNS_24), (make_bsr, layers.OP_BSR, RUNS_BSR)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("make", "op", "runs"), LAYERS)
def test_each_candidate_is_chosen_when_fastest_and_matches_the_reference(named, make, op, runs, dtype):
    layer = make(dtype)
    raising = {TORCH_SEMI_STRUCTURED} if op == layers.OP_24 else set()
    if dtype != torch.float32 and op == layers.OP_BSR:
        raising, runs = {TORCH_BSR}, tuple(n for n in runs if n != TORCH_BSR)  # torch's CPU BSR (MKL): fp32/fp64
    for fastest in runs:
        times = {name: (1.0 if name == fastest else 2.0) for name in runs}
        m = fake(times)
        x = randn((7, K), dtype=dtype, seed=len(fastest))
        x[2, 5] = float("nan")  # NaN in, NaN out (the row), on every path
        with measured.use_measurer(m):
            out = layer(x)
            ((slot, choice),) = m.choices.items()
            assert choice.choice == fastest and set(choice.errors) == raising
            assert slot == (op, "fake", ",".join(map(str, layer._measure_key(x))), "measured")
            assert out.shape == (7, N) and out.dtype == dtype
            assert bool(out[2].isnan().all())
            rows = [0, 1, 3, 4, 5, 6]
            assert_rel_close(out[rows], reference(layer, x)[rows], rel_bound(dtype, K))
            # the same bucket (M 5..8) again: cached, the chosen candidate alone runs
            calls = list(m.timer.calls)
            again = layer(randn((5, K), dtype=dtype, seed=9))
            assert m.timer.calls == calls and len(m.choices) == 1
            assert_rel_close(again, reference(layer, randn((5, K), dtype=dtype, seed=9)), rel_bound(dtype, K))
            layer(randn((9, K), dtype=dtype, seed=10))  # another bucket: measured again
            assert len(m.choices) == 2 and len(m.timer.calls) == 2 * len(calls)


def test_torch_semi_structured_raising_here_is_never_chosen(named):
    layer = make_24()
    m = fake({"triton": 5.0, TORCH_SEMI_STRUCTURED: 0.01, TORCH_DENSE: 3.0})
    with measured.use_measurer(m):
        layer(randn((3, K), seed=1))
    (choice,) = m.choices.values()
    assert choice.choice == TORCH_DENSE and TORCH_SEMI_STRUCTURED in choice.errors
    assert TORCH_SEMI_STRUCTURED not in m.timer.calls and choice.times_ms[TORCH_SEMI_STRUCTURED] is None


def test_a_raising_bsr_candidate_is_never_chosen(named, monkeypatch):
    layer = make_bsr()

    def unsupported(x):
        raise RuntimeError("torch BSR: not for this dtype")

    monkeypatch.setattr(layer, "_torch_bsr", unsupported)
    m = fake({"triton": 2.0, TORCH_BSR: 0.01, TORCH_DENSE: 3.0})
    with measured.use_measurer(m):
        layer(randn((3, K), seed=1))
    (choice,) = m.choices.values()
    assert choice.choice == "triton" and "not for this dtype" in choice.errors[TORCH_BSR]


@pytest.mark.parametrize(("make", "op", "runs"), LAYERS)
def test_never_slower_than_torch_best_over_random_timings(named, make, op, runs):
    """Property: over random medians, the chosen candidate's time is the minimum over those that run,
    so at most that of every torch path (and ties go to our kernel)."""
    layer = make()
    rng = random.Random(7)
    x = randn((6, K), seed=2)
    for _ in range(25):
        times = {name: rng.choice([0.5, 1.0, 1.5, 2.0, rng.uniform(0.1, 3.0)]) for name in runs}
        times[TORCH_SEMI_STRUCTURED] = 0.0  # raises on CPU: never chosen however fast it would be
        m = fake(times)
        with measured.use_measurer(m):
            layer(x)
        (choice,) = m.choices.values()
        best_torch = min(t for name, t in times.items() if name in runs and name != "triton")
        assert times[choice.choice] <= best_torch
        assert times[choice.choice] == min(times[name] for name in runs)
        if times["triton"] == times[choice.choice]:
            assert choice.choice == "triton"


@pytest.mark.parametrize(("make", "op", "runs"), LAYERS)
def test_kernel_and_torch_modes_are_deterministic(named, make, op, runs, monkeypatch):
    layer = make()
    x = randn((5, K), seed=3)
    try:
        for mode, expected in (("kernel", None), ("torch", runs[1])):
            monkeypatch.setenv(measured.DISPATCH_ENV, mode)
            measured.reload_env()
            m = fake(dict.fromkeys(runs, 1.0))
            with measured.use_measurer(m):
                out = layer(x)
                layer(x)
            assert m.timer.calls == []  # nothing measured
            assert [c.choice for c in m.choices.values()] == ([] if expected is None else [expected])
            assert_rel_close(out, reference(layer, x), rel_bound(torch.float32, K))
    finally:
        monkeypatch.delenv(measured.DISPATCH_ENV)
        measured.reload_env()


@pytest.mark.parametrize("make", [make_24, make_bsr])
def test_the_dense_copy_is_kept_only_while_some_bucket_chooses_it(named, make):
    layer = make()
    with measured.use_measurer(fake({"triton": 1.0, TORCH_BSR: 2.0, TORCH_DENSE: 3.0})):
        layer(randn((3, K), seed=1))
    assert layer._dense_weights == {}  # built to be measured, dropped: not chosen
    m = fake({"triton": 3.0, TORCH_BSR: 2.0, TORCH_DENSE: 1.0})
    with measured.use_measurer(m):
        layer(randn((3, K), seed=1))
        assert list(layer._dense_weights) == [(torch.device("cpu"), torch.float32)]
        m.timer.times = {"triton": 1.0, TORCH_BSR: 2.0, TORCH_DENSE: 3.0}
        layer(randn((40, K), seed=2))  # another bucket picks our kernel: one bucket still uses the copy
        assert len(layer._dense_weights) == 1
    assert not any("dense" in name for name in layer.state_dict())  # a cache, never saved
    layer.to(torch.float64)
    assert layer._dense_weights == {} and layer._dense_buckets == set()


@pytest.mark.parametrize("make", [make_24, make_bsr])
def test_calls_recording_gradients_take_the_default_route_unmeasured(make):
    layer = make()
    x = randn((3, K), seed=1)
    m = fake({"triton": 9.0, TORCH_BSR: 1.0, TORCH_DENSE: 1.0})
    with dispatch.use_backend("auto"), measured.use_measurer(m), measured.use_dispatch("measure"):
        out = layer(x)
        out.sum().backward()
    assert not m.choices and layer.values.grad is not None and bool(layer.values.grad.abs().sum() > 0)


def test_under_torch_compile_the_default_route_is_traced_unmeasured(named):
    layer = make_24()
    x = randn((5, K), seed=4)
    m = fake({"triton": 9.0, TORCH_DENSE: 1.0})
    with measured.use_measurer(m):
        out = torch.compile(layer, fullgraph=True, backend="aot_eager")(x)  # no graph break in the routing
    assert not m.choices and m.timer.calls == []
    assert_rel_close(out, reference(layer, x), rel_bound(torch.float32, K))


def test_bad_input_raises_the_op_error_before_any_candidate(named):
    layer = make_24()
    m = fake({})
    with measured.use_measurer(m), pytest.raises(TypeError, match="values: expected dtype float16, got float32"):
        layer(randn((3, K), dtype=torch.float16, seed=1))  # fp32 layer, fp16 x
    with measured.use_measurer(m), pytest.raises(TypeError, match="x: expected dtype float32"):
        make_bsr()(randn((3, K), dtype=torch.float16, seed=1))
    assert not m.choices


def test_slimtorch_info_lists_the_sparse_choices(named, capsys, monkeypatch):
    cli = pytest.importorskip("slimtorch.compress.cli")
    from slimtorch.core import registry

    monkeypatch.setattr(registry, "import_all_packages", lambda: ["sparse"])
    m = fake({"triton": 2.0, TORCH_BSR: 1.5, TORCH_DENSE: 1.0})
    with measured.use_measurer(m):
        make_24()(randn((3, K), seed=1))
        make_bsr()(randn((3, K), seed=1))
        assert cli._cmd_info(None) == 0
    out = capsys.readouterr().out
    assert f"sparse24_linear [fake] 4,{N},{K},float32,relu: torch F.linear (measured; triton 2.0000 ms" in out
    assert f"slimtorch::bsr_linear [fake] 4,{N},{K},float32,relu,16,3: torch F.linear (measured" in out


@pytest.mark.gpu
@pytest.mark.parametrize("make", [make_24, make_bsr])
def test_measured_on_cuda_matches_the_reference_and_picks_the_minimum(make):
    """The real timer: every bucket's choice is its fastest median, the output the reference's."""
    layer = make(torch.float16).cuda()
    m = measured.Measurer(cache_path=None)
    with measured.use_measurer(m), measured.use_dispatch("measure"), dispatch.use_backend("auto"), torch.no_grad():
        for rows in (1, 33, 257):
            x = randn((rows, K), dtype=torch.float16, device="cuda", seed=rows)
            assert_rel_close(layer(x), reference(layer, x), rel_bound(torch.float16, K, device="cuda"))
    assert len(m.choices) == 3
    for choice in m.choices.values():
        timed = [t for t in choice.times_ms.values() if t is not None]
        assert choice.times_ms[choice.choice] == min(timed)
    assert bool(layer._dense_weights) == any(c.choice == TORCH_DENSE for c in m.choices.values())

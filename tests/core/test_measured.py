"""Dispatch by measurement (core.measured) without a GPU: fake timers injected into a Measurer,
candidates that only count their calls. GPU checks (real do_bench, the quant ops) are marked gpu."""

import json

import pytest
import torch

from slimtorch.core import dispatch, measured


class FakeTimer:
    """Median ms per candidate name, looked up through the candidate function's ``name`` attribute."""

    def __init__(self, times: dict[str, float]):
        self.times = times
        self.calls: list[str] = []

    def __call__(self, fn) -> float:
        self.calls.append(fn.name)
        value = self.times[fn.name]
        if isinstance(value, Exception):
            raise value
        return value


def candidates(calls: list[str], *names: str, raising: tuple[str, ...] = (), shape=(3, 5)) -> dict:
    """Candidates returning a (3, 5) tensor (``raising`` ones raise, as a missing torch path does)."""

    def make(name):
        def fn():
            calls.append(name)
            if name in raising:
                raise RuntimeError(f"{name}: not supported for this shape")
            return torch.zeros(shape if name != "wrong-shape" else (5, 3))

        fn.name = name
        return fn

    return {name: make(name) for name in names}


@pytest.fixture
def mode(monkeypatch):
    """Set SLIMTORCH_DISPATCH (and clear SLIMTORCH_BACKEND's kernel preference) for one test."""

    def set_mode(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(measured.DISPATCH_ENV, raising=False)
        else:
            monkeypatch.setenv(measured.DISPATCH_ENV, value)
        measured.reload_env()

    monkeypatch.setenv(dispatch.BACKEND_ENV, "auto")
    dispatch.reload_env()
    yield set_mode
    monkeypatch.undo()
    measured.reload_env()
    dispatch.reload_env()


def fake_measurer(times: dict, tmp_path=None) -> tuple[measured.Measurer, FakeTimer]:
    timer = FakeTimer(times)
    path = (lambda device: tmp_path / "dispatch.json") if tmp_path is not None else None
    return measured.Measurer(timer, path, device_tag=lambda d: "fake-gpu", measurable=lambda t: True), timer


X = torch.zeros(3, 4)
KEY = measured.gemm_key(X, 5, 4)


def test_the_faster_candidate_is_chosen_once_per_bucket(mode):
    mode(None)  # default: measure
    m, timer = fake_measurer({"triton": 2.0, "torch._int_mm": 1.0})
    calls: list[str] = []
    cands = candidates(calls, "triton", "torch._int_mm")
    for _ in range(3):
        m.run("op", KEY, cands, X)
    assert timer.calls == ["triton", "torch._int_mm"]  # each timed once, on the first call only
    assert calls[-2:] == ["torch._int_mm", "torch._int_mm"]
    (choice,) = m.choices.values()
    assert choice.choice == "torch._int_mm" and choice.times_ms == {"triton": 2.0, "torch._int_mm": 1.0}


def test_ties_go_to_our_kernel_and_the_choice_is_deterministic(mode):
    mode("measure")
    for order in (("triton", "torch"), ("triton", "torch")):
        m, _ = fake_measurer({"triton": 1.0, "torch": 1.0})
        m.run("op", KEY, candidates([], *order), X)
        assert next(iter(m.choices.values())).choice == "triton"


def test_a_raising_or_wrong_provider_is_never_chosen(mode):
    mode("measure")
    m, timer = fake_measurer({"triton": 5.0, "torch-a": 0.1, "wrong-shape": 0.1, "torch-b": 3.0})
    calls: list[str] = []
    m.run("op", KEY, candidates(calls, "triton", "torch-a", "wrong-shape", "torch-b", raising=("torch-a",)), X)
    choice = next(iter(m.choices.values()))
    assert choice.choice == "torch-b"
    assert set(choice.errors) == {"torch-a", "wrong-shape"} and "not supported" in choice.errors["torch-a"]
    assert "torch-a" not in timer.calls and "wrong-shape" not in timer.calls
    # a timer failure is an error too
    m, _ = fake_measurer({"triton": 5.0, "torch": RuntimeError("timing failed")})
    m.run("op", KEY, candidates([], "triton", "torch"), X)
    assert next(iter(m.choices.values())).choice == "triton"


def test_every_candidate_failing_is_an_error_naming_them(mode):
    mode("measure")
    m, _ = fake_measurer({})
    with pytest.raises(RuntimeError, match=r"every candidate failed: .*'triton': 'RuntimeError: triton"):
        m.run("op", KEY, candidates([], "triton", "torch", raising=("triton", "torch")), X)


def test_buckets_m_and_keeps_n_k_and_dtype_exact(mode):
    mode("measure")
    m, timer = fake_measurer({"triton": 1.0, "torch": 2.0})
    cands = candidates([], "triton", "torch")
    for rows in (17, 20, 32):  # one bucket: next power of two 32
        x = torch.zeros(rows, 4)
        m.run("op", measured.gemm_key(x, 5, 4), cands, x)
    assert len(timer.calls) == 2
    assert measured.gemm_key(torch.zeros(17, 4), 5, 4) == (32, 5, 4, "float32")
    for key in (measured.gemm_key(torch.zeros(33, 4), 5, 4), (32, 6, 4, "float32"), (32, 5, 4, "float16")):
        m.run("op", key, cands, X)
    m.run("other-op", measured.gemm_key(torch.zeros(17, 4), 5, 4), cands, X)
    assert len(timer.calls) == 2 * 5 and len(m.choices) == 5


def test_kernel_and_torch_modes_measure_nothing(mode):
    m, timer = fake_measurer({"triton": 9.0, "torch-a": 1.0, "torch-b": 0.5})
    calls: list[str] = []
    cands = candidates(calls, "triton", "torch-a", "torch-b", raising=("torch-a",))
    mode("kernel")
    m.run("op", KEY, cands, X)
    assert calls == ["triton"]
    mode("torch")
    calls.clear()
    m.run("op", KEY, cands, X)
    m.run("op", KEY, cands, X)
    assert calls == ["torch-a", "torch-b", "torch-b"]  # torch's first path that runs, then cached
    assert timer.calls == []
    mode("torch")
    calls.clear()
    only_ours = candidates(calls, "triton", "torch-a", raising=("torch-a",))
    m.run("op2", KEY, only_ours, X)
    assert calls[-1] == "triton"  # no torch path runs: our kernel
    with measured.use_dispatch("kernel"):
        assert measured.dispatch_mode() == "kernel"
    with (
        pytest.raises(ValueError, match=r"mode: expected one of \('measure', 'kernel', 'torch'\), got 'fast'"),
        measured.use_dispatch("fast"),
    ):
        pass


def test_env_flag_is_parsed_once_and_checked(mode, monkeypatch):
    mode("torch")
    monkeypatch.setenv(measured.DISPATCH_ENV, "kernel")  # not seen: parsed once
    assert measured.dispatch_mode() == "torch"
    assert measured.reload_env() == "kernel"
    monkeypatch.setenv(measured.DISPATCH_ENV, "fastest")
    with pytest.raises(ValueError, match=r"SLIMTORCH_DISPATCH: expected one of \('measure', 'kernel', 'torch'\)"):
        measured.reload_env()


def test_an_explicit_backend_preference_decides(mode):
    mode("measure")
    with dispatch.use_backend("triton"):
        assert measured.dispatch_mode() == "kernel"
    with dispatch.use_backend("torch"):
        assert measured.dispatch_mode() == "torch"
    assert measured.dispatch_mode() == "measure"


def test_cpu_and_fake_tensors_run_the_kernel_unmeasured(mode):
    mode("measure")
    timer = FakeTimer({"triton": 1.0, "torch": 0.1})
    m = measured.Measurer(timer, None)  # the default test: real CUDA tensors only
    calls: list[str] = []
    m.run("op", KEY, candidates(calls, "triton", "torch"), torch.zeros(3, 4))
    m.run("op", KEY, candidates(calls, "triton", "torch"), torch.zeros(3, 4, device="meta"))
    assert calls == ["triton", "triton"] and timer.calls == [] and not m.choices
    with pytest.raises(ValueError, match="candidates: op needs at least one"):
        m.run("op", KEY, {}, X)


def test_the_cache_file_round_trips_and_survives_corruption(mode, tmp_path):
    mode("measure")
    m, _ = fake_measurer({"triton": 1.0, "torch": 0.5}, tmp_path)
    m.run("slimtorch::w8a8_linear", KEY, candidates([], "triton", "torch"), X)
    payload = json.loads((tmp_path / "dispatch.json").read_text())
    assert payload["version"] == measured.FILE_VERSION
    assert payload["entries"] == [
        {"op": "slimtorch::w8a8_linear", "key": "4,5,4,float32", "choice": "torch",
         "times_ms": {"triton": 1.0, "torch": 0.5}, "errors": {}}
    ]  # fmt: skip
    # a new process (measurer) reads the choice instead of measuring
    fresh, fresh_timer = fake_measurer({"triton": 1.0, "torch": 0.5}, tmp_path)
    calls: list[str] = []
    fresh.run("slimtorch::w8a8_linear", KEY, candidates(calls, "triton", "torch"), X)
    assert calls == ["torch"] and fresh_timer.calls == []
    assert any("w8a8_linear [fake-gpu] 4,5,4,float32: torch" in line for line in fresh.describe())
    # an unreadable or malformed file is ignored (measured again and rewritten)
    (tmp_path / "dispatch.json").write_text("{not json")
    again, again_timer = fake_measurer({"triton": 1.0, "torch": 0.5}, tmp_path)
    again.run("slimtorch::w8a8_linear", KEY, candidates([], "triton", "torch"), X)
    assert len(again_timer.calls) == 2 and json.loads((tmp_path / "dispatch.json").read_text())["entries"]


def test_cache_dir_and_opt_out(monkeypatch, tmp_path):
    monkeypatch.setenv("SLIMTORCH_CACHE_DIR", str(tmp_path))
    path = measured.default_cache_path("cpu")
    assert path.parent == tmp_path and path.name.startswith("dispatch-") and f"torch{torch.__version__}" in path.name
    monkeypatch.setenv(measured.CACHE_ENV, "0")
    assert measured.default_cache_path("cpu") is None


def test_describe_names_the_mode(mode):
    mode("kernel")
    m, _ = fake_measurer({"triton": 1.0, "torch": 2.0})
    with measured.use_measurer(m):
        lines = measured.describe()
    assert lines[0].startswith("dispatch by measurement: kernel (SLIMTORCH_DISPATCH=measure|kernel|torch")


@pytest.mark.gpu
def test_real_timer_on_cuda(mode, tmp_path):
    mode("measure")
    m = measured.Measurer(cache_path=lambda device: tmp_path / "dispatch.json")
    a = torch.randn(256, 512, device="cuda", dtype=torch.float16)
    b = torch.randn(512, 512, device="cuda", dtype=torch.float16)
    slow = lambda: torch.stack([a @ b for _ in range(8)]).sum(0)  # the same product, 8x the work
    out = m.run("test::mm", measured.gemm_key(a, 512, 512), {"ours": slow, "torch": lambda: a @ b}, a)
    assert out.shape == (256, 512)
    choice = next(iter(m.choices.values()))
    assert choice.choice == "torch" and choice.times_ms["ours"] > choice.times_ms["torch"] > 0


def test_a_candidate_that_computes_something_else_is_never_chosen(mode):
    """The fastest candidate returns other numbers (a torch operand laid out wrong): it is rejected at its
    trial call and the error recorded; one that differs only by rounding (1e-3) stays eligible."""
    mode("measure")
    ref = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    outs = {"triton": ref, "torch wrong layout": ref.flip(1), "torch rounded": ref * (1 + 1e-3)}
    outs["torch nan"] = ref.clone()
    outs["torch nan"][1, 2] = float("nan")

    def make(name):
        def fn():
            return outs[name].clone()

        fn.name = name
        return fn

    m, _ = fake_measurer({"triton": 3.0, "torch wrong layout": 1.0, "torch nan": 1.0, "torch rounded": 2.0})
    cands = {name: make(name) for name in outs}
    out = m.run("op", KEY, cands, X)
    (choice,) = m.choices.values()
    assert choice.choice == "torch rounded" and torch.equal(out, outs["torch rounded"])
    assert "relative difference" in choice.errors["torch wrong layout"]
    assert "non-finite" in choice.errors["torch nan"]
    with pytest.raises(ValueError, match="relative difference"):
        measured._check_agreement(ref * 1.2, ref, "triton")

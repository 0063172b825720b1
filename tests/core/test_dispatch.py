import pytest
import torch

from slimtorch.core import dispatch


@pytest.fixture
def env(monkeypatch):
    """Set SLIMTORCH_BACKEND (and TRITON_INTERPRET) for one test; parsed again on entry and exit."""

    def set_env(backend: str | None, interpret: str = "1") -> None:
        if backend is None:
            monkeypatch.delenv(dispatch.BACKEND_ENV, raising=False)
        else:
            monkeypatch.setenv(dispatch.BACKEND_ENV, backend)
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
        dispatch.reload_env()

    yield set_env
    monkeypatch.undo()
    dispatch.reload_env()


def test_auto_runs_the_reference_on_cpu_tensors(env):
    env(None)
    x = torch.zeros(3)
    assert dispatch.choose_backend(None, ("triton",), x) == "reference"
    assert dispatch.choose_backend("auto", ("triton", "cuda"), x) == "reference"
    assert not dispatch.use_kernel("triton", x)
    assert not dispatch.use_kernel("cuda", x, [x, 3], "name")


def test_env_var_triton_runs_the_interpreter_on_cpu(env):
    env("triton")
    assert dispatch.use_kernel("triton", torch.zeros(2))
    # CUDA-C kernels cannot be interpreted: the reference serves CPU tensors.
    assert not dispatch.use_kernel("cuda", torch.zeros(2))
    env("triton", interpret="0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        dispatch.use_kernel("triton", torch.zeros(2))


def test_env_var_is_parsed_once_until_reloaded(env, monkeypatch):
    env("reference")
    monkeypatch.setenv(dispatch.BACKEND_ENV, "triton")  # not seen: parsed once
    assert dispatch.preferred_backend() == "reference"
    assert dispatch.reload_env() == "triton"
    monkeypatch.setenv(dispatch.BACKEND_ENV, "opencl")
    with pytest.raises(ValueError, match=r"SLIMTORCH_BACKEND: expected one of \('auto', 'triton', 'cuda', 'torch', "):
        dispatch.reload_env()


def test_argument_beats_the_env_preference_and_reference_beats_everything(env):
    env("triton")
    x = torch.zeros(2)
    assert dispatch.choose_backend("auto", ("triton", "cuda"), x) == "triton"
    assert dispatch.choose_backend("reference", ("triton",), x) == "reference"
    with pytest.raises(ValueError, match=r"backend: 'cuda' runs on CUDA tensors only, got inputs on CPU"):
        dispatch.choose_backend("cuda", ("triton", "cuda"), x)
    # a preference the op does not have: its default (the reference on CPU)
    env("torch")
    assert dispatch.choose_backend(None, ("triton", "cuda"), x) == "reference"
    env("reference")
    assert dispatch.choose_backend("triton", ("triton",), x) == "reference"
    env("triton")
    with dispatch.reference_only():
        assert not dispatch.use_kernel("triton", x)
    assert dispatch.use_kernel("triton", x)
    with dispatch.use_backend("auto"):
        assert not dispatch.use_kernel("triton", x)


def test_unknown_or_missing_backends_are_named():
    with pytest.raises(
        ValueError, match=r"backend: expected one of \('auto', 'triton', 'cuda', 'torch', 'reference'\)"
    ):
        dispatch.choose_backend("opencl", ("triton",), torch.zeros(1))
    with pytest.raises(ValueError, match=r"backend: integer_shift has no 'torch' kernel; expected one of"):
        dispatch.check_backend("torch", ("triton", "cuda"), "integer_shift")
    with pytest.raises(ValueError, match=r"kind: expected one of"):
        dispatch.use_kernel("opencl", torch.zeros(1))
    with pytest.raises(ValueError, match=r"backend: expected one of"), dispatch.use_backend("fast"):
        pass


def test_cuda_backend_without_cupy_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name.startswith("cupy"):
            raise ImportError("No module named 'cupy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    from slimtorch.core.cuda import require_cupy

    with pytest.raises(
        ImportError, match=r"needs CuPy, which is the optional \[cuda\] extra: pip install 'slimtorch-sparse\[cuda\]'"
    ):
        require_cupy()


def test_layers_take_the_backend_rule(env):
    from torch import nn

    from slimtorch.convops import Shift2d
    from slimtorch.sparse import SparseLinear24

    with pytest.raises(ValueError, match=r"backend: SparseLinear24 has no 'opencl'|backend: expected one of"):
        SparseLinear24.from_dense(nn.Linear(8, 4), backend="opencl")
    with pytest.raises(ValueError, match=r"backend: Shift2d has no 'torch' kernel"):
        Shift2d(8, backend="torch")
    env(None)
    layer = SparseLinear24.from_dense(nn.Linear(8, 4), backend="cuda")
    with pytest.raises(ValueError, match=r"backend: 'cuda' runs on CUDA tensors only"):
        layer(torch.zeros(2, 8))


@pytest.mark.gpu
def test_cuda_tensor_selects_kernel():
    assert dispatch.use_kernel("cuda", torch.zeros(1, device="cuda"))
    assert dispatch.use_kernel("triton", torch.zeros(1), [torch.zeros(1, device="cuda")])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8, torch.int32, torch.uint8, torch.bool])
def test_empty_output_is_poisoned_when_asked(monkeypatch, dtype):
    monkeypatch.setenv("SLIMTORCH_POISON_OUTPUTS", "1")
    out = dispatch.empty_output((3, 4), dtype=dtype, device="cpu")
    assert out.shape == (3, 4) and out.dtype == dtype
    if dtype.is_floating_point:
        assert bool(out.isnan().all())
    elif dtype == torch.bool:
        assert bool(out.all())
    else:
        assert bool((out == torch.iinfo(dtype).min).all())


def test_autotune_configs_keeps_first_in_interpreter(monkeypatch):
    import triton

    from slimtorch.core.tuning import autotune_configs

    configs = [triton.Config({"BLOCK": 64}), triton.Config({"BLOCK": 128})]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert autotune_configs(configs) == configs[:1]
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert autotune_configs(configs) == configs
    with pytest.raises(ValueError, match="at least one"):
        autotune_configs([])

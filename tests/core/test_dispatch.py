import pytest
import torch

from slimtorch.core import dispatch


def test_cpu_tensors_use_reference_unless_forced(monkeypatch):
    monkeypatch.delenv("SLIMTORCH_FORCE_TRITON", raising=False)
    x = torch.zeros(3)
    assert not dispatch.use_kernel("triton", x)
    assert not dispatch.use_kernel("cuda", x, [x, 3], "name")


def test_force_triton_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("SLIMTORCH_FORCE_TRITON", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.use_kernel("triton", torch.zeros(2))
    # CUDA-C kernels cannot be interpreted: the reference serves CPU tensors.
    assert not dispatch.use_kernel("cuda", torch.zeros(2))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        dispatch.use_kernel("triton", torch.zeros(2))


def test_reference_only_overrides_everything(monkeypatch):
    monkeypatch.setenv("SLIMTORCH_FORCE_TRITON", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with dispatch.reference_only():
        assert not dispatch.use_kernel("triton", torch.zeros(2))
    assert dispatch.use_kernel("triton", torch.zeros(2))
    monkeypatch.setenv("SLIMTORCH_REFERENCE_ONLY", "1")
    assert not dispatch.use_kernel("triton", torch.zeros(2))


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend: expected one of \('triton', 'cuda'\), got 'opencl'"):
        dispatch.use_kernel("opencl", torch.zeros(1))


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

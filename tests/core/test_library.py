"""kernel_op end to end with a small Triton kernel: dispatch, checks, fake, torch.compile, opcheck."""

import pytest
import torch
import triton
import triton.language as tl
from torch import Tensor

from slimtorch.core import check_same_device, check_tensor, empty_output, kernel_op, reference_only
from slimtorch.core.testing import assert_rel_close, randn, rel_bound

CALLS = {"launcher": 0}


@triton.jit
def _scale_add_kernel(x_ptr, y_ptr, out_ptr, n, alpha, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask).to(tl.float32)
    tl.store(out_ptr + offs, (alpha * x + y).to(out_ptr.dtype.element_ty), mask=mask)


def _check_scale_add(x: Tensor, y: Tensor, alpha: float) -> None:
    dims: dict[str, int] = {}
    check_tensor(x, "x", ndim=1, shape=("N",), dims=dims, dtype=(torch.float16, torch.float32))
    check_tensor(y, "y", shape=("N",), dims=dims, dtype=x.dtype)
    check_same_device(x=x, y=y)


@kernel_op("slimtorch_tests::scale_add", reference="scale_add_reference", check=_check_scale_add)
def scale_add(x: Tensor, y: Tensor, alpha: float) -> Tensor:
    CALLS["launcher"] += 1
    x, y = x.contiguous(), y.contiguous()
    out = empty_output(x.shape, dtype=x.dtype, device=x.device)
    block = 64
    _scale_add_kernel[(triton.cdiv(x.numel(), block),)](x, y, out, x.numel(), alpha, BLOCK=block)
    return out


def scale_add_reference(x: Tensor, y: Tensor, alpha: float) -> Tensor:
    return (alpha * x.float() + y.float()).to(x.dtype)


@pytest.mark.parametrize("n", [1, 63, 65, 193])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_matches_reference(device, n, dtype):
    x, y = randn((n,), dtype=dtype, device=device), randn((n,), dtype=dtype, device=device)
    before = CALLS["launcher"]
    out = scale_add(x, y, 1.5)
    assert CALLS["launcher"] == before + 1, "the Triton kernel should have run (GPU or interpreter)"
    ref = scale_add_reference(x.double(), y.double(), 1.5)
    assert_rel_close(out, ref, rel_bound(dtype, 2, device=device))  # alpha·x + y: two terms


def test_reference_only_skips_the_launcher(device):
    x = randn((9,), device=device)
    before = CALLS["launcher"]
    with reference_only():
        out = scale_add(x, x, 2.0)
    assert CALLS["launcher"] == before
    assert_rel_close(out, 3 * x, 1e-6)


def test_check_runs_on_every_path():
    with pytest.raises(ValueError, match=r"y: expected shape \(N\) with N=5"):
        scale_add(torch.zeros(5), torch.zeros(6), 1.0)
    with pytest.raises(TypeError, match=r"x: expected dtype one of \(float16, float32\), got int32"):
        scale_add(torch.zeros(5, dtype=torch.int32), torch.zeros(5, dtype=torch.int32), 1.0)
    with reference_only(), pytest.raises(TypeError, match=r"y: expected dtype float32"):
        scale_add(torch.zeros(5), torch.zeros(5, dtype=torch.float16), 1.0)


def test_fake_impl_gives_shape_on_meta():
    out = scale_add(torch.empty(11, device="meta"), torch.empty(11, device="meta"), 1.0)
    assert out.device.type == "meta" and out.shape == (11,)


def test_compiles_fullgraph(device):
    x, y = randn((37,), device=device), randn((37,), device=device)
    fn = torch.compile(lambda a, b: scale_add(a, b, 0.5) * 2, fullgraph=True, backend="aot_eager")
    assert_rel_close(fn(x, y), (0.5 * x.double() + y.double()) * 2, rel_bound(torch.float32, 2, device=device))


def test_opcheck(device):
    x, y = randn((21,), device=device), randn((21,), device=device)
    torch.library.opcheck(scale_add, (x, y, 0.25), test_utils=("test_schema", "test_faketensor"))


def test_qualname_must_have_namespace():
    with pytest.raises(ValueError, match="namespace::name"):
        kernel_op("no_namespace", reference=scale_add_reference)


def test_missing_reference_is_named():
    @kernel_op("slimtorch_tests::no_ref", reference="does_not_exist")
    def no_ref(x: Tensor) -> Tensor:
        return x.clone()

    with (
        reference_only(),
        pytest.raises(AttributeError, match="no reference function 'does_not_exist'"),
    ):
        no_ref(torch.zeros(1))


def _dispatched(fn) -> bool:
    """Whether ``fn()`` went through the dispatcher as the custom op (the profiler records it)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return any(event.name == "slimtorch_tests::scale_add" for event in prof.events())


def test_eager_reference_call_skips_the_dispatcher(device):
    x, y = randn((13,)), randn((13,))
    with reference_only():
        with torch.inference_mode():
            assert not _dispatched(lambda: scale_add(x, y, 2.0))
            assert_rel_close(scale_add(x, y, 2.0), scale_add_reference(x.double(), y.double(), 2.0), 1e-7)
            with pytest.raises(ValueError, match=r"y: expected shape \(N\) with N=13"):
                scale_add(x, randn((12,)), 1.0)  # the shortcut still checks
        traced = torch.fx.symbolic_trace(lambda a, b: scale_add(a, b, 2.0))  # a tracer records the op itself
        assert any(node.target is torch.ops.slimtorch_tests.scale_add.default for node in traced.graph.nodes)
        leaf = x.clone().requires_grad_()
        assert _dispatched(lambda: scale_add(leaf, y, 2.0))  # a gradient to record: the op (and its autograd)
    x, y = x.to(device), y.to(device)
    assert _dispatched(lambda: scale_add(x, y, 2.0))  # the kernel path (GPU or interpreter) is the op's

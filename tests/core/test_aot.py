"""slimtorch.core.aot: kernels compile to sm_80/sm_90 cubins without a GPU; failures are named."""

from pathlib import Path

import pytest

from slimtorch.core import aot

SPECS = Path(__file__).with_name("aot_specs.py")


@pytest.mark.parametrize("arch", [80, 90])
def test_core_test_kernels_compile(arch):
    summary = aot.check_compiles(SPECS, arch=arch)
    assert summary.startswith("compiled 11 kernel specialisations") and f"sm_{arch}" in summary


def test_broken_kernel_is_named(tmp_path):
    broken = tmp_path / "broken_specs.py"
    broken.write_text(
        "import triton, triton.language as tl\n"
        "from slimtorch.core.aot import KernelSpec\n"
        "@triton.jit\n"
        "def _bad(x_ptr, BLOCK: tl.constexpr):\n"
        "    tl.store(x_ptr + tl.arange(0, BLOCK), 1.0)\n"  # BLOCK=48 is not a power of two
        "def aot_specs(quick):\n"
        "    yield KernelSpec('bad block', _bad, {'x_ptr': '*fp32'}, {'BLOCK': 48})\n"
    )
    with pytest.raises(AssertionError, match=r"bad block failed to compile for sm_90"):
        aot.check_compiles(broken)


def test_unknown_constexpr_is_named(tmp_path):
    specs = tmp_path / "typo_specs.py"
    specs.write_text(
        "import triton, triton.language as tl\n"
        "from slimtorch.core.aot import KernelSpec\n"
        "@triton.jit\n"
        "def _k(x_ptr, BLOCK: tl.constexpr):\n"
        "    tl.store(x_ptr + tl.arange(0, BLOCK), 1.0)\n"
        "def aot_specs(quick):\n"
        "    yield KernelSpec('typo', _k, {'x_ptr': '*fp32'}, {'BLOCK': 64, 'BLOK': 1})\n"
    )
    with pytest.raises(AssertionError, match=r"\['BLOK'\] are not arguments of _k"):
        aot.check_compiles(specs)


def test_interpreted_kernels_are_refused():
    with pytest.raises(TypeError, match="TRITON_INTERPRET must be unset"):
        aot._jit_function(object())


_UNIT_STRIDE_KERNEL = (
    "import torch, triton, triton.language as tl\n"
    "from slimtorch.core.aot import KernelSpec, captured_specs\n"
    "@triton.jit\n"
    "def _k(x_ptr, stride, BLOCK: tl.constexpr):\n"
    "    tl.static_assert(stride == 1)\n"  # compiles only when stride is the constant 1
    "    tl.store(x_ptr + tl.arange(0, BLOCK) * stride, 1.0)\n"
)


def test_ints_equal_to_one_are_constants_as_at_run_time(tmp_path):
    specs = tmp_path / "ones_specs.py"
    specs.write_text(
        _UNIT_STRIDE_KERNEL + "def aot_specs(quick):\n"
        "    yield KernelSpec('unit stride', _k, {'x_ptr': '*fp32'}, {'BLOCK': 64}, ones=('stride',))\n"
        "    x = lambda: _k[(1,)](torch.empty(64, device='cuda'), 1, BLOCK=64)\n"  # fake device
        "    yield from captured_specs('captured', x, quick)\n"
    )
    assert aot.check_compiles(specs).startswith("compiled 2 kernel specialisations")


def test_a_stride_that_is_not_one_stays_a_runtime_argument(tmp_path):
    specs = tmp_path / "strided_specs.py"
    specs.write_text(
        _UNIT_STRIDE_KERNEL + "def aot_specs(quick):\n"
        "    x = lambda: _k[(1,)](torch.empty(128, device='cuda'), 2, BLOCK=64)\n"
        "    yield from captured_specs('strided', x, quick)\n"
    )
    with pytest.raises(AssertionError, match="strided _k failed to compile"):
        aot.check_compiles(specs)

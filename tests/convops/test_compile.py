"""Every Triton kernel of slimtorch.convops compiles for sm_90 (Triton's compiler + ptxas, no GPU
needed): the interpreter accepts programs that the compiler rejects."""

from pathlib import Path

from slimtorch.core.aot import check_compiles


def test_triton_kernels_compile_for_sm90():
    assert check_compiles(Path(__file__).with_name("aot_specs.py"), arch=90).startswith("compiled 12 ")

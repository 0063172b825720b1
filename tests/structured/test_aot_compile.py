"""Every Triton kernel of slimtorch.structured compiles for sm_90 without a GPU (Triton's compiler and
bundled ptxas): the interpreter accepts programs the compiler rejects."""

from pathlib import Path

from slimtorch.core.aot import check_compiles


def test_every_kernel_compiles_for_sm90():
    assert check_compiles(Path(__file__).with_name("aot_specs.py"), arch=90).startswith("compiled 19 ")

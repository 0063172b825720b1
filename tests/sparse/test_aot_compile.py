"""Every Triton kernel of slimtorch.sparse compiles for sm_90 (Triton's compiler + ptxas, no GPU
needed): the interpreter alone would miss what only the compiler rejects."""

from pathlib import Path

from slimtorch.core.aot import check_compiles


def test_triton_kernels_compile_for_sm90():
    summary = check_compiles(Path(__file__).with_name("aot_specs.py"), arch=90)
    assert summary.startswith("compiled ")

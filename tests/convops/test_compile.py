"""Every Triton kernel compiles for sm_90 (H100) ahead of time, no GPU needed: the interpreter
accepts programs that the compiler rejects. Runs in a subprocess without TRITON_INTERPRET (the
kernels must be decorated in compile mode)."""

import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from slimtorch.convops import depthwise, pointwise, shuffle

GEOMETRY = dict(KH=3, KW=3, SH=2, SW=1, DH=1, DW=2)


def compile_kernel(kernel, pointers, constexprs):
    fn = kernel.fn  # the JITFunction under the autotuner
    signature = {
        name: "constexpr" if name in constexprs else pointers.get(name, "i32") for name in fn.arg_names
    }
    constants = {(fn.arg_names.index(k),): v for k, v in constexprs.items()}
    triton.compile(ASTSource(fn, signature, constexprs=constants), target=GPUTarget("cuda", 90, 32))


def io(dtype, *names, int32=("off_ptr",), fp32=("ws_ptr",)):
    return {n: "*i32" if n in int32 else "*fp32" if n in fp32 else f"*{dtype}" for n in names}


compile_kernel(
    depthwise._depthwise_fwd_kernel,
    io("fp16", "x_ptr", "w_ptr", "scale_ptr", "shift_ptr", "off_ptr", "y_ptr"),
    dict(GEOMETRY, MULT=2, HAS_WEIGHT=True, HAS_SCALE=True, HAS_SHIFT=True, HAS_OFFSETS=True,
         ACTIVATION="hardswish", BLOCK_P=32, BLOCK_C=64),
)
compile_kernel(
    depthwise._depthwise_grad_input_kernel,
    io("bf16", "g_ptr", "w_ptr", "off_ptr", "dx_ptr"),
    dict(GEOMETRY, MULT=2, HAS_WEIGHT=True, HAS_OFFSETS=True, BLOCK_P=128, BLOCK_C=8),
)
compile_kernel(
    depthwise._depthwise_grad_weight_kernel,
    io("fp32", "x_ptr", "g_ptr", "off_ptr", "ws_ptr"),
    dict(GEOMETRY, MULT=1, HAS_OFFSETS=True, TAPS=16, BLOCK_P=64, BLOCK_C=32),
)
compile_kernel(
    pointwise._pointwise_fwd_kernel,
    io("bf16", "x_ptr", "w_ptr", "scale_ptr", "shift_ptr", "off_ptr", "y_ptr"),
    dict(STRIDE=2, IN_SHUFFLE=True, OUT_SHUFFLE=True, HAS_OFFSETS=True, HAS_SCALE=True, HAS_SHIFT=True,
         ACTIVATION="silu", UPCAST_DOT=False, BLOCK_M=128, BLOCK_N=64, BLOCK_K=32),
)
compile_kernel(
    pointwise._pointwise_grad_weight_kernel,
    io("fp16", "x_ptr", "g_ptr", "off_ptr", "ws_ptr"),
    dict(STRIDE=1, IN_SHUFFLE=True, HAS_OFFSETS=True, UPCAST_DOT=False, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64),
)
compile_kernel(
    shuffle._channel_gather_kernel, io("fp16", "a_ptr", "b_ptr", "y_ptr"), dict(HAS_B=True, BLOCK_P=16, BLOCK_C=128)
)
print("compiled", triton.__version__)
"""


@pytest.mark.slow
def test_triton_kernels_compile_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SLIMTORCH_FORCE_TRITON")}
    env.update(TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="1")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-4000:]

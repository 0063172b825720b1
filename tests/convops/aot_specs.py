"""Every Triton kernel of slimtorch.convops as AOT specialisations (see slimtorch.core.aot)."""

from slimtorch.convops import depthwise, pointwise, shuffle
from slimtorch.core.aot import KernelSpec

GEOMETRY = dict(KH=3, KW=3, SH=2, SW=1, DH=1, DW=2)


def io(dtype, *names, int32=("off_ptr",), fp32=("ws_ptr",)):
    return {n: "*i32" if n in int32 else "*fp32" if n in fp32 else f"*{dtype}" for n in names}


def aot_specs(quick: bool):
    dtypes = ("fp16", "bf16") if quick else ("fp16", "bf16", "fp32")
    for dtype in dtypes:
        yield KernelSpec(
            f"depthwise fwd {dtype}",
            depthwise._depthwise_fwd_kernel,
            io(dtype, "x_ptr", "w_ptr", "scale_ptr", "shift_ptr", "off_ptr", "y_ptr"),
            dict(
                GEOMETRY,
                MULT=2,
                HAS_WEIGHT=True,
                HAS_SCALE=True,
                HAS_SHIFT=True,
                HAS_OFFSETS=True,
                ACTIVATION="hardswish",
                BLOCK_P=32,
                BLOCK_C=64,
            ),
        )
        yield KernelSpec(
            f"depthwise grad input {dtype}",
            depthwise._depthwise_grad_input_kernel,
            io(dtype, "g_ptr", "w_ptr", "off_ptr", "dx_ptr"),
            dict(GEOMETRY, MULT=2, HAS_WEIGHT=True, HAS_OFFSETS=True, BLOCK_P=128, BLOCK_C=8),
        )
        yield KernelSpec(
            f"depthwise grad weight {dtype}",
            depthwise._depthwise_grad_weight_kernel,
            io(dtype, "x_ptr", "g_ptr", "off_ptr", "ws_ptr"),
            dict(GEOMETRY, MULT=1, HAS_OFFSETS=True, TAPS=16, BLOCK_P=64, BLOCK_C=32),
        )
        yield KernelSpec(
            f"pointwise fwd {dtype}",
            pointwise._pointwise_fwd_kernel,
            io(dtype, "x_ptr", "w_ptr", "scale_ptr", "shift_ptr", "off_ptr", "y_ptr"),
            dict(
                STRIDE=2,
                IN_SHUFFLE=True,
                OUT_SHUFFLE=True,
                HAS_OFFSETS=True,
                HAS_SCALE=True,
                HAS_SHIFT=True,
                ACTIVATION="silu",
                UPCAST_DOT=False,
                BLOCK_M=128,
                BLOCK_N=64,
                BLOCK_K=32,
            ),
        )
        yield KernelSpec(
            f"pointwise grad weight {dtype}",
            pointwise._pointwise_grad_weight_kernel,
            io(dtype, "x_ptr", "g_ptr", "off_ptr", "ws_ptr"),
            dict(STRIDE=1, IN_SHUFFLE=True, HAS_OFFSETS=True, UPCAST_DOT=False, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64),
        )
        yield KernelSpec(
            f"channel gather {dtype}",
            shuffle._channel_gather_kernel,
            io(dtype, "a_ptr", "b_ptr", "y_ptr"),
            dict(HAS_B=True, BLOCK_P=16, BLOCK_C=128),
        )

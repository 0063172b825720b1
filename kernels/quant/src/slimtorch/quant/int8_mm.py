"""int8 weight-only GEMM: ``y = x · (q · s)ᵀ (+ bias)`` for fp16/bf16/fp32 activations.

Weights (:func:`slimtorch.quant.formats.quantize_int8`): ``qweight (N, K) int8`` in [−127, 127],
K contiguous, and per-output-channel ``scale (N,)``. M ≤ ``dequant_gemv.GEMV_MAX_M["int8"]`` (decode) runs
the CUDA-core GEMV (:mod:`slimtorch.quant.dequant_gemv`: 16 k per 16-byte load, one ``I2F`` and one FMA
per weight, no shared memory); larger M the tile kernel (``dequant_mm``, FORMAT "int8"), which
feeds q to the tensor cores unscaled (integers ≤ 127 are exact in fp16 and bf16). Both multiply
the fp32 sum by s_n once in the epilogue: y[m, n] = s_n · Σ_k x[m, k] q[n, k] + b[n].
Half the weight bytes of fp16, so at batch 1 (memory-bound) up to 2x faster than an fp16 GEMV.
"""

from typing import Optional

import torch

from slimtorch.core import measured
from slimtorch.core.checks import check_tensor
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import compute_dtype, linear_reference
from slimtorch.quant.dequant_gemv import GEMV_MAX_M, launch_dequant_gemv
from slimtorch.quant.dequant_mm import (
    check_activation,
    check_bias,
    check_channel_vector,
    check_devices,
    launch_dequant_mm,
)
from slimtorch.quant.formats import dequantize_int8


def check_int8_weight_args(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    bias: Optional[torch.Tensor],
    scale_name: str = "scale",
) -> None:
    """x (M, K) float, qweight (N, K) int8 contiguous, a per-channel scale (N,), bias (N,) or None."""
    _, k = check_activation(x)
    check_tensor(qweight, "qweight", ndim=2, dtype=torch.int8, contiguous=True)
    n = qweight.shape[0]
    check_tensor(qweight, "qweight", shape=(n, k))
    check_channel_vector(scale, scale_name, n)
    check_bias(bias, n)
    check_devices(x, qweight=qweight, bias=bias, **{scale_name: scale})


def _check_int8_weight_mm(
    x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> None:
    check_int8_weight_args(x, qweight, scale, bias)


def launch_int8_weight_mm(
    x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Our kernel (``int8_weight_mm.launcher``): the GEMV for M <= GEMV_MAX_M["int8"], else the tile kernel."""
    if x.shape[0] <= GEMV_MAX_M["int8"]:
        return launch_dequant_gemv(x, "int8", 8, qweight, scale, None, bias, qweight.shape[0])
    return launch_dequant_mm(x, "int8", 8, qweight, scale, None, bias, qweight.shape[0])


def _torch_paths(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor]) -> dict:
    """torch's ways to the same product, for dispatch by measurement: its int8 weight-only GEMM
    (``torch._weight_int8pack_mm``, where this torch has it for CUDA) and dequantize + cuBLAS."""

    def int8pack() -> torch.Tensor:
        y = torch._weight_int8pack_mm(x, qweight, scale.to(x.dtype))
        return y if bias is None else y + bias.to(x.dtype)

    decode = measured.decode_linear(x, lambda dtype: dequantize_int8(qweight, scale, dtype), bias)
    return {"torch._weight_int8pack_mm": int8pack, measured.DECODE_LINEAR: decode}


@kernel_op(
    "slimtorch::int8_weight_mm", reference="int8_weight_mm_reference", check=_check_int8_weight_mm, row_input="x"
)
def int8_weight_mm(
    x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """x (M, K) · dequant(qweight (N, K), scale (N,))ᵀ + bias (N,) → (M, N) in x's dtype. On CUDA, our
    kernel or torch's path, whichever measured faster for this shape bucket (core.measured)."""
    candidates = {
        "triton": lambda: launch_int8_weight_mm(x, qweight, scale, bias),
        **_torch_paths(x, qweight, scale, bias),
    }
    return measured.run("slimtorch::int8_weight_mm", measured.gemm_key(x, qweight.shape[0], x.shape[1]), candidates, x)


int8_weight_mm.launcher = launch_int8_weight_mm  # benchmarks and the static report time our kernel itself


def int8_weight_mm_reference(
    x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    return linear_reference(x, dequantize_int8(qweight, scale, dtype=compute_dtype(x.dtype)), bias)

"""int4 group-wise weight-only GEMM: ``y = x · ((q − zero) · scale)ᵀ (+ bias)``.

Weights (:func:`slimtorch.quant.formats.quantize_int4`, or GPTQ checkpoints through
:func:`~slimtorch.quant.formats.from_gptq`): ``qweight (K/8, N) int32`` (8 codes along K per word,
lowest nibble first: GPTQ's layout), ``scale (K/G, N)`` and ``zero (K/G, N) uint8`` per group of G
consecutive k (K here is K_pad = ceil(K / G) · G when G does not divide x's K: zero weights in the
padded columns, which the kernel masks like any K tail, so x keeps its true K). The kernel
(``dequant_mm``, FORMAT "int4") loads a (BLOCK_K/8, BLOCK_N) block of words, unpacks the nibbles in
registers, gathers the group's scale and zero per element and feeds (q − zero) · scale in the
activation dtype to ``tl.dot``. A quarter of fp16's weight bytes: the batch-1 GEMV is up to ~4x
faster than fp16 when memory-bound (Marlin reaches ~3.9x on Ampere).
"""

from typing import Optional

import torch

from slimtorch.core.checks import check_tensor
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import compute_dtype, linear_reference
from slimtorch.quant.dequant_mm import (
    SCALE_DTYPES,
    check_activation,
    check_bias,
    check_devices,
    launch_dequant_mm,
)
from slimtorch.quant.formats import check_group_size, dequantize_int4, padded_k


def _check_int4_weight_mm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    bias: Optional[torch.Tensor] = None,
) -> None:
    _, k = check_activation(x)
    check_group_size(k, group_size)
    k_pad = padded_k(k, group_size)  # the layout pads K to the group size (formats module doc)
    check_tensor(qweight, "qweight", ndim=2, dtype=torch.int32, contiguous=True)
    n = qweight.shape[1]
    check_tensor(qweight, "qweight", shape=(k_pad // 8, n))
    check_tensor(scale, "scale", shape=(k_pad // group_size, n), dtype=SCALE_DTYPES, contiguous=True)
    check_tensor(zero, "zero", shape=(k_pad // group_size, n), dtype=torch.uint8, contiguous=True)
    check_bias(bias, n)
    check_devices(x, qweight=qweight, scale=scale, zero=zero, bias=bias)


@kernel_op(
    "slimtorch::int4_weight_mm", reference="int4_weight_mm_reference", check=_check_int4_weight_mm, row_input="x"
)
def int4_weight_mm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """x (M, K) · dequant(qweight (K/8, N), scale, zero (K/G, N))ᵀ + bias → (M, N) in x's dtype."""
    return launch_dequant_mm(x, "int4", 4, qweight, scale, zero, bias, qweight.shape[1], group_size)


def int4_weight_mm_reference(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    group_size: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    w = dequantize_int4(qweight, scale, zero, group_size, dtype=compute_dtype(x.dtype), k=x.shape[-1])
    return linear_reference(x, w, bias)

"""1-bit (binary) and 2-bit (ternary) weight GEMM for the memory-bound regime (BitNet-style).

Weights (:func:`slimtorch.quant.formats.quantize_binary` / ``quantize_ternary``): codes packed
along K into ``qweight (ceil(K / P), N) int32`` (P = 32 for 1 bit, 16 for 2 bits; the last word
padded with code 0), with per-output-channel values ``pos_scale (N,)`` and ``neg_scale (N,)``:

    1 bit   t = 2c − 1 ∈ {−1, +1}           (BWN / XNOR-Net weights: pos = neg = α_n)
    2 bits  t = (c ^ 2) − 2 ∈ {−1, 0, +1}   (two's complement; TWN: pos = neg, TTQ: pos ≠ neg)
    W[n, k] = pos_n if t = +1, −neg_n if t = −1, 0 if t = 0

M ≤ ``dequant_gemv.GEMV_MAX_M["lowbit"]`` runs the CUDA-core GEMV (:mod:`slimtorch.quant.dequant_gemv`:
per-lane sums of x over the +1 and the −1 codes, pos/neg applied once after the K loop); larger M the
tile kernel (``dequant_mm``, FORMAT "lowbit"), which loads each word once, expands its P codes in
registers, selects ±scale and feeds the tile to ``tl.dot``. 16x (1 bit) or 8x (2 bits) fewer
weight bytes than fp16. On CUDA the op runs our kernel or dequantize + ``F.linear``, whichever
measured faster for the shape bucket (:mod:`slimtorch.core.measured`).
"""

from typing import Optional

import torch

from slimtorch.core import measured
from slimtorch.core.checks import check_choice, check_tensor
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
from slimtorch.quant.formats import dequantize_lowbit, words_per_column


def check_packed_codes(x: torch.Tensor, qweight: torch.Tensor, bits: int) -> int:
    """x (M, K) float and qweight (ceil(K / P), N) int32 contiguous for ``bits``-bit codes; returns N."""
    _, k = check_activation(x)
    check_tensor(qweight, "qweight", ndim=2, dtype=torch.int32, contiguous=True)
    n = qweight.shape[1]
    check_tensor(qweight, "qweight", shape=(words_per_column(k, bits), n))
    return n


def _check_lowbit_weight_mm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    pos_scale: torch.Tensor,
    neg_scale: torch.Tensor,
    bits: int,
    bias: Optional[torch.Tensor] = None,
) -> None:
    check_choice(bits, "bits", (1, 2))
    n = check_packed_codes(x, qweight, bits)
    check_channel_vector(pos_scale, "pos_scale", n)
    check_channel_vector(neg_scale, "neg_scale", n)
    check_bias(bias, n)
    check_devices(x, qweight=qweight, pos_scale=pos_scale, neg_scale=neg_scale, bias=bias)


def launch_lowbit_weight_mm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    pos_scale: torch.Tensor,
    neg_scale: torch.Tensor,
    bits: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Our kernel (``lowbit_weight_mm.launcher``): the GEMV for M <= GEMV_MAX_M["lowbit"], else the tile kernel."""
    launch = launch_dequant_gemv if x.shape[0] <= GEMV_MAX_M["lowbit"] else launch_dequant_mm
    return launch(x, "lowbit", bits, qweight, pos_scale, neg_scale, bias, qweight.shape[1])


@kernel_op(
    "slimtorch::lowbit_weight_mm",
    reference="lowbit_weight_mm_reference",
    check=_check_lowbit_weight_mm,
    row_input="x",
)
def lowbit_weight_mm(
    x: torch.Tensor,
    qweight: torch.Tensor,
    pos_scale: torch.Tensor,
    neg_scale: torch.Tensor,
    bits: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """x (M, K) · W(qweight, pos_scale, neg_scale)ᵀ + bias → (M, N); ``bits`` 1 (binary) or 2 (ternary).
    On CUDA, our kernel or dequantize + F.linear, whichever measured faster (core.measured)."""
    k = x.shape[1]

    candidates = {
        "triton": lambda: launch_lowbit_weight_mm(x, qweight, pos_scale, neg_scale, bits, bias),
        measured.DECODE_LINEAR: measured.decode_linear(
            x, lambda dtype: dequantize_lowbit(qweight, pos_scale, neg_scale, bits, k, dtype=dtype), bias
        ),
    }
    key = (*measured.gemm_key(x, qweight.shape[1], k), bits)
    return measured.run("slimtorch::lowbit_weight_mm", key, candidates, x)


lowbit_weight_mm.launcher = launch_lowbit_weight_mm  # benchmarks and the static report time our kernel itself


def lowbit_weight_mm_reference(
    x: torch.Tensor,
    qweight: torch.Tensor,
    pos_scale: torch.Tensor,
    neg_scale: torch.Tensor,
    bits: int,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    weight = dequantize_lowbit(qweight, pos_scale, neg_scale, bits, x.shape[1], dtype=compute_dtype(x.dtype))
    return linear_reference(x, weight, bias)

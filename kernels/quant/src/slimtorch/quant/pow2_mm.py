"""Power-of-two weight GEMM (INQ, Zhou et al. 2017): ``y = x · Wᵀ (+ bias)`` with every weight in
{0, ±2^n2, ..., ±2^n1}, decoded by exponent arithmetic instead of a multiply.

Weights (:func:`slimtorch.quant.pow2.quantize_pow2`): b-bit sign + exponent codes (b ∈ {3, 4, 5})
in S = 4 or 8 storage bits, ``code = sign << (S − 1) | e``, packed along K into
``qweight (ceil(K / P), N) int32`` (P = 32 / S, the last word padded with code 0), and the layer's
largest exponent ``exponent (1,) int32`` = n1:

    W[n, k] = 0 for e = 0,  (−1)^sign · 2^(n1 + 1 − e) for e ∈ [1, 2^(b−2)]

The kernel (``dequant_mm``, FORMAT "pow2", BITS = S) loads each word once, expands its P codes in
registers, and writes ``bias + 1 − e`` into the exponent field of the activation dtype's bit pattern
(fp16: 5 bits at bit 10; bf16 / fp32: 8 bits at bit 7 / 23), ORs in the sign bit and bitcasts: the
tile of 2^(1 − e) goes to ``tl.dot`` with no multiply and no int→float convert. The epilogue scales
the fp32 accumulator by 2^n1 (a power of two: exact). At 5 bits the codes take 8 storage bits, as
many weight bytes as int8 (half of fp16); at 3 and 4 bits, 4 (a quarter of fp16).

M ≤ ``dequant_gemv.GEMV_MAX_M["pow2"]`` runs the CUDA-core GEMV (:mod:`slimtorch.quant.dequant_gemv`: the
same exponent-field decode into fp32 bit patterns, one FMA per weight, 2^n1 once on the reduced sum).
On CUDA the op runs our kernel or dequantize + ``F.linear``, whichever measured faster for the shape
bucket (:mod:`slimtorch.core.measured`).

``exponent`` is read by the kernel, not on the host (no device sync): its range (−126 + L − 1 ≤ n1
≤ 127, L = 2^(b−2)) is checked where it is made (quantize_pow2) and loaded (Pow2Linear's state_dict).
"""

from typing import Optional

import torch

from slimtorch.core import measured
from slimtorch.core.checks import check_choice, check_tensor
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import compute_dtype, linear_reference
from slimtorch.quant import pow2
from slimtorch.quant.dequant_gemv import GEMV_MAX_M, launch_dequant_gemv
from slimtorch.quant.dequant_mm import check_bias, check_devices, launch_dequant_mm
from slimtorch.quant.lowbit_mm import check_packed_codes


def _check_pow2_weight_mm(
    x: torch.Tensor, qweight: torch.Tensor, exponent: torch.Tensor, bits: int, bias: Optional[torch.Tensor] = None
) -> None:
    check_choice(bits, "bits", pow2.POW2_BITS)
    n = check_packed_codes(x, qweight, pow2.storage_bits(bits))
    check_tensor(exponent, "exponent", shape=(1,), dtype=torch.int32, contiguous=True)
    check_bias(bias, n)
    check_devices(x, qweight=qweight, exponent=exponent, bias=bias)


def launch_pow2_weight_mm(
    x: torch.Tensor, qweight: torch.Tensor, exponent: torch.Tensor, bits: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Our kernel (``pow2_weight_mm.launcher``): the GEMV for M <= GEMV_MAX_M["pow2"], else the tile kernel."""
    launch = launch_dequant_gemv if x.shape[0] <= GEMV_MAX_M["pow2"] else launch_dequant_mm
    return launch(x, "pow2", pow2.storage_bits(bits), qweight, exponent, None, bias, qweight.shape[1])


@kernel_op(
    "slimtorch::pow2_weight_mm", reference="pow2_weight_mm_reference", check=_check_pow2_weight_mm, row_input="x"
)
def pow2_weight_mm(
    x: torch.Tensor, qweight: torch.Tensor, exponent: torch.Tensor, bits: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """x (M, K) · W(qweight, exponent)ᵀ + bias → (M, N); ``bits`` ∈ {3, 4, 5} (INQ's b).
    On CUDA, our kernel or dequantize + F.linear, whichever measured faster (core.measured)."""
    k = x.shape[1]

    candidates = {
        "triton": lambda: launch_pow2_weight_mm(x, qweight, exponent, bits, bias),
        measured.DECODE_LINEAR: measured.decode_linear(
            x, lambda dtype: pow2.dequantize_pow2(qweight, exponent, bits, k, dtype=dtype), bias
        ),
    }
    key = (*measured.gemm_key(x, qweight.shape[1], k), bits)
    return measured.run("slimtorch::pow2_weight_mm", key, candidates, x)


pow2_weight_mm.launcher = launch_pow2_weight_mm  # benchmarks and the static report time our kernel itself


def pow2_weight_mm_reference(
    x: torch.Tensor, qweight: torch.Tensor, exponent: torch.Tensor, bits: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    weight = pow2.dequantize_pow2(qweight, exponent, bits, x.shape[1], dtype=compute_dtype(x.dtype))
    return linear_reference(x, weight, bias)

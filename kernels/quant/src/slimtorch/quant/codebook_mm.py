"""Codebook (LUT) GEMM: ``y = x · codebook[codes]ᵀ (+ bias)`` (Deep Compression weight sharing).

Weights (:func:`slimtorch.quant.formats.quantize_codebook`): one ``codebook (2^b,)`` per layer
(b = 2..8 index bits) and the indices packed along K into ``qweight (ceil(K / P), N) int32`` with
``storage_bits(b)`` ∈ {2, 4, 8} bits each (P = 16, 8, 4). The kernel (``dequant_mm``, FORMAT
"codebook", BITS = storage bits) loads each word once, expands the indices in registers and
looks the centroids up with a gather load: the codebook is at most 256 fp32 values (1 KiB), so
after the first tile every lookup is an L1 hit (Triton has no addressable shared memory). The
looked-up tile goes to ``tl.dot``. M ≤ ``dequant_gemv.GEMV_MAX_M["codebook"]`` runs the CUDA-core GEMV
instead (:mod:`slimtorch.quant.dequant_gemv`: the same L1 gather per index, the byte offset ORed into
the table's address, one FMA per weight, no ``tl.dot`` and no shared memory). On CUDA the op runs our
kernel or dequantize + ``F.linear``, whichever measured faster for the shape bucket
(:mod:`slimtorch.core.measured`). 4-bit indices read a quarter of fp16's weight bytes.
"""

from typing import Optional

import torch

from slimtorch.core import measured
from slimtorch.core.checks import check_tensor
from slimtorch.core.library import kernel_op
from slimtorch.core.reference import compute_dtype, linear_reference
from slimtorch.quant.dequant_gemv import GEMV_MAX_M, launch_dequant_gemv
from slimtorch.quant.dequant_mm import (
    SCALE_DTYPES,
    check_bias,
    check_devices,
    launch_dequant_mm,
)
from slimtorch.quant.formats import dequantize_codebook, storage_bits
from slimtorch.quant.lowbit_mm import check_packed_codes


def _check_codebook_mm(
    x: torch.Tensor, qweight: torch.Tensor, codebook: torch.Tensor, bits: int, bias: Optional[torch.Tensor] = None
) -> None:
    n = check_packed_codes(x, qweight, storage_bits(bits))
    check_tensor(codebook, "codebook", shape=(2**bits,), dtype=SCALE_DTYPES, contiguous=True)
    check_bias(bias, n)
    check_devices(x, qweight=qweight, codebook=codebook, bias=bias)


def launch_codebook_mm(
    x: torch.Tensor, qweight: torch.Tensor, codebook: torch.Tensor, bits: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Our kernel (``codebook_mm.launcher``): the GEMV for M <= GEMV_MAX_M["codebook"], else the tile kernel."""
    launch = launch_dequant_gemv if x.shape[0] <= GEMV_MAX_M["codebook"] else launch_dequant_mm
    return launch(x, "codebook", storage_bits(bits), qweight, codebook, None, bias, qweight.shape[1])


@kernel_op("slimtorch::codebook_mm", reference="codebook_mm_reference", check=_check_codebook_mm, row_input="x")
def codebook_mm(
    x: torch.Tensor, qweight: torch.Tensor, codebook: torch.Tensor, bits: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """x (M, K) · codebook[indices]ᵀ + bias → (M, N); ``bits`` index bits (2..8), 2^bits centroids.
    On CUDA, our kernel or dequantize + F.linear, whichever measured faster (core.measured)."""
    k = x.shape[1]

    candidates = {
        "triton": lambda: launch_codebook_mm(x, qweight, codebook, bits, bias),
        measured.DECODE_LINEAR: measured.decode_linear(
            x, lambda dtype: dequantize_codebook(qweight, codebook, bits, k, dtype=dtype), bias
        ),
    }
    key = (*measured.gemm_key(x, qweight.shape[1], k), bits)
    return measured.run("slimtorch::codebook_mm", key, candidates, x)


codebook_mm.launcher = launch_codebook_mm  # benchmarks and the static report time our kernel itself


def codebook_mm_reference(
    x: torch.Tensor, qweight: torch.Tensor, codebook: torch.Tensor, bits: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    weight = dequantize_codebook(qweight, codebook, bits, x.shape[1], dtype=compute_dtype(x.dtype))
    return linear_reference(x, weight, bias)

"""Shift operations: integer (grouped, sparse) and active (bilinear) per-channel shifts, forward
and backward, plus the standalone CUDA C integer shift.

Every shift reads  y[n, c, h, w] = x[n, c, h + dy_c, w + dx_c]  (zero outside the image).

- **Integer shift** (int32 offsets (C, 2)). The grouped shift of Wu et al. 2018 ("Shift: A Zero
  FLOP, Zero Parameter Alternative to Spatial Convolutions") uses
  ``index_maps.grouped_shift_offsets``; the sparse shift of Chen et al. 2019 ("All you need is a few
  shifts") learned offsets that are mostly (0, 0). Default GPU path: ``depthwise_conv2d`` with a
  weightless 1x1 stencil at per-channel offsets (one read and one write per element, Triton);
  its backward is that op's input gradient (the shift by the negated offsets). Its stores are
  channel vectors (the depthwise kernel's VEC); its loads stay per element, since the per-channel
  offsets change at group boundaries that are no multiple of a vector (C = 64, k = 3: 8, 15, 22, ...). The CUDA C kernel
  ``cuda/shift.cu`` (16-byte moves of channel groups that share an offset, channels_last) is
  OPT-IN — ``backend="cuda"`` or ``SLIMTORCH_BACKEND=cuda`` (core's backend rule) — until
  verified on a GPU; it compiles in CI for sm_80 / sm_90. Fused into the following 1x1 conv the shift costs no
  memory pass at all: ``pointwise_conv2d(..., offsets=...)``.
- **Active shift** (Jeon & Kim 2018, "Constructing Fast Network through Deconstruction of
  Convolution"): real offsets α (C, 2); with a = ⌊α⌋ and f = α − a,

      y = (1−fy)(1−fx)·x[h+ay, w+ax] + (1−fy)fx·x[h+ay, w+ax+1] + fy(1−fx)·x[h+ay+1, w+ax] + fy·fx·x[h+ay+1, w+ax+1]

  i.e. a depthwise conv with that 2x2 stencil at per-channel integer offsets a (bottom/right
  padding 1 keeps H×W). ∂x is the depthwise input gradient (= active shift by −α); ∂α the
  depthwise weight gradient (∂L/∂stencil) chained by torch through the stencil's formula.
- **Quantization-aware sparse shift** (Chen et al. 2019): the forward shifts by round(θ) (integer,
  exact ∂x); θ gets the active shift's gradient at θ (straight-through).
"""

from pathlib import Path

import numpy as np
import torch
import triton

from slimtorch.convops._layout import FLOAT_DTYPES, empty_in_format, in_format, memory_format_of
from slimtorch.convops.depthwise import depthwise_conv2d, depthwise_conv2d_reference
from slimtorch.core.checks import check_same_device, check_tensor
from slimtorch.core.dispatch import choose_backend
from slimtorch.core.library import kernel_op

CUDA_SOURCE = Path(__file__).parent / "cuda" / "shift.cu"
SHIFT_BACKENDS = ("triton", "cuda")

# CUDA launch shape (unmeasured until a GPU run): threads per block, and the grid-stride loop's
# block cap.
_CUDA_THREADS = 256
_CUDA_MAX_BLOCKS = 65536
_CUDA_WORD = {2: "u16", 4: "u32", 8: "u64"}
_VECTOR_BYTES = 16


def _check_integer_shift(x: torch.Tensor, offsets: torch.Tensor) -> None:
    check_tensor(x, "x", ndim=4, dtype=FLOAT_DTYPES)
    check_tensor(offsets, "offsets", shape=(x.shape[1], 2), dtype=torch.int32)
    check_same_device(x=x, offsets=offsets)


@kernel_op(
    "slimtorch::integer_shift_cuda", reference="integer_shift_reference", check=_check_integer_shift, backend="cuda"
)
def integer_shift_cuda(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The integer shift by the CUDA C kernel (module docstring); output in x's memory format."""
    from slimtorch.core.cuda import load_module

    memory_format = memory_format_of(x)
    x = in_format(x, memory_format)
    y = empty_in_format(x.shape, memory_format, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return y
    c, h, w = x.shape[1:]
    word = _CUDA_WORD[x.element_size()]
    vec = _VECTOR_BYTES // x.element_size()
    items, name = x.numel(), f"shift_nchw_{word}"
    if memory_format == torch.channels_last:
        aligned = c % vec == 0 and x.data_ptr() % _VECTOR_BYTES == 0 and y.data_ptr() % _VECTOR_BYTES == 0
        items, name = (items // vec, f"shift_nhwc_vec_{word}") if aligned else (items, f"shift_nhwc_{word}")
    blocks = min(triton.cdiv(items, _CUDA_THREADS), _CUDA_MAX_BLOCKS)
    kernel = load_module(CUDA_SOURCE).kernel(name)
    kernel((blocks,), (_CUDA_THREADS,), (x, offsets.contiguous(), y, np.int64(items), c, h, w))
    return y


def _setup_cuda_shift(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[1])


def _cuda_shift_backward(ctx, grad):
    (offsets,) = ctx.saved_tensors
    return integer_shift_cuda(grad, -offsets), None


integer_shift_cuda.register_autograd(_cuda_shift_backward, setup_context=_setup_cuda_shift)


def integer_shift(x: torch.Tensor, offsets: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """y[n, c, h, w] = x[n, c, h + offsets[c, 0], w + offsets[c, 1]] (0 outside); offsets int32
    (C, 2). ``backend`` by core's rule: "auto"/"triton" (the depthwise kernel's shift path), "cuda"
    (the standalone CUDA-C kernel: opt-in, not yet verified on a GPU) or "reference". Trains."""
    if choose_backend(backend, SHIFT_BACKENDS, x, offsets, op="integer_shift") == "cuda":
        return integer_shift_cuda(x, offsets)
    return depthwise_conv2d(x, None, None, None, offsets, [1, 1], [0, 0, 0, 0], [1, 1], "none")


def bilinear_stencil(offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real offsets (C, 2) -> (2x2 stencil (C, 1, 2, 2) in offsets' dtype, integer base ⌊α⌋ int32 (C, 2)).
    Differentiable w.r.t. offsets through the stencil."""
    base = torch.floor(offsets.detach())
    fy, fx = (offsets - base).unbind(1)
    stencil = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], dim=1)
    return stencil.view(-1, 1, 2, 2), base.to(torch.int32)


def active_shift(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Bilinear shift by real per-channel offsets (C, 2) (module docstring); gradients w.r.t. x
    and offsets."""
    check_tensor(x, "x", ndim=4, dtype=FLOAT_DTYPES)
    check_tensor(offsets, "offsets", shape=(x.shape[1], 2), dtype=FLOAT_DTYPES)
    stencil, base = bilinear_stencil(offsets)
    return depthwise_conv2d(x, stencil.to(x.dtype), None, None, base, [1, 1], [0, 1, 0, 1], [1, 1], "none")


def quantized_shift(x: torch.Tensor, offsets: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Integer shift by round(offsets) whose gradient w.r.t. the real offsets is the active
    shift's (straight-through; Chen et al. 2019 quantization-aware shift learning)."""
    check_tensor(offsets, "offsets", shape=(x.shape[1], 2), dtype=FLOAT_DTYPES)
    y = integer_shift(x, torch.round(offsets.detach()).to(torch.int32), backend)
    if offsets.requires_grad and torch.is_grad_enabled():
        a = active_shift(x.detach(), offsets)
        y = y + (a - a.detach())  # adds zero; carries ∂L/∂offsets
    return y


def integer_shift_reference(x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return depthwise_conv2d_reference(x, None, None, None, offsets, [1, 1], [0, 0, 0, 0], [1, 1], "none")

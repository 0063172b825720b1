"""slimtorch-core: dispatch, argument checks, custom-op registration, CUDA-C loading, testing
and benchmark helpers shared by every slimtorch package."""

from slimtorch.core.checks import (
    check_choice,
    check_device,
    check_divisible,
    check_finite,
    check_positive,
    check_same_device,
    check_same_dtype,
    check_shape,
    check_tensor,
)
from slimtorch.core.dispatch import empty_output, force_triton, reference_only, use_kernel
from slimtorch.core.formats import CompressionFormat, available_formats, register_format
from slimtorch.core.library import kernel_op
from slimtorch.core.metrics import rel_error, sqnr

__version__ = "0.1.0"

__all__ = [
    "CompressionFormat",
    "available_formats",
    "check_choice",
    "check_device",
    "check_divisible",
    "check_finite",
    "check_positive",
    "check_same_device",
    "check_same_dtype",
    "check_shape",
    "check_tensor",
    "empty_output",
    "force_triton",
    "kernel_op",
    "reference_only",
    "register_format",
    "rel_error",
    "sqnr",
    "use_kernel",
]

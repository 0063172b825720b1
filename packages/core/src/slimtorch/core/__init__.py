"""slimtorch-core: the conversion walk, the backend rule, argument checks, custom-op registration,
CUDA-C loading, testing and benchmark helpers shared by every slimtorch package."""

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
from slimtorch.core.conversions import ConversionConfig, ConversionReport, convert_model
from slimtorch.core.dispatch import choose_backend, empty_output, reference_only, use_backend, use_kernel
from slimtorch.core.library import kernel_op
from slimtorch.core.metrics import rel_error, sqnr
from slimtorch.core.registry import RegisteredConversion, available_conversions, get_conversion, register_conversion

__version__ = "0.1.0"

__all__ = [
    "ConversionConfig",
    "ConversionReport",
    "RegisteredConversion",
    "available_conversions",
    "check_choice",
    "check_device",
    "check_divisible",
    "check_finite",
    "check_positive",
    "check_same_device",
    "check_same_dtype",
    "check_shape",
    "check_tensor",
    "choose_backend",
    "convert_model",
    "empty_output",
    "get_conversion",
    "kernel_op",
    "reference_only",
    "register_conversion",
    "rel_error",
    "sqnr",
    "use_backend",
    "use_kernel",
]

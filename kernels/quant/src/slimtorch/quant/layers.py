"""Drop-in quantized layers: ``y = x · Wᵀ + b`` with W stored packed (buffers, so ``state_dict``
holds the packed form) and multiplied by the kernels of this package.

Every linear layer takes x (..., K) in fp16, bf16 or fp32 and returns (..., N) in x's dtype; on
CPU tensors the ops run their references (dequantise, then matmul in fp32). ``from_dense`` /
``from_weight`` quantize, ``to_dense`` dequantizes, ``compressed_num_params`` counts the N·K
weights (+ N bias) the layer still represents. ``.to(dtype)`` casts the float buffers (bias,
scales, codebook) like any module; packed integer buffers never change.

Conv2d: core's :class:`~slimtorch.core.modules.GemmConv2d` wraps any of the linear layers (K = C·kh·kw) and computes the
convolution as a GEMM over rows of pixels. 1x1 convolutions without padding use the pixels
themselves, channels last (B·Ho·Wo, C) (a view when the input is channels_last); k×k convolutions
(groups = 1) go through ``F.unfold`` (im2col). The output is returned as an NCHW tensor in
channels_last memory (no copy). Grouped and depthwise convolutions are not converted: each
group's K is tiny (9 for a 3x3 depthwise), the layers hold a few percent of a MobileNet's
weights and are bound by activation traffic, so quantizing their weights saves nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from slimtorch.core.checks import FLOAT_DTYPES, check_finite, check_positive_int, check_range, check_tensor
from slimtorch.core.modules import GemmConv2d, dense_linear
from slimtorch.quant import formats
from slimtorch.quant.codebook_mm import codebook_mm
from slimtorch.quant.int4_mm import int4_weight_mm
from slimtorch.quant.int8_mm import int8_weight_mm
from slimtorch.quant.lowbit_mm import lowbit_weight_mm
from slimtorch.quant.w8a8_mm import w8a8_linear

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


class Stored(NamedTuple):
    """What a stored (state_dict) tensor of a layer must be: dtype(s), shape, value range.
    Float buffers may come in any float dtype (``.to(dtype)`` casts them) and must be finite."""

    dtype: torch.dtype | tuple[torch.dtype, ...]
    shape: tuple[int, ...]
    low: float | None = None
    high: float | None = None
    positive: bool = False  # every value > 0 (scales)


def check_stored(t: object, key: str, spec: Stored) -> None:
    """One loaded tensor against its spec; errors name the state_dict key."""
    check_tensor(t, key, shape=spec.shape, dtype=spec.dtype)
    if t.dtype.is_floating_point:
        check_finite(t, key)
    check_range(t, key, low=spec.low, high=spec.high)
    if spec.positive and t.numel() and not bool((t > 0).all()):
        raise ValueError(f"{key}: expected positive values (scales), found {t.min().item()}")


class QuantizedLinear(nn.Module):
    """Base of the quantized linear layers; subclasses define the buffers and the op."""

    options_keys: ClassVar[tuple[str, ...]] = ()  # constructor options saved with the model

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None, dtype=None):
        super().__init__()
        check_positive_int(in_features, "in_features")
        check_positive_int(out_features, "out_features")
        self.in_features = in_features
        self.out_features = out_features
        bias_tensor = torch.zeros(out_features, device=device, dtype=dtype or torch.float32) if bias else None
        self.register_buffer("bias", bias_tensor)

    # --- what a format defines
    @staticmethod
    def quantize(weight: torch.Tensor, **options: Any) -> tuple:
        raise NotImplementedError

    def load_packed(self, packed: tuple) -> None:
        raise NotImplementedError

    def dequantize(self) -> torch.Tensor:
        """The (N, K) float32 weight the layer multiplies by."""
        raise NotImplementedError

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, K) → (M, N) through this format's op."""
        raise NotImplementedError

    def stored(self) -> dict[str, Stored]:
        """The spec of every packed buffer (the bias is checked by the base class)."""
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        """Refuse a stored tensor of the wrong dtype, shape or value range (naming its key) instead of
        letting ``copy_`` cast it: an int4 qweight saved as float, an int8 code of 200, a NaN scale."""
        specs = dict(self.stored())
        if self.bias is not None:
            specs["bias"] = Stored(FLOAT_DTYPES, (self.out_features,))
        for name, spec in specs.items():
            if prefix + name in state_dict:
                check_stored(state_dict[prefix + name], prefix + name, spec)
        self._check_codes(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)

    def _check_codes(self, state_dict: dict, prefix: str) -> None:
        """Formats whose packed codes have unused values check them here."""

    # --- shared
    def options(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.options_keys}

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, **options: Any) -> QuantizedLinear:
        """Quantize an (N, K) weight (the bias is kept in its dtype)."""
        n, k = weight.shape
        return cls.from_packed(cls.quantize(weight.detach(), **options), k, n, bias, **options)

    @classmethod
    def from_packed(
        cls, packed: tuple, in_features: int, out_features: int, bias: torch.Tensor | None = None, **options: Any
    ) -> QuantizedLinear:
        """Wrap an already quantized weight (the tuple its ``quantize`` returns)."""
        dtype = bias.dtype if bias is not None else None
        layer = cls(in_features, out_features, bias is not None, device=packed[0].device, dtype=dtype, **options)
        layer.load_packed(packed)
        if bias is not None:
            layer.bias.copy_(bias.detach())
        return layer

    @classmethod
    def from_dense(cls, linear: nn.Linear, **options: Any) -> QuantizedLinear:
        return cls.from_weight(linear.weight, linear.bias, **options)

    def to_dense(self) -> nn.Linear:
        weight = self.dequantize()
        return dense_linear(weight, self.bias, self.bias.dtype if self.bias is not None else weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (*, {self.in_features}) (in_features), got {tuple(x.shape)}")
        y = self.matmul(x.reshape(-1, self.in_features))
        return y.reshape(*x.shape[:-1], self.out_features)

    def compressed_num_params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias is not None else 0)

    def conversion_source(self) -> str:
        return f"already quantized ({type(self).__name__})"

    def describe(self) -> dict[str, Any]:
        """What :func:`build_layer` needs to recreate an empty layer of this shape (JSON-able)."""
        options = {k: dtype_name(v) if isinstance(v, torch.dtype) else v for k, v in self.options().items()}
        return {
            "class": type(self).__name__,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            **options,
        }

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v}" for k, v in self.options().items())
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{options}"
        )


class Int8WeightOnlyLinear(QuantizedLinear):
    """int8 weights, per-output-channel scales (formats: int8); fp activations."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32, device=device))

    @staticmethod
    def quantize(weight: torch.Tensor) -> formats.Int8Weight:
        return formats.quantize_int8(weight)

    def load_packed(self, packed: formats.Int8Weight) -> None:
        self.register_buffer("qweight", packed.qweight.contiguous())
        self.register_buffer("scale", packed.scale.contiguous())

    def dequantize(self) -> torch.Tensor:
        return formats.dequantize_int8(self.qweight, self.scale)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return int8_weight_mm(x, self.qweight, self.scale, self.bias)

    def stored(self) -> dict[str, Stored]:
        n, k = self.out_features, self.in_features
        return {
            "qweight": Stored(torch.int8, (n, k), -formats.INT8_MAX, formats.INT8_MAX),
            "scale": Stored(FLOAT_DTYPES, (n,), positive=True),
        }


class Int8DynamicActivationInt8WeightLinear(Int8WeightOnlyLinear):
    """W8A8: the int8 weights above, activations quantized per token (row) at run time."""

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return w8a8_linear(x, self.qweight, self.scale, self.bias)


class Int4WeightOnlyLinear(QuantizedLinear):
    """int4 weights in groups of ``group_size`` along K with scale and zero point (formats: int4).
    K need not be a multiple of the group size: the packed buffers pad it to ceil(K / G) · G with
    zero weights (``stored()`` and the loaders check that layout); x keeps its K."""

    options_keys = ("group_size", "scale_dtype")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        group_size: int = 128,
        scale_dtype: torch.dtype | str = torch.float16,
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        formats.check_group_size(in_features, group_size)
        self.group_size = group_size
        self.scale_dtype = _DTYPES[scale_dtype] if isinstance(scale_dtype, str) else scale_dtype
        k_pad = formats.padded_k(in_features, group_size)  # K padded to the group size (zero weights)
        groups = k_pad // group_size
        self.register_buffer("qweight", torch.zeros(k_pad // 8, out_features, dtype=torch.int32, device=device))
        self.register_buffer("scale", torch.ones(groups, out_features, dtype=self.scale_dtype, device=device))
        self.register_buffer("zero", torch.zeros(groups, out_features, dtype=torch.uint8, device=device))

    @staticmethod
    def quantize(
        weight: torch.Tensor, group_size: int = 128, scale_dtype: torch.dtype = torch.float16
    ) -> formats.Int4Weight:
        return formats.quantize_int4(weight, group_size, scale_dtype)

    def load_packed(self, packed: formats.Int4Weight) -> None:
        formats.check_padded_k(self.in_features, packed.qweight.shape[0] * 8, packed.group_size, "packed.qweight")
        self.register_buffer("qweight", packed.qweight.contiguous())
        self.register_buffer("scale", packed.scale.contiguous())
        self.register_buffer("zero", packed.zero.contiguous())
        self.group_size = packed.group_size
        self.scale_dtype = packed.scale.dtype

    @classmethod
    def from_gptq(
        cls,
        qweight: torch.Tensor,
        qzeros: torch.Tensor,
        scales: torch.Tensor,
        g_idx: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        version: str = "v1",
    ) -> Int4WeightOnlyLinear:
        """A GPTQ 4-bit checkpoint's tensors as a layer (see :func:`slimtorch.quant.formats.from_gptq`)."""
        packed = formats.from_gptq(qweight, qzeros, scales, g_idx, version)
        k, n = packed.qweight.shape[0] * 8, packed.qweight.shape[1]
        return cls.from_packed(packed, k, n, bias, group_size=packed.group_size, scale_dtype=packed.scale.dtype)

    def to_gptq(self, version: str = "v1") -> dict[str, torch.Tensor]:
        if self.in_features % self.group_size:
            raise ValueError(
                f"in_features: GPTQ checkpoints hold whole groups, expected a multiple of group_size="
                f"{self.group_size}, got {self.in_features} (this layer pads K to {self.qweight.shape[0] * 8})"
            )
        return formats.to_gptq(self.packed(), version)

    def packed(self) -> formats.Int4Weight:
        return formats.Int4Weight(self.qweight, self.scale, self.zero, self.group_size)

    def dequantize(self) -> torch.Tensor:
        return formats.dequantize_int4(*self.packed(), k=self.in_features)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return int4_weight_mm(x, self.qweight, self.scale, self.zero, self.group_size, self.bias)

    def stored(self) -> dict[str, Stored]:
        n, k_pad = self.out_features, formats.padded_k(self.in_features, self.group_size)
        groups = k_pad // self.group_size
        return {
            "qweight": Stored(torch.int32, (k_pad // 8, n)),  # K padded to the group size
            "scale": Stored(FLOAT_DTYPES, (groups, n), positive=True),
            "zero": Stored(torch.uint8, (groups, n), 0, formats.INT4_MAX + 1),  # 16 after a GPTQ v1 import
        }


class BinaryLinear(QuantizedLinear):
    """BWN / XNOR-Net weights: W = α_n · sign(W), 1 bit per weight (formats: binary)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        rows = formats.words_per_column(in_features, 1)
        self.register_buffer("qweight", torch.zeros(rows, out_features, dtype=torch.int32, device=device))
        self.register_buffer("scale", torch.ones(out_features, dtype=torch.float32, device=device))

    @staticmethod
    def quantize(weight: torch.Tensor) -> formats.LowBitWeight:
        return formats.quantize_binary(weight)

    def load_packed(self, packed: formats.LowBitWeight) -> None:
        if packed.bits != 1 or not torch.equal(packed.pos_scale, packed.neg_scale):
            raise ValueError("packed: expected 1-bit codes with pos_scale == neg_scale (a binary weight)")
        self.register_buffer("qweight", packed.qweight.contiguous())
        self.register_buffer("scale", packed.pos_scale.contiguous())

    def dequantize(self) -> torch.Tensor:
        return formats.dequantize_lowbit(self.qweight, self.scale, self.scale, 1, self.in_features)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return lowbit_weight_mm(x, self.qweight, self.scale, self.scale, 1, self.bias)

    def stored(self) -> dict[str, Stored]:
        n, rows = self.out_features, formats.words_per_column(self.in_features, 1)
        return {"qweight": Stored(torch.int32, (rows, n)), "scale": Stored(FLOAT_DTYPES, (n,), low=0.0)}


class TernaryLinear(QuantizedLinear):
    """Ternary weights {−neg_n, 0, +pos_n}, 2 bits per weight (formats: ternary). TWN when
    ``asymmetric`` is False (pos = neg), TTQ-style values when True."""

    options_keys = ("asymmetric",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        asymmetric: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.asymmetric = asymmetric
        rows = formats.words_per_column(in_features, 2)
        self.register_buffer("qweight", torch.zeros(rows, out_features, dtype=torch.int32, device=device))
        self.register_buffer("pos_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("neg_scale", torch.ones(out_features, dtype=torch.float32, device=device))

    @staticmethod
    def quantize(weight: torch.Tensor, asymmetric: bool = False) -> formats.LowBitWeight:
        return formats.quantize_ternary(weight, asymmetric)

    def load_packed(self, packed: formats.LowBitWeight) -> None:
        if packed.bits != 2:
            raise ValueError(f"packed: expected 2-bit ternary codes, got bits={packed.bits}")
        self.register_buffer("qweight", packed.qweight.contiguous())
        self.register_buffer("pos_scale", packed.pos_scale.contiguous())
        self.register_buffer("neg_scale", packed.neg_scale.contiguous())

    def dequantize(self) -> torch.Tensor:
        return formats.dequantize_lowbit(self.qweight, self.pos_scale, self.neg_scale, 2, self.in_features)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return lowbit_weight_mm(x, self.qweight, self.pos_scale, self.neg_scale, 2, self.bias)

    def stored(self) -> dict[str, Stored]:
        n, rows = self.out_features, formats.words_per_column(self.in_features, 2)
        return {
            "qweight": Stored(torch.int32, (rows, n)),
            "pos_scale": Stored(FLOAT_DTYPES, (n,), low=0.0),
            "neg_scale": Stored(FLOAT_DTYPES, (n,), low=0.0),
        }

    def _check_codes(self, state_dict: dict, prefix: str) -> None:
        qweight = state_dict.get(prefix + "qweight")
        if qweight is not None and bool((formats.unpack_codes(qweight, 2, self.in_features) == 2).any()):
            raise ValueError(f"{prefix}qweight: expected ternary codes 0, 1 or 3, found the unused code 2")


class CodebookLinear(QuantizedLinear):
    """Weights shared through a per-layer codebook of 2^bits centroids (formats: codebook)."""

    options_keys = ("bits",)

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, bits: int = 4, device=None, dtype=None
    ):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.bits = bits
        rows = formats.words_per_column(in_features, formats.storage_bits(bits))
        self.register_buffer("qweight", torch.zeros(rows, out_features, dtype=torch.int32, device=device))
        self.register_buffer("codebook", torch.zeros(2**bits, dtype=torch.float32, device=device))

    @staticmethod
    def quantize(
        weight: torch.Tensor, bits: int = 4, iterations: int = formats.KMEANS_ITERATIONS
    ) -> formats.CodebookWeight:
        return formats.quantize_codebook(weight, bits, iterations)

    def load_packed(self, packed: formats.CodebookWeight) -> None:
        self.register_buffer("qweight", packed.qweight.contiguous())
        self.register_buffer("codebook", packed.codebook.contiguous())
        self.bits = packed.bits

    def dequantize(self) -> torch.Tensor:
        return formats.dequantize_codebook(self.qweight, self.codebook, self.bits, self.in_features)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return codebook_mm(x, self.qweight, self.codebook, self.bits, self.bias)

    def stored(self) -> dict[str, Stored]:
        n, rows = self.out_features, formats.words_per_column(self.in_features, formats.storage_bits(self.bits))
        return {"qweight": Stored(torch.int32, (rows, n)), "codebook": Stored(FLOAT_DTYPES, (2**self.bits,))}

    def _check_codes(self, state_dict: dict, prefix: str) -> None:
        qweight = state_dict.get(prefix + "qweight")
        packing = formats.storage_bits(self.bits)
        if qweight is None or packing == self.bits:
            return
        codes = formats.unpack_codes(qweight, packing, self.in_features)
        if bool((codes >= 2**self.bits).any()):
            raise ValueError(
                f"{prefix}qweight: expected codebook indices below 2^bits = {2**self.bits}, found {int(codes.max())}"
            )


LINEAR_CLASSES: dict[str, type[QuantizedLinear]] = {
    cls.__name__: cls
    for cls in (
        Int8WeightOnlyLinear,
        Int8DynamicActivationInt8WeightLinear,
        Int4WeightOnlyLinear,
        BinaryLinear,
        TernaryLinear,
        CodebookLinear,
    )
}


def register_linear_class(cls: type[QuantizedLinear]) -> type[QuantizedLinear]:
    """Make a quantized linear defined in another module of this package buildable by
    :func:`build_layer` (the compressed file names layers by class name); use as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, QuantizedLinear)):
        raise TypeError(f"cls: expected a QuantizedLinear subclass, got {cls!r}")
    if LINEAR_CLASSES.get(cls.__name__, cls) is not cls:
        raise ValueError(f"cls: a different quantized layer is already registered as {cls.__name__!r}")
    LINEAR_CLASSES[cls.__name__] = cls
    return cls


def describe_layer(layer: nn.Module) -> dict[str, Any]:
    """What :func:`build_layer` needs to recreate an empty quantized linear, or a GemmConv2d
    around one, of this shape (JSON-able)."""
    if isinstance(layer, GemmConv2d):
        return {
            "class": GemmConv2d.__name__,
            "in_channels": layer.in_channels,
            "kernel_size": list(layer.kernel_size),
            "stride": list(layer.stride),
            "padding": list(layer.padding),
            "dilation": list(layer.dilation),
            "gemm": layer.gemm.describe(),
        }
    return layer.describe()


def build_layer(description: dict[str, Any], device: torch.device | str | None = None) -> nn.Module:
    """An empty (zero-filled) layer from :func:`describe_layer`'s output, ready for ``load_state_dict``."""
    description = dict(description)
    name = description.pop("class")
    if name == GemmConv2d.__name__:
        gemm = build_layer(description.pop("gemm"), device)
        return GemmConv2d(gemm, **description)
    if name not in LINEAR_CLASSES:
        raise ValueError(f"class: unknown quantized layer {name!r}; known: {sorted(LINEAR_CLASSES)}")
    return LINEAR_CLASSES[name](device=device, **description)

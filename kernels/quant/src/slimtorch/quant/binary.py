"""Binary weights *and* activations: BNN (Hubara, Courbariaux et al. 2016), XNOR-Net (Rastegari et
al. 2016) and Bi-Real Net's ApproxSign (Liu et al. 2018), as layers that train and then run packed.

**Training** (:class:`BinaryActivationLinear`, :class:`BinaryActivationConv2d`): latent float
weights W (``nn.Parameter``); the forward multiplies binarised operands

    Linear:  y[m, n] = (sign(x_m) · sign(W_n)) · α_n · β_m + b_n
    Conv2d:  y[b, o] = (sign(x) ⊛ sign(W_o)) · α_o · K[b] + b_o

with sign(0) = +1, α_n = mean |W_n| (XNOR-Net's per-output-channel weight scale), and, when
``scale_activations`` (XNOR-Net; off for BNN and Bi-Real), β_m = mean_k |x_mk| per row or, for a
convolution, the map K = (mean_c |x|) ⊛ k with k the kh×kw box filter 1/(kh·kw) under the conv's
stride and zero padding (Section 3.2 of XNOR-Net). The padding of a convolution contributes 0
(zero-padded sign(x)), as does the packed kernel's.

The sign has no gradient; each paper's straight-through estimator stands in (``ste=``):

    "bnn"     BNN's hard-tanh STE:                ∂sign(x)/∂x ≈ 1{|x| ≤ 1}
    "approx"  Bi-Real Net's ApproxSign (eq. 5):   ∂F/∂x = 2 + 2x on [−1, 0), 2 − 2x on [0, 1), 0 elsewhere

and the scaled weight W̃ = α·sign(W) gets XNOR-Net's gradient (its eq. 7, the per-element term):

    ∂C/∂W = ∂C/∂W̃ · (1/n + α · 1{|W| ≤ 1}),   n = the weights of one output channel (K or C·kh·kw)

**Inference** after :meth:`~BinaryActivationLinear.freeze` or :func:`binarize_` with
``freeze=True``: :class:`XnorLinear` / :class:`XnorConv2d` hold sign(W) packed 32 per int32 word
(``pack_signs``: bit 1 = negative, padding bits 0) and α; activations are packed at run time and
the GEMM is ``K − 2·popcount(a XOR w)`` with the α, β epilogue (:mod:`slimtorch.quant.xnor_mm`;
Triton on CUDA, the references on CPU). Layouts:

    XnorLinear.qweight  (N, ceil(K/32)) int32       alpha (N,)
    XnorConv2d.qweight  (O, kh, kw, ceil(C/32)) int32 (NHWC-packed: channels within a word)

NaN/Inf policy (core.reference): a non-finite x row gives an all-NaN output row; for a convolution,
every output position whose receptive field holds a non-finite input is NaN. Both the float and
the packed forward apply it, so they agree.

Model level: :func:`binarize_` is core's conversion walk with a :class:`BinarizeConfig`; it keeps
the first and the last weighted layer real (XNOR-Net, BNN and Bi-Real all do) and says so in the
report; ``freeze=True`` packs. :func:`freeze_` packs the binary training layers a model already has
(a Bi-Real Net) and nothing else. Training: :func:`clip_latent_weights_` is BNN's weight clipping
(an ``after_step``). :data:`XNOR_CONVERSION` is the registry entry ("xnor": packed, for a trained
float model, as the zoo's variants are). The packed convolution is stored in the compressed file by
the "xnor" :class:`~slimtorch.core.layer_formats.LayerFormat`, the packed linear by quant's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from slimtorch.core.checks import (
    FLOAT_DTYPES,
    KERNEL_DTYPES,
    check_choice,
    check_finite,
    check_positive_int,
    check_tensor,
)
from slimtorch.core.conversions import ConversionConfig, ConversionReport, FilterFn, Skip, convert_model, gemm_source
from slimtorch.core.layer_formats import LayerFormat, register_layer_format
from slimtorch.core.reference import nonfinite_rows_to_nan
from slimtorch.core.registry import RegisteredConversion
from slimtorch.quant.layers import QuantizedLinear, Stored, check_stored, register_linear_class
from slimtorch.quant.xnor_mm import MAX_K, pack_signs, pack_weight_signs, unpack_signs, words_for, xnor_conv2d, xnor_mm

STE_NAMES: tuple[str, ...] = ("bnn", "approx")
WORD_BITS = 32


def binary_sign(x: torch.Tensor) -> torch.Tensor:
    """sign(x) with sign(0) = +1 (the packing's convention: bit 1 only for x < 0); NaN stays NaN."""
    return torch.where(x < 0, -1.0, torch.where(x >= 0, 1.0, x))


# ----------------------------------------------------------------------------- straight-through estimators


class SignSTE(torch.autograd.Function):
    """BNN: forward sign(x), backward the hard-tanh STE ``grad · 1{|x| ≤ 1}``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


class ApproxSign(torch.autograd.Function):
    """Bi-Real Net: forward sign(x), backward the piecewise-polynomial derivative
    2 + 2x on [−1, 0), 2 − 2x on [0, 1), 0 elsewhere (= max(2 − 2|x|, 0))."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (2.0 - 2.0 * x.abs()).clamp_min(0.0).to(grad.dtype)


class XnorWeight(torch.autograd.Function):
    """XNOR-Net's binary weight W̃ = α·sign(W), α_n = mean |W_n| over each output channel (dim 0
    indexes channels); backward ∂C/∂W = ∂C/∂W̃ · (1/n + α·1{|W| ≤ 1}) (module docstring)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor) -> torch.Tensor:
        alpha = weight_scale(weight)
        ctx.save_for_backward(weight, alpha)
        return binary_sign(weight) * alpha

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        weight, alpha = ctx.saved_tensors
        n = weight[0].numel()
        return grad * (1.0 / n + alpha * (weight.abs() <= 1).to(grad.dtype))


def weight_scale(weight: torch.Tensor) -> torch.Tensor:
    """α: mean |W| per output channel, shaped to broadcast against ``weight`` (N, 1, ...)."""
    return weight.abs().flatten(1).mean(1).view(-1, *([1] * (weight.dim() - 1)))


_STE = {"bnn": SignSTE, "approx": ApproxSign}


def sign_ste(x: torch.Tensor, ste: str = "bnn") -> torch.Tensor:
    """sign(x) whose gradient is the STE ``ste`` ("bnn" or "approx")."""
    check_choice(ste, "ste", STE_NAMES)
    return _STE[ste].apply(x)


def xnor_weight(weight: torch.Tensor) -> torch.Tensor:
    """α·sign(W) with XNOR-Net's weight gradient."""
    return XnorWeight.apply(weight)


# ----------------------------------------------------------------------------- shared helpers


def _check_in_features(k: int, name: str) -> int:
    check_positive_int(k, name)
    if k > MAX_K:
        raise ValueError(f"{name}: expected at most {MAX_K} (K − 2·popcount exact in the fp32 epilogue), got {k}")
    return k


def _check_padding_bits(words: torch.Tensor, k: int, key: str) -> None:
    """The last word's bits at positions ≥ K % 32 must be 0 (``pack_signs`` pads with 0)."""
    tail = k % WORD_BITS
    if tail and words.numel():
        high = (words[..., -1].to(torch.int64) & 0xFFFFFFFF) >> tail
        if bool((high != 0).any()):
            raise ValueError(
                f"{key}: expected padding bits 0 past K={k} in the last word (K % 32 = {tail}), found some set"
            )


def _box_filter(a: torch.Tensor, kernel: tuple[int, int], stride, padding) -> torch.Tensor:
    """(B, H, W) → (B, Ho, Wo): the mean of ``a`` over each kh×kw window, zero padding counted."""
    box = torch.full((1, 1, *kernel), 1.0 / (kernel[0] * kernel[1]), dtype=a.dtype, device=a.device)
    return F.conv2d(a.unsqueeze(1), box, stride=stride, padding=padding).squeeze(1)


def conv_activation_scale(x: torch.Tensor, kernel: tuple[int, int], stride, padding) -> torch.Tensor:
    """XNOR-Net's K map (B, Ho, Wo): mean_c |x| box-filtered by the convolution's window."""
    return _box_filter(x.abs().mean(1), kernel, stride, padding)


def _nonfinite_fields_to_nan(x: torch.Tensor, out: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """``out`` (B, O, Ho, Wo) with NaN wherever the window over x (B, C, H, W) holds a NaN/Inf."""
    bad = (~torch.isfinite(x)).any(1).to(out.dtype)
    hits = _box_filter(bad, kernel, stride, padding) > 0
    return out.masked_fill(hits.unsqueeze(1), float("nan"))


def _check_x(x: object, channels: int, what: str, dtypes=FLOAT_DTYPES, name: str = "x") -> torch.Tensor:
    check_tensor(x, name, dtype=dtypes)
    if what == "linear":
        if x.dim() == 0 or x.shape[-1] != channels:
            raise ValueError(f"{name}: expected shape (*, {channels}) (in_features), got {tuple(x.shape)}")
    elif x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name}: expected shape (B, {channels}, H, W) (in_channels), got {tuple(x.shape)}")
    return x


def _bias_parameter(n: int, bias: bool, fan_in: int, device, dtype) -> nn.Parameter | None:
    if not bias:
        return None
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(n, device=device, dtype=dtype).uniform_(-bound, bound))


class XnorPacked(NamedTuple):
    """sign(W) packed (``pack_signs`` along the last axis) and α (N,) float32."""

    qweight: torch.Tensor
    alpha: torch.Tensor


def quantize_xnor(weight: torch.Tensor) -> XnorPacked:
    """A Linear (N, K) or Conv2d (O, C, kh, kw) weight as packed signs (xnor_mm's layouts: (N, KW),
    conv channels-last (O, kh, kw, CW)) and α = mean |W| per output channel (float64, stored float32)."""
    check_tensor(weight, "weight", ndim=(2, 4), dtype=FLOAT_DTYPES)
    check_finite(weight, "weight")
    w = weight.detach()
    return XnorPacked(pack_weight_signs(w).contiguous(), w.double().abs().flatten(1).mean(1).float())


def _as(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return t if t is None or t.dtype == dtype else t.to(dtype)


# ----------------------------------------------------------------------------- training layers


class BinaryActivationLinear(nn.Module):
    """``y = (sign(x) · sign(W)ᵀ) · α · β + b`` with latent float weights (module docstring).
    ``scale_activations``: XNOR-Net's β = mean |x| per row (False: BNN, β = 1); ``ste``: "bnn" or
    "approx". :meth:`freeze` returns the packed :class:`XnorLinear` computing the same."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        scale_activations: bool = True,
        ste: str = "bnn",
        device=None,
        dtype=None,
    ):
        super().__init__()
        _check_in_features(in_features, "in_features")
        check_positive_int(out_features, "out_features")
        check_choice(ste, "ste", STE_NAMES)
        self.in_features, self.out_features = in_features, out_features
        self.scale_activations, self.ste = bool(scale_activations), ste
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's initialisation
        self.bias = _bias_parameter(out_features, bias, in_features, device, dtype)

    @classmethod
    def from_dense(cls, linear: nn.Linear, **options: Any) -> BinaryActivationLinear:
        """A plain ``nn.Linear``'s weights as the latent weights."""
        check_tensor(linear.weight, "linear.weight", ndim=2, dtype=FLOAT_DTYPES)
        w = linear.weight
        layer = cls(w.shape[1], w.shape[0], linear.bias is not None, device=w.device, dtype=w.dtype, **options)
        with torch.no_grad():
            layer.weight.copy_(w)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.in_features, "linear")
        y = F.linear(sign_ste(x, self.ste), xnor_weight(self.weight))
        if self.scale_activations:
            y = y * x.abs().mean(-1, keepdim=True)
        if self.bias is not None:
            y = y + self.bias
        return nonfinite_rows_to_nan(x, y)

    def freeze(self) -> XnorLinear:
        """The packed inference layer of the current weights."""
        return XnorLinear.from_weight(self.weight, self.bias, scale_activations=self.scale_activations)

    def conversion_source(self) -> str:
        return "already binarized (BinaryActivationLinear: freeze() or binarize_(..., freeze=True) packs it)"

    def compressed_macs(self, input_shape: tuple[int, ...]) -> int:
        return math.prod(input_shape[:-1]) * self.in_features * self.out_features

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"scale_activations={self.scale_activations}, ste={self.ste!r}"
        )


class BinaryActivationConv2d(nn.Module):
    """``y = (sign(x) ⊛ sign(W)) · α · K + b`` (groups = 1, dilation = 1, zero padding) with latent
    float weights (O, C, kh, kw); K the XNOR-Net activation map when ``scale_activations``.
    :meth:`freeze` returns the packed :class:`XnorConv2d`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = False,
        *,
        scale_activations: bool = True,
        ste: str = "bnn",
        device=None,
        dtype=None,
    ):
        super().__init__()
        _check_in_features(in_channels, "in_channels")
        check_positive_int(out_channels, "out_channels")
        check_choice(ste, "ste", STE_NAMES)
        self.kernel_size, self.stride, self.padding = _conv_geometry(kernel_size, stride, padding)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.scale_activations, self.ste = bool(scale_activations), ste
        shape = (out_channels, in_channels, *self.kernel_size)
        self.weight = nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's initialisation
        self.bias = _bias_parameter(out_channels, bias, self.weight[0].numel(), device, dtype)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, **options: Any) -> BinaryActivationConv2d:
        """A plain groups=1, dilation=1, zero-padded ``nn.Conv2d``'s weights as the latent weights."""
        reason = binary_conv_skip_reason(conv)
        if reason is not None:
            raise ValueError(f"conv: expected groups=1, dilation=1, numeric zero padding; {reason}")
        w = conv.weight
        padding = (0, 0) if conv.padding == "valid" else conv.padding
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            padding,
            conv.bias is not None,
            device=w.device,
            dtype=w.dtype,
            **options,
        )
        with torch.no_grad():
            layer.weight.copy_(w)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.in_channels, "conv")
        y = F.conv2d(sign_ste(x, self.ste), xnor_weight(self.weight), None, self.stride, self.padding)
        if self.scale_activations:
            y = y * conv_activation_scale(x, self.kernel_size, self.stride, self.padding).unsqueeze(1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return _nonfinite_fields_to_nan(x, y, self.kernel_size, self.stride, self.padding)

    def freeze(self) -> XnorConv2d:
        """The packed inference layer of the current weights."""
        return XnorConv2d.from_weight(
            self.weight, self.bias, self.stride, self.padding, scale_activations=self.scale_activations
        )

    def conversion_source(self) -> str:
        return "already binarized (BinaryActivationConv2d: freeze() or binarize_(..., freeze=True) packs it)"

    def compressed_macs(self, input_shape: tuple[int, ...]) -> int:
        b, _, h, w = input_shape
        ho, wo = _out_size(h, w, self.kernel_size, self.stride, self.padding)
        return b * ho * wo * self.out_channels * self.weight[0].numel()

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias is not None}, scale_activations={self.scale_activations}, "
            f"ste={self.ste!r}"
        )


def _conv_geometry(kernel_size, stride, padding) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    kernel, stride, padding = _pair(kernel_size), _pair(stride), _pair(padding)
    for name, values, low in (("kernel_size", kernel, 1), ("stride", stride, 1), ("padding", padding, 0)):
        if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in values):
            raise ValueError(f"{name}: expected an int or a pair of ints >= {low}, got {values!r}")
    return tuple(kernel), tuple(stride), tuple(padding)


def _out_size(h: int, w: int, kernel, stride, padding) -> tuple[int, int]:
    return (h + 2 * padding[0] - kernel[0]) // stride[0] + 1, (w + 2 * padding[1] - kernel[1]) // stride[1] + 1


def binary_conv_skip_reason(conv: nn.Conv2d) -> str | None:
    """Why a plain Conv2d cannot become a binary convolution (None: it can)."""
    if conv.groups != 1:
        return f"groups={conv.groups}: grouped/depthwise convolutions stay real-valued"
    if tuple(conv.dilation) != (1, 1):
        return f"dilation={tuple(conv.dilation)}: the xnor convolution has no dilation"
    if isinstance(conv.padding, str) and conv.padding != "valid":
        return f"string padding {conv.padding!r} is not supported"
    if conv.padding_mode != "zeros":
        return f"padding_mode {conv.padding_mode!r} is not supported"
    return None


# ----------------------------------------------------------------------------- packed inference layers


@register_linear_class
class XnorLinear(QuantizedLinear):
    """Packed :class:`BinaryActivationLinear`: ``qweight`` (N, ceil(K/32)) int32 sign bits, ``alpha``
    (N,); x is packed per call and multiplied by ``xnor_mm``. Unlike the weight-only layers of
    :mod:`slimtorch.quant.layers` it binarises its input too, so :meth:`to_dense` returns the float
    training layer (same function), not an ``nn.Linear``."""

    options_keys: ClassVar[tuple[str, ...]] = ("scale_activations",)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        scale_activations: bool = True,
        device=None,
        dtype=None,
    ):
        _check_in_features(in_features, "in_features")
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.scale_activations = bool(scale_activations)
        words = words_for(in_features)
        self.register_buffer("qweight", torch.zeros(out_features, words, dtype=torch.int32, device=device))
        self.register_buffer("alpha", torch.ones(out_features, dtype=torch.float32, device=device))

    @staticmethod
    def quantize(weight: torch.Tensor, scale_activations: bool = True) -> XnorPacked:
        check_tensor(weight, "weight", ndim=2)
        return quantize_xnor(weight)

    def load_packed(self, packed: XnorPacked) -> None:
        dims: dict[str, int] = {}
        words = words_for(self.in_features)
        check_tensor(packed.qweight, "packed.qweight", shape=(self.out_features, words), dtype=torch.int32, dims=dims)
        check_tensor(packed.alpha, "packed.alpha", shape=(self.out_features,), dtype=FLOAT_DTYPES)
        _check_padding_bits(packed.qweight, self.in_features, "packed.qweight")
        self.register_buffer("qweight", packed.qweight.contiguous())
        self.register_buffer("alpha", packed.alpha.contiguous())

    def dequantize(self) -> torch.Tensor:
        return unpack_signs(self.qweight, self.in_features) * self.alpha.float().unsqueeze(1)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        dt = x.dtype
        beta = x.abs().mean(-1) if self.scale_activations else None
        out = xnor_mm(pack_signs(x), self.qweight, self.in_features, _as(self.alpha, dt), beta, _as(self.bias, dt))
        return nonfinite_rows_to_nan(x, _as(out, dt))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.in_features, "linear", KERNEL_DTYPES)
        return super().forward(x)

    def stored(self) -> dict[str, Stored]:
        return {
            "qweight": Stored(torch.int32, (self.out_features, words_for(self.in_features))),
            "alpha": Stored(FLOAT_DTYPES, (self.out_features,), low=0.0),
        }

    def _check_codes(self, state_dict: dict, prefix: str) -> None:
        qweight = state_dict.get(prefix + "qweight")
        if qweight is not None:
            _check_padding_bits(qweight, self.in_features, prefix + "qweight")

    def to_dense(self) -> BinaryActivationLinear:
        """The float training layer with latent weights α·sign(W) (the same forward)."""
        weight = self.dequantize()
        dtype = self.bias.dtype if self.bias is not None else weight.dtype
        layer = BinaryActivationLinear(
            self.in_features,
            self.out_features,
            self.bias is not None,
            scale_activations=self.scale_activations,
            device=weight.device,
            dtype=dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(weight)
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer

    def compressed_macs(self, input_shape: tuple[int, ...]) -> int:
        return math.prod(input_shape[:-1]) * self.in_features * self.out_features


class XnorConv2d(nn.Module):
    """Packed :class:`BinaryActivationConv2d`: ``qweight`` (O, kh, kw, ceil(C/32)) int32 sign bits,
    ``alpha`` (O,), ``bias`` (O,) or None; x is packed channels-last per call and convolved by
    ``xnor_conv2d`` (implicit GEMM over packed channels, zero padding contributes 0)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = False,
        *,
        scale_activations: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        _check_in_features(in_channels, "in_channels")
        check_positive_int(out_channels, "out_channels")
        self.kernel_size, self.stride, self.padding = _conv_geometry(kernel_size, stride, padding)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.scale_activations = bool(scale_activations)
        shape = (out_channels, *self.kernel_size, words_for(in_channels))
        self.register_buffer("qweight", torch.zeros(shape, dtype=torch.int32, device=device))
        self.register_buffer("alpha", torch.ones(out_channels, dtype=torch.float32, device=device))
        bias_tensor = torch.zeros(out_channels, device=device, dtype=dtype or torch.float32) if bias else None
        self.register_buffer("bias", bias_tensor)

    @classmethod
    def from_weight(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        *,
        scale_activations: bool = True,
    ) -> XnorConv2d:
        """Pack an (O, C, kh, kw) weight (the bias is kept in its dtype)."""
        check_tensor(weight, "weight", ndim=4, dtype=FLOAT_DTYPES)
        o, c, kh, kw = weight.shape
        packed = quantize_xnor(weight)
        dtype = bias.dtype if bias is not None else None
        layer = cls(c, o, (kh, kw), stride, padding, bias is not None, scale_activations=scale_activations,
                    device=weight.device, dtype=dtype)  # fmt: skip
        layer.register_buffer("qweight", packed.qweight)
        layer.register_buffer("alpha", packed.alpha)
        if bias is not None:
            layer.bias.copy_(bias.detach())
        return layer

    def dequantize(self) -> torch.Tensor:
        """The (O, C, kh, kw) float32 weight α·sign(W)."""
        o, kh, kw, words = self.qweight.shape
        signs = unpack_signs(self.qweight.reshape(o * kh * kw, words), self.in_channels)
        return signs.view(o, kh, kw, -1).permute(0, 3, 1, 2) * self.alpha.float().view(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_x(x, self.in_channels, "conv", KERNEL_DTYPES)
        c, dt = x.shape[1], x.dtype
        a_bits = pack_signs(x.permute(0, 2, 3, 1))  # (B, H, W, CW): channels packed per pixel
        beta = conv_activation_scale(x, self.kernel_size, self.stride, self.padding) if self.scale_activations else None
        out = xnor_conv2d(a_bits, self.qweight, c, self.stride, self.padding, _as(self.alpha, dt), beta,
                          _as(self.bias, dt))  # fmt: skip
        return _nonfinite_fields_to_nan(x, _as(out, dt), self.kernel_size, self.stride, self.padding)

    def stored(self) -> dict[str, Stored]:
        specs = {
            "qweight": Stored(torch.int32, tuple(self.qweight.shape)),
            "alpha": Stored(FLOAT_DTYPES, (self.out_channels,), low=0.0),
        }
        if self.bias is not None:
            specs["bias"] = Stored(FLOAT_DTYPES, (self.out_channels,))
        return specs

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        """Refuse a stored tensor of the wrong dtype, shape or range, or with padding bits set (naming its key)."""
        for name, spec in self.stored().items():
            if prefix + name in state_dict:
                check_stored(state_dict[prefix + name], prefix + name, spec)
        if prefix + "qweight" in state_dict:
            _check_padding_bits(state_dict[prefix + "qweight"], self.in_channels, prefix + "qweight")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)

    def to_dense(self) -> BinaryActivationConv2d:
        """The float training layer with latent weights α·sign(W) (the same forward)."""
        weight = self.dequantize()
        dtype = self.bias.dtype if self.bias is not None else weight.dtype
        layer = BinaryActivationConv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                       self.padding, self.bias is not None, scale_activations=self.scale_activations,
                                       device=weight.device, dtype=dtype)  # fmt: skip
        with torch.no_grad():
            layer.weight.copy_(weight)
            if self.bias is not None:
                layer.bias.copy_(self.bias)
        return layer

    def conversion_source(self) -> str:
        return "already binarized (XnorConv2d)"

    def compressed_num_params(self) -> int:
        weights = self.out_channels * self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return weights + (self.out_channels if self.bias is not None else 0)

    def compressed_macs(self, input_shape: tuple[int, ...]) -> int:
        b, _, h, w = input_shape
        ho, wo = _out_size(h, w, self.kernel_size, self.stride, self.padding)
        return b * ho * wo * self.out_channels * self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def describe(self) -> dict[str, Any]:
        """What :func:`build_xnor_conv` needs to recreate an empty layer of this shape (JSON-able)."""
        return {
            "class": type(self).__name__,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "bias": self.bias is not None,
            "scale_activations": self.scale_activations,
        }

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias is not None}, scale_activations={self.scale_activations}"
        )


def build_xnor_conv(description: dict[str, Any], device=None, dtype=None) -> XnorConv2d:
    """An empty :class:`XnorConv2d` from its :meth:`~XnorConv2d.describe` output."""
    description = dict(description)
    name = description.pop("class", None)
    if name != XnorConv2d.__name__:
        raise ValueError(f"class: expected {XnorConv2d.__name__!r} (the 'xnor' layer format), got {name!r}")
    return XnorConv2d(**description, device=device)


# The packed convolution in slimtorch.core.container's file (XnorLinear goes through the "quant" format).
XNOR_LAYER_FORMAT = register_layer_format(
    LayerFormat(
        name="xnor",
        family="quant",
        claims=lambda module: isinstance(module, XnorConv2d),
        describe=lambda module: module.describe(),
        build=build_xnor_conv,
    )
)


# ----------------------------------------------------------------------------- the conversion


_TRAIN_LAYERS = (BinaryActivationLinear, BinaryActivationConv2d)
_FIRST_LAST = "first/last weighted layer stays real-valued (XNOR-Net, BNN and Bi-Real Net all keep it)"


@dataclass(frozen=True)
class BinarizeConfig(ConversionConfig):
    """Which layers :func:`binarize_` makes binary, and how.

    ``scale_activations``: XNOR-Net's β / K (False: BNN); ``ste``: "bnn" | "approx";
    ``keep_first_last``: leave the first and the last weighted layer (by module order) real;
    ``freeze``: produce the packed :class:`XnorLinear` / :class:`XnorConv2d` (inference; also packs
    binary training layers already in the model) instead of the trainable layers.
    """

    scale_activations: bool = True
    ste: str = "bnn"
    keep_first_last: bool = True
    freeze: bool = False

    def __post_init__(self):
        check_choice(self.ste, "ste", STE_NAMES)

    def plan(self, model: nn.Module) -> frozenset[str]:
        """The names of the first and the last weighted layer (kept real when ``keep_first_last``)."""
        if not self.keep_first_last:
            return frozenset()
        names = [n for n, m in model.named_modules() if type(m) in _TRAIN_LAYERS or _plain_source(m) is not None]
        return frozenset(names[:1] + names[-1:])

    def convert_module(self, module: nn.Module, fqn: str, plan: frozenset[str]) -> nn.Module | Skip | None:
        if type(module) in _TRAIN_LAYERS:
            return module.freeze() if self.freeze else Skip(module.conversion_source(), descend=False)
        source = gemm_source(module)
        if source is None or isinstance(source, Skip):
            return source
        if fqn in plan:
            return Skip(_FIRST_LAST)
        options = {"scale_activations": self.scale_activations, "ste": self.ste}
        if isinstance(source, nn.Conv2d):
            reason = binary_conv_skip_reason(source)
            if reason is not None:
                return Skip(reason)
            layer = BinaryActivationConv2d.from_dense(source, **options)
        else:
            layer = BinaryActivationLinear.from_dense(source, **options)
        return layer.freeze() if self.freeze else layer


def _plain_source(module: nn.Module) -> nn.Module | None:
    source = gemm_source(module)
    return None if source is None or isinstance(source, Skip) else source


def binarize_(
    model: nn.Module, config: BinarizeConfig | None = None, filter_fn: FilterFn | None = None
) -> ConversionReport:
    """Binarize weights and activations of every eligible Linear and groups=1 Conv2d of ``model``
    in place (core's conversion walk; first/last layers kept real by default); returns the report."""
    config = BinarizeConfig() if config is None else config
    if not isinstance(config, BinarizeConfig):
        raise TypeError(f"config: expected a BinarizeConfig, got {type(config).__name__}")
    return convert_model(model, config, filter_fn, conversion="binarize_")


def is_binary_layer(module: nn.Module, fqn: str = "") -> bool:
    """A ``filter_fn``: True for the binary training layers only."""
    return type(module) in _TRAIN_LAYERS


def freeze_(model: nn.Module) -> ConversionReport:
    """Pack the binary training layers already in ``model`` (a Bi-Real Net, a model after
    :func:`binarize_`) into :class:`XnorLinear` / :class:`XnorConv2d`; nothing else changes."""
    return binarize_(model, BinarizeConfig(freeze=True, keep_first_last=False), is_binary_layer)


@torch.no_grad()
def clip_latent_weights_(model: nn.Module, bound: float = 1.0) -> nn.Module:
    """BNN's weight clipping (Courbariaux et al. 2016, Alg. 1): after each optimizer step the latent
    weights of every binary training layer are clipped to [−bound, bound], where the STE passes
    gradient (a latent weight beyond it would never change sign again). Use as ``after_step``."""
    for module in model.modules():
        if type(module) in _TRAIN_LAYERS:
            module.weight.clamp_(-bound, bound)
    return model


# The registry entry for slimtorch.quant's __init__ to register ("xnor"; a trained float model in eval).
XNOR_CONVERSION = RegisteredConversion(
    name="xnor",
    family="quant",
    description="XNOR-Net: 1-bit weights and activations (alpha, beta scales), packed 32 per int32, xnor-popcount "
    "GEMM; first/last layer real, depthwise/grouped stay float",
    convert=partial(binarize_, config=BinarizeConfig(freeze=True)),
)

"""Quantization-aware training: fake-quant Linear/Conv2d trained through straight-through
estimators (STE), then converted to the real kernel layers.

    prepare_qat(model, LSQConfig(bits=4, group_size=32))   # in place; returns core's ConversionReport
    ...train...
    convert_qat(model)          # FakeQuant* -> Int4WeightOnlyLinear / GemmConv2d around one

Each fake-quant module keeps a float latent weight and a weight quantizer; its forward uses the
quantized weight, so after ``convert_qat`` the real layers compute what training saw (up to the
kernels' accumulation error). Quantizers (``config`` → quantizer → converted layer):

- any post-training config of :mod:`slimtorch.quant.api` (int8, int4, W8A8, binary, ternary):
  forward = that format's exact quantize → dequantize, backward = identity (STE). W8A8 also
  fake-quantizes the activations per token (rows of the GEMM: pixels for 1x1 convolutions,
  im2col patches for k×k, exactly as the converted layer does), STE as well.
- :class:`~slimtorch.quant.api.CodebookWeightConfig`: Deep Compression's trained quantization:
  the codebook (k-means init) is a parameter, each weight uses its nearest centroid, a centroid's
  gradient is the sum of its weights' gradients, the latent weights get the STE gradient.
- :class:`LSQConfig` (Esser et al., Learned Step Size Quantization, 2020): symmetric int8
  (Q ∈ [−127, 127], a step per output channel) or int4 (Q ∈ [−8, 7], a step per group of K),
  w_q = round(clamp(w / s, Q_N, Q_P)) · s with the step's gradient scaled by g = 1/√(n · Q_P)
  (n weights per step). Converts to int8 / int4 layers (zero point 8, float32 scales).
- :class:`DoReFaConfig` (Zhou et al., DoReFa-Net, 2016): w_q = 2·round((2^k − 1)·r)/(2^k − 1) − 1,
  r = tanh(w) / (2·max|tanh(w)|) + 1/2, STE through the rounding. The 2^k uniform levels in
  [−1, 1] become a :class:`~slimtorch.quant.layers.CodebookLinear`'s codebook.
- :class:`TTQConfig` (Zhu et al., Trained Ternary Quantization, 2017): threshold Δ = t·max|w|,
  w_t = W_p for w > Δ, −W_n for w < −Δ, else 0, with learnable W_p, W_n per layer;
  ∂L/∂W_p = Σ_{w>Δ} ∂L/∂w_t, ∂L/∂W_n = −Σ_{w<−Δ} ∂L/∂w_t, and the latent weight's gradient is
  ∂L/∂w_t scaled by W_p (w > Δ), 1 (|w| ≤ Δ) or W_n (w < −Δ). Converts to an asymmetric
  :class:`~slimtorch.quant.layers.TernaryLinear`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.core.checks import check_choice
from slimtorch.core.conversions import ConversionConfig, ConversionReport, FilterFn, Skip, convert_model, gemm_source
from slimtorch.core.modules import GemmConv2d, conv2d_as_gemm
from slimtorch.quant import formats
from slimtorch.quant.api import CodebookWeightConfig, Int8DynamicActivationInt8WeightConfig, WeightConfig
from slimtorch.quant.layers import (
    CodebookLinear,
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    QuantizedLinear,
    TernaryLinear,
)
from slimtorch.quant.w8a8_mm import quantize_per_token_reference


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x forward, gradient multiplied by ``factor`` backward (LSQ's step-size gradient scale)."""
    return (x - x * factor).detach() + x * factor


def fake_quantize_per_token(x: torch.Tensor) -> torch.Tensor:
    """Rows of x (…, K) through W8A8's per-token int8 quantizer and back; STE backward."""
    rows = x.reshape(-1, x.shape[-1])
    q, scale = quantize_per_token_reference(rows)
    fake = (q.float() * scale[:, None]).to(x.dtype).reshape(x.shape)
    return x + (fake - x).detach()


# ----------------------------------------------------------------------------- weight quantizers


class WeightFakeQuantizer(nn.Module):
    """Maps the latent (N, K) weight to its fake-quantized value; ``convert`` builds the real layer."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def convert(self, weight: torch.Tensor, bias: torch.Tensor | None) -> QuantizedLinear:
        raise NotImplementedError


class STEFakeQuantizer(WeightFakeQuantizer):
    """A post-training format's quantize → dequantize in the forward, identity gradient."""

    def __init__(self, config: WeightConfig):
        super().__init__()
        self.config = config

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        fake = self.config.quantize_weight(weight.detach(), None).dequantize().to(weight.dtype)
        return weight + (fake - weight).detach()

    def convert(self, weight: torch.Tensor, bias: torch.Tensor | None) -> QuantizedLinear:
        return self.config.quantize_weight(weight, bias)

    def extra_repr(self) -> str:
        return repr(self.config)


class CodebookFakeQuantizer(WeightFakeQuantizer):
    """Trained weight sharing: learnable centroids, nearest-centroid assignment per forward."""

    def __init__(self, weight: torch.Tensor, bits: int, iterations: int):
        super().__init__()
        self.bits = bits
        centroids, _ = formats.kmeans_1d(weight.detach(), bits, iterations)
        self.centroids = nn.Parameter(centroids.float())

    def assign(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sorted centroids, codes of the nearest centroid; a midpoint goes to the upper one)."""
        centroids = self.centroids.sort().values
        midpoints = (centroids[1:] + centroids[:-1]) / 2
        return centroids, torch.bucketize(weight.detach().float(), midpoints.detach(), right=True)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        centroids, codes = self.assign(weight)
        return centroids[codes].to(weight.dtype) + (weight - weight.detach())

    def convert(self, weight: torch.Tensor, bias: torch.Tensor | None) -> QuantizedLinear:
        centroids, codes = self.assign(weight)
        packed = formats.CodebookWeight(
            formats.pack_codes(codes, formats.storage_bits(self.bits)), centroids.detach().clone(), self.bits
        )
        return CodebookLinear.from_packed(packed, weight.shape[1], weight.shape[0], bias, bits=self.bits)


class LSQFakeQuantizer(WeightFakeQuantizer):
    """Learned step size, symmetric: int8 per output channel or int4 per group of K."""

    def __init__(self, weight: torch.Tensor, bits: int, group_size: int | None):
        super().__init__()
        self.bits, self.group_size = bits, group_size
        self.q_min, self.q_max = (-127, 127) if bits == 8 else (-8, 7)
        grouped = self._grouped(weight.detach().float())
        self.step = nn.Parameter(2 * grouped.abs().mean(-1, keepdim=True) / math.sqrt(self.q_max))
        self.grad_factor = 1.0 / math.sqrt(grouped.shape[-1] * self.q_max)

    def _grouped(self, weight: torch.Tensor) -> torch.Tensor:
        """(N, K) → (N, 1, K) per channel or (N, K/G, G) per group: the last axis shares a step."""
        n, k = weight.shape
        return weight.reshape(n, k // self.group_size if self.group_size else 1, -1)

    def codes(self, weight: torch.Tensor) -> torch.Tensor:
        """Integer levels in [Q_N, Q_P], grouped like the step."""
        return torch.round(self._grouped(weight) / self.step).clamp(self.q_min, self.q_max)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        step = scale_grad(self.step, self.grad_factor)
        fake = round_ste((self._grouped(weight) / step).clamp(self.q_min, self.q_max)) * step
        return fake.reshape(weight.shape)

    def convert(self, weight: torch.Tensor, bias: torch.Tensor | None) -> QuantizedLinear:
        n, k = weight.shape
        q = self.codes(weight.detach().float())
        step = self.step.detach().float()
        if self.bits == 8:
            packed = formats.Int8Weight(q.reshape(n, k).to(torch.int8), step.reshape(n).clone())
            return Int8WeightOnlyLinear.from_packed(packed, k, n, bias)
        codes = (q + 8).reshape(n, k).to(torch.int64)  # asymmetric int4 with zero point 8
        groups = k // self.group_size
        zero = torch.full((groups, n), 8, dtype=torch.uint8, device=weight.device)
        packed = formats.Int4Weight(
            formats.pack_codes(codes, 4), step.reshape(n, groups).t().contiguous(), zero, self.group_size
        )
        return Int4WeightOnlyLinear.from_packed(
            packed, k, n, bias, group_size=self.group_size, scale_dtype=torch.float32
        )


class DoReFaFakeQuantizer(WeightFakeQuantizer):
    """DoReFa-Net k-bit weights: 2^k uniform levels in [−1, 1] after a tanh normalisation."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits
        self.levels = 2**bits - 1

    def normalized(self, weight: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(weight)
        return t / (2 * t.abs().max()) + 0.5

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 2 * round_ste(self.levels * self.normalized(weight)) / self.levels - 1

    def convert(self, weight: torch.Tensor, bias: torch.Tensor | None) -> QuantizedLinear:
        codes = torch.round(self.levels * self.normalized(weight.detach().float())).to(torch.int64)
        levels = torch.arange(2**self.bits, dtype=torch.float32, device=weight.device)
        codebook = 2 * levels / self.levels - 1
        packed = formats.CodebookWeight(formats.pack_codes(codes, formats.storage_bits(self.bits)), codebook, self.bits)
        return CodebookLinear.from_packed(packed, weight.shape[1], weight.shape[0], bias, bits=self.bits)


class _TTQFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, w_pos, w_neg, threshold):
        pos, neg = weight > threshold, weight < -threshold
        ctx.save_for_backward(pos, neg, w_pos, w_neg)
        return w_pos * pos - w_neg * neg

    @staticmethod
    def backward(ctx, grad):
        pos, neg, w_pos, w_neg = ctx.saved_tensors
        grad_weight = grad * torch.where(pos, w_pos, torch.where(neg, w_neg, torch.ones_like(w_pos)))
        return grad_weight, (grad * pos).sum().reshape(w_pos.shape), -(grad * neg).sum().reshape(w_neg.shape), None


class TTQFakeQuantizer(WeightFakeQuantizer):
    """Trained ternary quantization: learnable positive and negative values per layer."""

    def __init__(self, weight: torch.Tensor, threshold: float):
        super().__init__()
        self.threshold_ratio = threshold
        w = weight.detach().float()
        delta = self.threshold(w)
        pos, neg = w[w > delta], -w[w < -delta]
        self.w_pos = nn.Parameter(pos.mean() if pos.numel() else torch.tensor(0.0))
        self.w_neg = nn.Parameter(neg.mean() if neg.numel() else torch.tensor(0.0))

    def threshold(self, weight: torch.Tensor) -> torch.Tensor:
        return self.threshold_ratio * weight.detach().abs().max()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _TTQFunction.apply(weight, self.w_pos, self.w_neg, self.threshold(weight)).to(weight.dtype)

    def convert(self, weight: torch.Tensor, bias: torch.Tensor | None) -> QuantizedLinear:
        w = weight.detach().float()
        n, k = w.shape
        t = formats.ternary_codes(w, self.threshold(w))
        pos = self.w_pos.detach().float().expand(n).clone()
        neg = self.w_neg.detach().float().expand(n).clone()
        packed = formats.LowBitWeight(formats.pack_ternary(t), pos, neg, 2)
        return TernaryLinear.from_packed(packed, k, n, bias, asymmetric=True)


# ----------------------------------------------------------------------------- QAT-only configs


@dataclass(frozen=True)
class LSQConfig:
    """LSQ learnable step: ``bits`` 8 (per channel, ``group_size`` None) or 4 (``group_size`` 32/64/128)."""

    bits: int = 8
    group_size: int | None = None

    def __post_init__(self):
        check_choice(self.bits, "bits", (8, 4))
        if self.bits == 4:
            check_choice(self.group_size, "group_size", formats.INT4_GROUP_SIZES)
        elif self.group_size is not None:
            raise ValueError(f"group_size: int8 LSQ steps are per output channel, expected None, got {self.group_size}")

    def gemm_skip_reason(self, out_features: int, in_features: int) -> str | None:
        if self.group_size and in_features % self.group_size:
            return f"in_features {in_features} is not a multiple of group_size {self.group_size}"
        return None

    def make_quantizer(self, weight: torch.Tensor) -> WeightFakeQuantizer:
        return LSQFakeQuantizer(weight, self.bits, self.group_size)


@dataclass(frozen=True)
class DoReFaConfig:
    """DoReFa-Net weights with ``bits`` ∈ 2..8; converts to a codebook layer."""

    bits: int = 4

    def __post_init__(self):
        check_choice(self.bits, "bits", formats.CODEBOOK_BITS)

    def gemm_skip_reason(self, out_features: int, in_features: int) -> str | None:
        return None

    def make_quantizer(self, weight: torch.Tensor) -> WeightFakeQuantizer:
        return DoReFaFakeQuantizer(self.bits)


@dataclass(frozen=True)
class TTQConfig:
    """Trained ternary quantization with threshold ``threshold``·max|w| (0.05 in the paper)."""

    threshold: float = 0.05

    def __post_init__(self):
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold: expected a fraction of max|w| in [0, 1), got {self.threshold}")

    def gemm_skip_reason(self, out_features: int, in_features: int) -> str | None:
        return None

    def make_quantizer(self, weight: torch.Tensor) -> WeightFakeQuantizer:
        return TTQFakeQuantizer(weight, self.threshold)


QATConfig = WeightConfig | LSQConfig | DoReFaConfig | TTQConfig


def make_weight_quantizer(config: QATConfig, weight: torch.Tensor) -> WeightFakeQuantizer:
    """The quantizer ``config`` trains with, initialised from the (N, K) ``weight``."""
    if isinstance(config, CodebookWeightConfig):
        return CodebookFakeQuantizer(weight, config.bits, config.iterations)
    if isinstance(config, WeightConfig):
        return STEFakeQuantizer(config)
    return config.make_quantizer(weight)


# ----------------------------------------------------------------------------- fake-quant modules


class _AttachesQuantizer:
    def attach(self, quantizer: WeightFakeQuantizer, quantize_activations: bool):
        """Set the weight quantizer and whether activations are fake-quantized per token (W8A8)."""
        self.weight_quantizer = quantizer
        self.quantize_activations = quantize_activations
        return self

    def conversion_source(self) -> str:
        return "already prepared for QAT (convert_qat makes it a quantized layer)"


class FakeQuantLinear(_AttachesQuantizer, nn.Linear):
    """nn.Linear whose forward uses ``weight_quantizer(weight)`` (and per-token activations for W8A8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_activations:
            x = fake_quantize_per_token(x)
        return F.linear(x, self.weight_quantizer(self.weight), self.bias)

    def to_quantized(self) -> QuantizedLinear:
        return self.weight_quantizer.convert(self.weight.detach(), None if self.bias is None else self.bias.detach())


class FakeQuantConv2d(_AttachesQuantizer, nn.Conv2d):
    """nn.Conv2d (groups = 1) whose forward uses the fake-quantized (N, C·kh·kw) weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_quantizer(self.weight.reshape(self.out_channels, -1))
        if not self.quantize_activations:
            return self._conv_forward(x, weight.reshape(self.weight.shape), self.bias)

        def gemm(rows: torch.Tensor) -> torch.Tensor:
            return F.linear(fake_quantize_per_token(rows), weight, self.bias)

        return conv2d_as_gemm(x, gemm, self.kernel_size, self.stride, self.padding, self.dilation)

    def to_quantized(self) -> GemmConv2d:
        with torch.no_grad():
            return GemmConv2d.from_dense(self, lambda linear: self.weight_quantizer.convert(linear.weight, linear.bias))


def _fake_quant_copy(module: nn.Module, config: QATConfig) -> nn.Module:
    """A FakeQuant* module sharing ``module``'s parameters, with the config's quantizer attached."""
    factory = dict(device=module.weight.device, dtype=module.weight.dtype)
    has_bias = module.bias is not None
    if isinstance(module, nn.Conv2d):
        fake = FakeQuantConv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            has_bias,
            module.padding_mode,
            **factory,
        )
    else:
        fake = FakeQuantLinear(module.in_features, module.out_features, has_bias, **factory)
    fake.weight, fake.bias = module.weight, module.bias
    fake.train(module.training)
    quantizer = make_weight_quantizer(config, module.weight.detach().reshape(module.weight.shape[0], -1))
    return fake.attach(quantizer, isinstance(config, Int8DynamicActivationInt8WeightConfig))


@dataclass(frozen=True)
class _PrepareQAT(ConversionConfig):
    qat: QATConfig

    def describe(self) -> str:
        return repr(self.qat)

    def convert_module(self, module: nn.Module, fqn: str, plan: object) -> nn.Module | Skip | None:
        source = gemm_source(module)
        if source is None or isinstance(source, Skip):
            return source
        reason = self.qat.gemm_skip_reason(source.weight.shape[0], source.weight[0].numel())
        return Skip(reason) if reason is not None else _fake_quant_copy(source, self.qat)


@dataclass(frozen=True)
class _ConvertQAT(ConversionConfig):
    def convert_module(self, module: nn.Module, fqn: str, plan: object) -> nn.Module | None:
        return module.to_quantized() if isinstance(module, (FakeQuantLinear, FakeQuantConv2d)) else None


def prepare_qat(model: nn.Module, config: QATConfig, filter_fn: FilterFn | None = None) -> ConversionReport:
    """Swap every eligible Linear / groups=1 Conv2d for its fake-quant version (in place); returns
    core's report. Eligibility is that of :func:`slimtorch.quant.quantize_`."""
    if not isinstance(config, (WeightConfig, LSQConfig, DoReFaConfig, TTQConfig)):
        raise TypeError(f"config: expected a quantization or QAT config (e.g. LSQConfig()), got {config!r}")
    return convert_model(model, _PrepareQAT(config), filter_fn, conversion="prepare_qat")


def convert_qat(model: nn.Module) -> ConversionReport:
    """Replace every fake-quant module by the real quantized layer it trained for (in place)."""
    return convert_model(model, _ConvertQAT(), conversion="convert_qat")

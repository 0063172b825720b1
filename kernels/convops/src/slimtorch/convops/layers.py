"""Drop-in layers over the convops kernels.

Each convolution layer subclasses ``nn.Conv2d`` and keeps its parameters (``weight``, ``bias``),
so its ``state_dict`` loads into (and from) the torch module it replaces; the fused activation
is a constructor argument (``activation``), folded BatchNorm lives in ``weight`` / ``bias``
(``slimtorch.convops.fuse_``). Layers accept NCHW and channels_last inputs and return
the input's memory format, trace with ``torch.compile(fullgraph=True)`` and train.

    DepthwiseConv2d          conv with groups = channels (k×k, stride, padding, dilation,
                             channel multiplier) + bias + activation, one kernel
    GroupedPointwiseConv2d   grouped 1x1 conv reading its input channel-shuffled
                             (``shuffle_groups``) and/or writing its output shuffled
                             (``out_shuffle_groups``) + bias + activation, one kernel
    ChannelShuffle           nn.ChannelShuffle in one gather pass
    Shift2d                  grouped shift over a k×k neighbourhood (no parameters)
    ActiveShift2d            learnable real per-channel offsets, bilinear
    SparseShift2d            learnable per-channel offsets rounded to integers (sparsity penalty)
    ShiftConv2d              shift + 1x1 conv (+ bias + activation) fused: the shift costs no pass
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.fx
from torch import nn

from slimtorch.convops._layout import depthwise_weight_kkc, padding4, pair
from slimtorch.convops.depthwise import MAX_KERNEL_SIZE, depthwise_conv2d
from slimtorch.convops.index_maps import grouped_shift_offsets
from slimtorch.convops.pointwise import pointwise_conv2d
from slimtorch.convops.shift import SHIFT_BACKENDS, active_shift, integer_shift, quantized_shift
from slimtorch.convops.shuffle import channel_shuffle, shuffle_concat
from slimtorch.core.activations import ACTIVATIONS, activation_module
from slimtorch.core.checks import check_choice, check_divisible, check_positive, check_positive_int
from slimtorch.core.dispatch import check_backend


def _with_activation(conv: nn.Module, activation: str) -> nn.Module:
    return conv if activation == "none" else nn.Sequential(conv, activation_module(activation))


def _numeric_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """A torch conv's padding as (h, w) ints ('valid' -> 0, 'same' -> dilation·(k−1)/2)."""
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":
        return tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size, strict=True))
    return pair(tuple(conv.padding), "padding")


def _torch_conv(layer: nn.Conv2d) -> nn.Conv2d:
    """A plain nn.Conv2d with the layer's hyper-parameters and parameters."""
    conv = nn.Conv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups,
        layer.bias is not None,
        device=layer.weight.device,
        dtype=layer.weight.dtype,
    )
    conv.load_state_dict(layer.state_dict())
    return conv


def _options_of(conv: nn.Conv2d, activation: str) -> dict:
    """Constructor options a layer built from ``conv`` shares with it."""
    return dict(bias=conv.bias is not None, activation=activation, device=conv.weight.device, dtype=conv.weight.dtype)


def _loaded(layer: nn.Conv2d, conv: nn.Conv2d) -> nn.Conv2d:
    layer.load_state_dict(conv.state_dict())
    return layer


def _check_convertible(conv: nn.Conv2d, name: str) -> None:
    if conv.padding_mode != "zeros":
        raise ValueError(f"{name}: padding_mode {conv.padding_mode!r} is not supported (only 'zeros')")


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise conv2d (groups = channels) with fused bias / folded BN and activation.

    ``kernel_size`` odd, 1..11 (int or pair); ``padding`` None gives (k//2)·dilation ("same" at
    stride 1); ``channel_multiplier`` M gives C·M output channels. Parameters as
    ``nn.Conv2d(channels, channels·M, kernel_size, stride, padding, dilation, groups=channels,
    bias=bias)``. ``activation`` one of slimtorch.core.activations.ACTIVATIONS.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: Optional[int | tuple[int, int]] = None,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
        channel_multiplier: int = 1,
        activation: str = "none",
        device=None,
        dtype=None,
    ):
        kh, kw = pair(kernel_size, "kernel_size")
        if not all(k % 2 == 1 and 1 <= k <= MAX_KERNEL_SIZE for k in (kh, kw)):
            raise ValueError(f"kernel_size: expected odd sizes between 1 and {MAX_KERNEL_SIZE}, got {kh}x{kw}")
        dh, dw = pair(dilation, "dilation")
        if padding is None:
            padding = (kh // 2 * dh, kw // 2 * dw)
        check_positive(channels, "channels")
        check_positive(channel_multiplier, "channel_multiplier")
        check_choice(activation, "activation", ACTIVATIONS)
        super().__init__(
            channels,
            channels * channel_multiplier,
            (kh, kw),
            stride,
            pair(padding, "padding"),
            (dh, dw),
            groups=channels,
            bias=bias,
            device=device,
            dtype=dtype,
        )
        self.activation = activation
        self._kkc_cache: Optional[tuple[torch.Tensor, int, torch.Tensor]] = None  # (weight alias, version, copy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        geometry = (list(self.stride), padding4(self.padding), list(self.dilation))
        return depthwise_conv2d(x, self.weight, None, self.bias, None, *geometry, self.activation, self.weight_kkc())

    def weight_kkc(self) -> Optional[torch.Tensor]:
        """The kernels' fp32 (k, k, C_pad) copy of ``weight`` (``_layout.depthwise_weight_kkc``), derived
        once and cached here; ``weight`` itself stays torch's (C·M, 1, k, k) parameter (state_dict, timm,
        checkpoints) and receives the gradients.

        The cache is keyed on the weight's storage (an alias of it is held, so its address cannot be
        reused while cached), its version counter (every in-place write through the parameter bumps it:
        optimizer steps, ``load_state_dict``, ``nn.init``), dtype, device and shape (``.to()`` gives a new
        storage). Writes through ``weight.data`` bypass the version counter: call ``clear_weight_cache()``
        after those. None while ``torch.compile`` or ``torch.fx`` traces (``weight`` is then a proxy; the op
        derives the copy in its launcher)."""
        w = self.weight
        if torch.compiler.is_compiling() or isinstance(w, torch.fx.Proxy):
            return None
        cached = getattr(self, "_kkc_cache", None)  # modules pickled before the cache existed have none
        if cached is not None:
            alias, version, kkc = cached
            same = alias.data_ptr() == w.data_ptr() and alias.shape == w.shape and alias.dtype == w.dtype
            if same and alias.device == w.device and version == w._version:
                return kkc
        kkc = depthwise_weight_kkc(w)
        self._kkc_cache = (w.detach(), w._version, kkc)
        return kkc

    def clear_weight_cache(self) -> None:
        """Drop the cached (k, k, C) weight copy (it is derived again at the next forward)."""
        self._kkc_cache = None

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, activation: str = "none") -> DepthwiseConv2d:
        """The layer computing ``activation(conv(x))`` for a torch depthwise ``conv`` (same parameters)."""
        _check_convertible(conv, "conv")
        if conv.groups != conv.in_channels or conv.out_channels % conv.in_channels != 0:
            raise ValueError(
                f"conv: expected a depthwise conv (groups == in_channels and out_channels a multiple), got "
                f"in={conv.in_channels}, out={conv.out_channels}, groups={conv.groups}"
            )
        multiplier = conv.out_channels // conv.in_channels
        geometry = (conv.kernel_size, conv.stride, _numeric_padding(conv), conv.dilation)
        layer = cls(conv.in_channels, *geometry, channel_multiplier=multiplier, **_options_of(conv, activation))
        return _loaded(layer, conv)

    def to_dense(self) -> nn.Module:
        """An equivalent torch module (nn.Conv2d, followed by the activation module if any)."""
        return _with_activation(_torch_conv(self), self.activation)

    def conversion_source(self) -> nn.Conv2d | str:
        """For core's conversion walk: the plain conv it computes, or why it is more than one."""
        return _fused_reason(self) or _torch_conv(self)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation!r}"


def _check_equal_strides(stride: tuple[int, int]) -> None:
    """The pointwise kernels take one stride for both axes (a 1x1 conv samples every s-th pixel)."""
    if stride[0] != stride[1]:
        raise ValueError(f"stride: expected equal strides along H and W (one int), got {tuple(stride)}")


class GroupedPointwiseConv2d(nn.Conv2d):
    """Grouped 1x1 conv with channel shuffles folded into its index maps, bias and activation.

    y = channel_shuffle(act(conv1x1_groups(channel_shuffle(x, shuffle_groups)) + bias), out_shuffle_groups)

    ``shuffle_groups`` (input side: ShuffleNet's "shuffle → GConv") and ``out_shuffle_groups``
    (output side: "GConv → BN → ReLU → shuffle") default to None (no shuffle). Parameters as
    ``nn.Conv2d(in_channels, out_channels, 1, stride, groups=groups, bias=bias)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int = 1,
        shuffle_groups: Optional[int] = None,
        out_shuffle_groups: Optional[int] = None,
        stride: int = 1,
        bias: bool = False,
        activation: str = "none",
        device=None,
        dtype=None,
    ):
        check_positive_int(in_channels, "in_channels")
        check_positive_int(out_channels, "out_channels")
        for name, value, channels in (
            ("shuffle_groups", shuffle_groups, in_channels),
            ("out_shuffle_groups", out_shuffle_groups, out_channels),
        ):
            if value is not None:
                check_positive(value, name)
                check_divisible(channels, value, f"{name}: channels")
        check_choice(activation, "activation", ACTIVATIONS)
        super().__init__(in_channels, out_channels, 1, stride, 0, 1, groups, bias, device=device, dtype=dtype)
        _check_equal_strides(self.stride)
        self.shuffle_groups = shuffle_groups
        self.out_shuffle_groups = out_shuffle_groups
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shuffles = (self.shuffle_groups or 1, self.out_shuffle_groups or 1)
        return pointwise_conv2d(
            x, self.weight, None, self.bias, None, self.groups, *shuffles, self.stride[0], self.activation
        )

    @classmethod
    def from_dense(
        cls,
        conv: nn.Conv2d,
        activation: str = "none",
        shuffle_groups: Optional[int] = None,
        out_shuffle_groups: Optional[int] = None,
    ) -> GroupedPointwiseConv2d:
        """The layer for a torch 1x1 ``conv`` (any groups, no padding, equal strides)."""
        _check_convertible(conv, "conv")
        if conv.kernel_size != (1, 1) or _numeric_padding(conv) != (0, 0) or conv.stride[0] != conv.stride[1]:
            raise ValueError(
                f"conv: expected a 1x1 conv without padding and with equal strides, got kernel "
                f"{conv.kernel_size}, padding {conv.padding}, stride {conv.stride}"
            )
        shuffles = (shuffle_groups, out_shuffle_groups)
        layer = cls(
            conv.in_channels, conv.out_channels, conv.groups, *shuffles, conv.stride[0], **_options_of(conv, activation)
        )
        return _loaded(layer, conv)

    def to_dense(self) -> nn.Module:
        """Equivalent torch modules: [nn.ChannelShuffle,] nn.Conv2d[, activation][, nn.ChannelShuffle]."""
        conv = _torch_conv(self)
        parts = [] if self.shuffle_groups is None else [nn.ChannelShuffle(self.shuffle_groups)]
        parts.append(_with_activation(conv, self.activation))
        if self.out_shuffle_groups is not None:
            parts.append(nn.ChannelShuffle(self.out_shuffle_groups))
        return parts[0] if len(parts) == 1 else nn.Sequential(*parts)

    def conversion_source(self) -> nn.Conv2d | str:
        """For core's conversion walk: the plain conv it computes, or why it is more than one."""
        return _fused_reason(self) or _torch_conv(self)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, shuffle_groups={self.shuffle_groups}, "
            f"out_shuffle_groups={self.out_shuffle_groups}, activation={self.activation!r}"
        )


class ChannelShuffle(nn.ChannelShuffle):
    """``nn.ChannelShuffle(groups)`` as one gather pass (any memory format, trains)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)


class ShuffleConcat(nn.Module):
    """``channel_shuffle(torch.cat([a, b], 1), groups)`` in one pass: ShuffleNet V2's unit tail
    (concat the two branches, shuffle with 2 groups) without the concatenated copy."""

    def __init__(self, groups: int = 2):
        super().__init__()
        check_positive(groups, "groups")
        self.groups = groups

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return shuffle_concat(a, b, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class Shift2d(nn.Module):
    """Grouped shift (Wu et al. 2018): C channels in k² groups, each moved by one (dy, dx) of a
    k×k neighbourhood (× dilation), zero fill. No parameters; the offsets are a non-persistent
    int32 buffer (C, 2). ``backend`` by core's rule: "auto" (Triton), "triton", "cuda" (opt-in,
    unverified) or "reference"."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1, backend: str = "auto"):
        super().__init__()
        check_backend(backend, SHIFT_BACKENDS, "Shift2d")
        self.channels, self.kernel_size, self.dilation, self.backend = channels, kernel_size, dilation, backend
        self.register_buffer("offsets", grouped_shift_offsets(channels, kernel_size, dilation), persistent=False)

    def integer_offsets(self) -> torch.Tensor:
        return self.offsets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return integer_shift(x, self.offsets, self.backend)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, dilation={self.dilation}"


def _uniform_offsets(channels: int, init_range: float) -> nn.Parameter:
    check_positive(channels, "channels")
    return nn.Parameter(torch.empty(channels, 2).uniform_(-init_range, init_range))


class ActiveShift2d(nn.Module):
    """Active shift (Jeon & Kim 2018): learnable real offsets ``offsets`` (C, 2) = (dy, dx),
    bilinear interpolation, zero fill; gradients w.r.t. input and offsets. Initialised
    uniformly in [−init_range, init_range]."""

    def __init__(self, channels: int, init_range: float = 1.0):
        super().__init__()
        self.offsets = _uniform_offsets(channels, init_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return active_shift(x, self.offsets)


class SparseShift2d(nn.Module):
    """Sparse shift (Chen et al. 2019): learnable offsets ``offsets`` (C, 2) used rounded to
    integers (quantization-aware: the forward shifts by round(offsets), the offsets receive the
    active shift's gradient). Add ``sparsity_loss()`` (Σ|offsets|, weighted) to the training loss
    to drive most channels to (0, 0). ``backend`` as for :class:`Shift2d`."""

    def __init__(self, channels: int, init_range: float = 1.0, backend: str = "auto"):
        super().__init__()
        check_backend(backend, SHIFT_BACKENDS, "SparseShift2d")
        self.backend = backend
        self.offsets = _uniform_offsets(channels, init_range)

    def integer_offsets(self) -> torch.Tensor:
        return torch.round(self.offsets.detach()).to(torch.int32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantized_shift(x, self.offsets, self.backend)

    def sparsity_loss(self) -> torch.Tensor:
        return self.offsets.abs().sum()

    def num_shifted_channels(self) -> int:
        return int((self.integer_offsets() != 0).any(dim=1).sum())


SHIFT_KINDS = {"grouped": Shift2d, "sparse": SparseShift2d, "active": ActiveShift2d}


class ShiftConv2d(nn.Conv2d):
    """Shift followed by a 1x1 conv (+ bias + activation), ShiftNet's building block.

    ``shift``: "grouped" (Shift2d over ``kernel_size``², fixed), "sparse" (SparseShift2d) or
    "active" (ActiveShift2d). Integer shifts (grouped; sparse when its offsets are not being
    trained) are fused into the GEMM's operand load: one kernel, no shifted copy. The active
    shift, and the sparse shift while training its offsets, run the shift then the 1x1.
    Parameters: those of ``nn.Conv2d(in_channels, out_channels, 1, stride, bias=bias)`` plus
    ``shift.offsets`` for the learnable shifts.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        shift: str = "grouped",
        dilation: int = 1,
        bias: bool = False,
        activation: str = "none",
        device=None,
        dtype=None,
    ):
        check_positive_int(in_channels, "in_channels")
        check_positive_int(out_channels, "out_channels")
        check_choice(shift, "shift", tuple(SHIFT_KINDS))
        check_choice(activation, "activation", ACTIVATIONS)
        super().__init__(in_channels, out_channels, 1, stride, 0, 1, 1, bias, device=device, dtype=dtype)
        _check_equal_strides(self.stride)
        self.activation = activation
        if shift == "grouped":
            self.shift = Shift2d(in_channels, kernel_size, dilation)
        else:
            self.shift = SHIFT_KINDS[shift](in_channels)
        self.shift.to(device=device)

    def _conv(self, x: torch.Tensor, offsets: Optional[torch.Tensor]) -> torch.Tensor:
        return pointwise_conv2d(x, self.weight, None, self.bias, offsets, 1, 1, 1, self.stride[0], self.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.shift, ActiveShift2d) or (
            isinstance(self.shift, SparseShift2d) and self.shift.offsets.requires_grad and torch.is_grad_enabled()
        ):
            return self._conv(self.shift(x), None)
        return self._conv(x, self.shift.integer_offsets())

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation!r}"

    def conversion_source(self) -> str:
        return (
            f"{type(self).__name__} shifts its input before the 1x1 convolution (a conversion of the convolution "
            "alone would drop the shift)"
        )


def _fused_reason(layer: nn.Conv2d) -> str | None:
    """Why a fused layer is more than its convolution (None: it is just the convolution)."""
    fused = [f"activation {layer.activation!r}"] if layer.activation != "none" else []
    for attribute in ("shuffle_groups", "out_shuffle_groups"):
        if getattr(layer, attribute, None) is not None:
            fused.append(f"{attribute}={getattr(layer, attribute)}")
    if not fused:
        return None
    return (
        f"{type(layer).__name__} fuses {', '.join(fused)} into the convolution (a conversion of the convolution "
        "alone would drop it)"
    )

"""Building blocks of the zoo and the one place that decides which layers implement them.

**The convops seam.** Every depthwise convolution, (grouped, shuffled) pointwise convolution,
channel shuffle and shift in the zoo is created by a factory of the first section below, which
returns the ``slimtorch.convops`` layer (``DepthwiseConv2d``, ``GroupedPointwiseConv2d``,
``channel_shuffle`` / ``ChannelShuffle``, ``Shift2d``, ``ShiftConv2d``): Triton kernels on the
GPU, their pure-torch references on CPU. The convops conv layers subclass ``nn.Conv2d``, so zoo
state_dicts are those of plain torch models.

Models keep convolution → BatchNorm → activation as separate modules (:class:`ConvNormAct`,
timm's ConvNormAct layout) so they train; folding BatchNorm and fusing activations for
deployment is convops' ``fold_bn`` / ``convert`` (``slimtorch.zoo.variants`` applies them).
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
from timm.layers import SelectAdaptivePool2d
from timm.layers import make_divisible as _timm_make_divisible
from timm.models._features import feature_take_indices  # timm >= 1.0.8, used by timm's own models
from torch import nn

from slimtorch import convops
from slimtorch.core.activations import activation_module

# ----------------------------------------------------------------------------- the convops seam


def depthwise_conv(
    channels: int, kernel_size: int, stride: int = 1, dilation: int = 1, channel_multiplier: int = 1
) -> nn.Module:
    """``channels → channels·channel_multiplier`` depthwise k×k convolution, padding
    ``k//2·dilation``, no bias."""
    return convops.DepthwiseConv2d(
        channels, kernel_size, stride, dilation=dilation, channel_multiplier=channel_multiplier
    )


def grouped_pointwise_conv(
    in_channels: int, out_channels: int, groups: int = 1, shuffle_groups: Optional[int] = None, bias: bool = False
) -> nn.Module:
    """1x1 convolution in ``groups`` groups of the channel-shuffled input
    ``channel_shuffle(x, shuffle_groups)`` (no shuffle when None); the shuffle is folded into
    the kernel's input read."""
    return convops.GroupedPointwiseConv2d(in_channels, out_channels, groups, shuffle_groups, bias=bias)


def pointwise_conv(in_channels: int, out_channels: int, bias: bool = False) -> nn.Module:
    """Dense 1x1 convolution (a one-group :func:`grouped_pointwise_conv`)."""
    return grouped_pointwise_conv(in_channels, out_channels, 1, None, bias=bias)


channel_shuffle = convops.channel_shuffle
"""``channel_shuffle(x, groups)``: ``out[:, j·groups + i] = x[:, i·(C/groups) + j]``."""


def channel_shuffle_layer(groups: int) -> nn.Module:
    """The module form of :func:`channel_shuffle`."""
    return convops.ChannelShuffle(groups)


def shuffle_concat_layer(groups: int = 2) -> nn.Module:
    """``module(a, b) = channel_shuffle(cat([a, b], 1), groups)`` in one pass (ShuffleNet V2)."""
    return convops.ShuffleConcat(groups)


def shift2d(channels: int, kernel_size: int = 3) -> nn.Module:
    """Grouped shift (Wu et al. 2018): no parameters, no FLOPs."""
    return convops.Shift2d(channels, kernel_size)


def shift_conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Module:
    """Grouped shift over a k×k neighbourhood fused with a strided 1x1 convolution; ``weight`` is
    ``(out, in, 1, 1)``."""
    return convops.ShiftConv2d(in_channels, out_channels, kernel_size, stride, shift="grouped")


def dense_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: Optional[int] = None,
    bias: bool = False,
) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` (stems, 3x3 expand convolutions, strided 1x1 shortcuts): cuDNN's job."""
    padding = kernel_size // 2 if padding is None else padding
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


# ----------------------------------------------------------------------------- activations, widths


def make_act(name: str) -> nn.Module:
    """An activation name of core's epilogues (``"relu" | "relu6" | "hardswish" | ...``) -> a fresh
    module (ReLU / ReLU6 in place)."""
    return activation_module(name, inplace=True)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), never more than 10% below ``value``:
    the rounding of torchvision's and timm's MobileNets (``_make_divisible``)."""
    return int(_timm_make_divisible(value, divisor))


def pruned_width(channels: int, ratio: float, divisor: int = 8) -> int:
    """Width left after pruning ``ratio`` of ``channels`` (rounded by :func:`make_divisible`)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio: expected a pruned fraction in [0, 1), got {ratio}")
    return make_divisible(channels * (1.0 - ratio), divisor)


# ----------------------------------------------------------------------------- composite blocks


class ConvNormAct(nn.Module):
    """``act(bn(conv(x)))`` as three modules ``conv``, ``bn`` (Identity when ``norm=False``), ``act``."""

    def __init__(self, conv: nn.Module, channels: int, act: str = "none", *, norm: bool = True, bn_eps: float = 1e-5):
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps) if norm else nn.Identity()
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """``x · hardsigmoid(conv_expand(relu(conv_reduce(mean_hw(x)))))`` (MobileNetV3's SE)."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv_reduce = dense_conv(channels, reduced, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = dense_conv(reduced, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.conv_expand(self.act(self.conv_reduce(scale))))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 block: [1x1 expand in→mid] → k×k depthwise (stride) → [SE] → 1x1 project
    mid→out (no activation), plus the input when ``stride == 1`` and ``in == out``.

    ``expand=False`` (expansion ratio 1) drops the expand convolution; then ``mid == in``.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        kernel_size: int = 3,
        stride: int = 1,
        *,
        act: str = "relu6",
        se_chs: int = 0,
        expand: bool = True,
        bn_eps: float = 1e-5,
    ):
        super().__init__()
        if not expand and mid_chs != in_chs:
            raise ValueError(f"mid_chs: a block without expand convolution needs mid == in ({in_chs}), got {mid_chs}")
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = ConvNormAct(pointwise_conv(in_chs, mid_chs), mid_chs, act, bn_eps=bn_eps) if expand else None
        self.conv_dw = ConvNormAct(depthwise_conv(mid_chs, kernel_size, stride), mid_chs, act, bn_eps=bn_eps)
        self.se = SqueezeExcite(mid_chs, se_chs) if se_chs else None
        self.conv_pwl = ConvNormAct(pointwise_conv(mid_chs, out_chs), out_chs, "none", bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.conv_pw is None else self.conv_pw(x)
        out = self.conv_dw(out)
        if self.se is not None:
            out = self.se(out)
        out = self.conv_pwl(out)
        if not self.has_skip:
            return out
        # in place when no graph is recorded (out is this block's own fresh tensor), as torchvision's V3 does
        return out + x if torch.is_grad_enabled() else out.add_(x)


# ----------------------------------------------------------------------------- the timm model interface


POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")
"""Global pooling of the zoo's heads (timm's ``SelectAdaptivePool2d``; ``""``: none, the head then
acts on every position of the unpooled map)."""


def make_pool(global_pool: str) -> SelectAdaptivePool2d:
    """timm's pooling, flattened to ``(N, C·k)`` unless ``global_pool == ""`` (then ``(N, C, H, W)``)."""
    if global_pool not in POOL_TYPES:
        raise ValueError(f"global_pool: expected one of {POOL_TYPES}, got {global_pool!r}")
    return SelectAdaptivePool2d(pool_type=global_pool, flatten=bool(global_pool))


def per_position(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A channel layer (``Linear`` over C) applied at every position of an NCHW map: the head of
    a model whose pooling was removed (``global_pool=""``), as a 1x1 convolution would."""
    return module(x.movedim(1, -1)).movedim(-1, 1)


def _check_num_classes(num_classes: object) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        raise TypeError(f"num_classes: expected an int >= 0 (0: no classifier), got {num_classes!r}")
    if num_classes < 0:
        raise ValueError(f"num_classes: expected an int >= 0 (0: no classifier), got {num_classes}")


class ZooModel(nn.Module):
    """The timm model interface every zoo model shares.

    A family's ``__init__`` builds its feature modules in execution order (timm's
    ``features_only`` wrapper runs the children in that order), sets ``in_chans`` and
    ``feature_info``, then calls :meth:`build_head`.
    ``forward = forward_head(forward_features(x))``.

    **The head**: ``global_pool`` (:func:`make_pool`) → dropout → ``classifier``;
    ``head_hidden_size`` is the pre-logits width (``num_features`` times the pooling's feature
    multiplier, or a family's pre-logits layer width). ``reset_classifier`` builds the new
    classifier on the model's device and dtype and in its training mode.

    **Intermediate features** (timm >= 1.0): ``feature_units`` names, in execution order, the
    modules ``forward_features`` applies (``"stages"`` stands for each of its stages); every
    ``feature_info`` entry is the output of one unit. :meth:`forward_intermediates` runs the units
    and collects those outputs; :meth:`prune_intermediate_layers` cuts ``stages`` after the last
    kept feature and replaces any other later unit by ``Identity``. Units after the last
    feature (MobileNetV2's and ShuffleNetV2's final 1x1 convolution, ShiftNet-A's final
    BatchNorm + ReLU) are the "norm" of timm's API: removed with ``prune_norm`` (or when the
    model is cut before them), and, where ``post_is_norm`` (they keep the channels), applied to
    the last feature by ``norm=True``.

    Weight conversion (``slimtorch.zoo.weights``): a family supporting foreign checkpoints
    overrides :meth:`source_prefix_map` and lists the sources in ``weight_sources``;
    ``source_bn_eps`` gives a source's BatchNorm epsilon where it differs from the model's.
    """

    feature_info: list[dict]
    in_chans: int
    feature_units: ClassVar[tuple[str, ...]] = ("stem", "stages")
    post_is_norm: ClassVar[bool] = False
    weight_sources: tuple[str, ...] = ()
    source_bn_eps: ClassVar[dict[str, float]] = {}

    # ------------------------------------------------------------------------- the head

    def build_head(self, num_features: int, num_classes: int, *, drop_rate: float = 0.0, global_pool: str = "avg"):
        """Pooling, dropout and classifier after ``num_features`` channels."""
        _check_num_classes(num_classes)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate: expected a dropout probability in [0, 1), got {drop_rate!r}")
        self.num_features = num_features
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = make_pool(global_pool)
        self.head_hidden_size = self.head_width()
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = self.new_classifier(num_classes)

    def head_width(self) -> int:
        """The pre-logits width for the current pooling (families with a pre-logits layer override)."""
        return self.num_features * self.global_pool.feat_mult()

    def new_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier on pooled features, or at every position when there is no pooling."""
        return per_position(self.classifier, x) if self.global_pool.is_identity() else self.classifier(x)

    def remove_pre_logits(self) -> None:
        """Drop a family's pre-logits layer (pruning); the head is then pooling + classifier."""

    def init_weights(self) -> None:
        """Kaiming-normal (fan-out) convolutions, unit BatchNorm, N(0, 0.01) linear layers."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classify(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def _like_self(self, module: nn.Module) -> nn.Module:
        """``module`` on this model's device and floating dtype, in its training mode."""
        ref = next((t for t in self.parameters() if t.is_floating_point()), None)
        if ref is not None:
            module = module.to(device=ref.device, dtype=ref.dtype)
        return module.train(self.training)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new classifier for ``num_classes`` (0: none); ``global_pool`` changes the pooling
        (None keeps it)."""
        _check_num_classes(num_classes)
        previous = self.global_pool
        if global_pool is not None:
            self.global_pool = self._like_self(make_pool(global_pool))
        try:
            width = self.head_width()
        except ValueError:
            self.global_pool = previous
            raise
        self.num_classes = num_classes
        self.head_hidden_size = width
        self.classifier = self._like_self(self.new_classifier(num_classes))

    # ------------------------------------------------------------------------- intermediate features

    def feature_modules(self) -> list[tuple[str, nn.Module]]:
        """``[(name, module), ...]``: what ``forward_features`` applies, in order."""
        units = []
        removed = getattr(self, "removed_units", ())
        for name in self.feature_units:
            if name in removed:
                continue
            module = getattr(self, name)
            if name == "stages":
                units += [(f"stages.{i}", stage) for i, stage in enumerate(module)]
            else:
                units.append((name, module))
        return units

    def _tap_positions(self, units: list[tuple[str, nn.Module]], indices) -> tuple[list[int], dict[int, int]]:
        """timm's ``feature_take_indices`` of ``feature_info`` and ``{unit position: feature index}``."""
        take, _ = feature_take_indices(len(self.feature_info), indices)
        position = {name: i for i, (name, _) in enumerate(units)}
        taps = {}
        for index in take:
            module = self.feature_info[index]["module"]
            if module not in position:
                raise ValueError(
                    f"indices: feature {index} ({module}) is not in this model any more "
                    "(removed by prune_intermediate_layers)"
                )
            taps[position[module]] = index
        return take, taps

    def _post_start(self, units: list[tuple[str, nn.Module]]) -> int:
        """Position of the first unit after the last feature (``len(units)`` when none)."""
        names = [name for name, _ in units]
        last = self.feature_info[-1]["module"]
        return names.index(last) + 1 if last in names else len(units)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[int | list[int] | tuple[int, ...]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's intermediate-features API: the ``feature_info`` features selected by ``indices``
        (None: all, an int n: the last n, a sequence: those, negative from the end), in execution
        order, and unless ``intermediates_only`` the final features first (``forward_features(x)``;
        with ``stop_early`` the features where the run stopped, after the last selected one).
        ``norm`` applies the final norm to the last feature where the family has one."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt: expected 'NCHW' (the zoo's only layout), got {output_fmt!r}")
        units = self.feature_modules()
        _, taps = self._tap_positions(units, indices)
        post = self._post_start(units)
        stop = max(taps) + 1 if stop_early else len(units)
        intermediates = []
        for position, (_, module) in enumerate(units[:stop]):
            x = module(x)
            if position in taps:
                feature = x
                if norm and self.post_is_norm and position == post - 1:
                    for _, later in units[post:]:
                        feature = later(feature)
                intermediates.append(feature)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Remove what the features selected by ``indices`` do not need: the units after the last
        of them (the final "norm" units only with ``prune_norm`` or when the model is cut before
        them) and, with ``prune_head``, the head (``reset_classifier(0, "")``). A cut model's
        ``num_features`` is the width of its last feature and its head is rebuilt for it.
        Returns the absolute feature indices to pass to :meth:`forward_intermediates`."""
        units = self.feature_modules()
        take, taps = self._tap_positions(units, indices)
        keep = max(taps) + 1
        post = self._post_start(units)
        cut = keep < post or (prune_norm and keep < len(units))
        if cut:
            stages = [name for name, _ in units[keep:] if name.startswith("stages.")]
            if stages:
                self.stages = self.stages[: int(stages[0].split(".")[1])]
            for name, _ in units[keep:]:
                if not name.startswith("stages."):
                    setattr(self, name, nn.Identity())  # forward_features still calls it
                    self.removed_units = (*getattr(self, "removed_units", ()), name)
            self.num_features = self.feature_info[max(take)]["num_chs"]
        if cut or prune_head:
            self.remove_pre_logits()
            if prune_head:
                self.reset_classifier(0, "")
            else:
                self.reset_classifier(self.num_classes)
        return take

    # ------------------------------------------------------------------------- weights

    def source_prefix_map(self, source: str, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
        """``{source module prefix: our module prefix}`` for a checkpoint of ``source``."""
        supported = ", ".join(self.weight_sources) or "none"
        raise ValueError(f"source: {type(self).__name__} cannot load {source} weights (supported: {supported})")


def feature_points(stage_chs: list[int], stage_strides: list[int], reduction: int) -> list[dict]:
    """timm ``feature_info`` at the last stage of each resolution: ``stage_strides`` are the
    strides of the stages (of ``self.stages``), ``reduction`` that of their input."""
    info = []
    for index, (chs, stride) in enumerate(zip(stage_chs, stage_strides, strict=True)):
        reduction *= stride
        entry = {"num_chs": chs, "reduction": reduction, "module": f"stages.{index}"}
        if info and info[-1]["reduction"] == reduction:
            info[-1] = entry
        else:
            info.append(entry)
    return info


def stage_blocks(stages: nn.Sequential) -> list[tuple[str, nn.Module]]:
    """``[("stages.<s>.<b>", block), ...]`` in execution order."""
    return [(f"stages.{s}.{b}", block) for s, stage in enumerate(stages) for b, block in enumerate(stage)]

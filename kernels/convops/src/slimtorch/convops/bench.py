"""``python -m slimtorch.convops.bench``: the convops kernels against torch on the layer shapes of
MobileNetV2, MobileNetV3-Large and ShuffleNetV2-1.0x (224x224), fp16, channels_last, batch 1 / 32 / 256.

Families (one results file each, ``benchmarks/results/<device>/convops-<family>.{json,md,png}``):

    depthwise  every distinct depthwise layer, fused with its folded BN and activation
               ours: depthwise_conv2d (one pass) | torch conv+bias+act: cuDNN conv with the BN folded,
               then the activation | torch conv→BN→act (baseline): the unfused eval sequence |
               torch.compile of that sequence
    grouped    ShuffleNet V1 (g = 3, 1.0x) grouped 1x1 layers; GConv1 → BN → ReLU → shuffle,
               GConv2 → BN. ours: pointwise_conv2d with the shuffle in its store | torch sequence
               (baseline; shuffle = view/transpose/contiguous) | torch.compile of it
    shuffle    ShuffleNet V2 unit tails cat([a, b]) → channel_shuffle(·, 2) and channel_shuffle alone
               ours: shuffle_concat / channel_shuffle | torch cat + view/transpose/contiguous (baseline)
               | torch.compile of it
    shift      grouped 3x3 shift (Wu et al.) on ShiftNet-like activations: ours (Triton) | ours (CUDA C,
               opt-in, unverified) | torch pad + per-group slices + cat (baseline)
    shiftconv  shift fused into the following 1x1: ours fused | ours 1x1 alone (baseline: the fused
               kernel's goal is ≤ 1.1x its time) | torch 1x1 (cuDNN) | torch shift then 1x1

``bytes`` is the minimum traffic of the operation (inputs read once, output written once, weights),
the same for every provider, so GB/s and % of the measured copy bandwidth compare effective rates.
Timing: do_bench medians with the L2 flushed between repetitions (slimtorch.core.bench).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.convops.bn_folding import batchnorm_scale_shift, fold_scale_shift
from slimtorch.convops.depthwise import depthwise_conv2d
from slimtorch.convops.index_maps import grouped_shift_offsets
from slimtorch.convops.pointwise import pointwise_conv2d
from slimtorch.convops.shift import integer_shift_cuda
from slimtorch.convops.shuffle import channel_shuffle, shuffle_concat
from slimtorch.core import bench as core_bench
from slimtorch.core.activations import activation_module

BATCHES = (1, 32, 256)
QUICK_BATCHES = (1, 32)
FAMILIES = ("depthwise", "grouped", "shuffle", "shift", "shiftconv")
BASELINES = {
    "depthwise": "torch conv→BN→act",
    "grouped": "torch conv→BN→act→shuffle",
    "shuffle": "torch cat+shuffle",
    "shift": "torch pad+slices",
    "shiftconv": "ours 1x1 alone",
}


@dataclasses.dataclass(frozen=True)
class DepthwiseShape:
    """A depthwise layer: input channels, input H = W, kernel, stride, activation after its BN."""

    model: str
    channels: int
    size: int
    kernel: int
    stride: int
    activation: str


# Distinct depthwise layers at 224x224, from the torchvision definitions (mobilenet_v2,
# mobilenet_v3_large, shufflenet_v2_x1_0; tests/convops/test_bench.py re-derives them).
DEPTHWISE_SHAPES: tuple[DepthwiseShape, ...] = tuple(
    DepthwiseShape(model, *shape)
    for model, shapes in (
        (
            "mobilenet_v2",
            [
                (32, 112, 3, 1, "relu6"),
                (96, 112, 3, 2, "relu6"),
                (144, 56, 3, 1, "relu6"),
                (144, 56, 3, 2, "relu6"),
                (192, 28, 3, 1, "relu6"),
                (192, 28, 3, 2, "relu6"),
                (384, 14, 3, 1, "relu6"),
                (576, 14, 3, 1, "relu6"),
                (576, 14, 3, 2, "relu6"),
                (960, 7, 3, 1, "relu6"),
            ],
        ),
        (
            "mobilenet_v3_large",
            [
                (16, 112, 3, 1, "relu"),
                (64, 112, 3, 2, "relu"),
                (72, 56, 3, 1, "relu"),
                (72, 56, 5, 2, "relu"),
                (120, 28, 5, 1, "relu"),
                (240, 28, 3, 2, "hardswish"),
                (200, 14, 3, 1, "hardswish"),
                (184, 14, 3, 1, "hardswish"),
                (480, 14, 3, 1, "hardswish"),
                (672, 14, 3, 1, "hardswish"),
                (672, 14, 5, 2, "hardswish"),
                (960, 7, 5, 1, "hardswish"),
            ],
        ),
        (
            "shufflenet_v2_x1_0",
            [
                (24, 56, 3, 2, "none"),
                (58, 56, 3, 2, "none"),
                (58, 28, 3, 1, "none"),
                (116, 28, 3, 2, "none"),
                (116, 14, 3, 1, "none"),
                (232, 14, 3, 2, "none"),
                (232, 7, 3, 1, "none"),
            ],
        ),
    )
    for shape in shapes
)

# ShuffleNet V2 unit outputs (channels, H = W): cat of two halves, then shuffle with 2 groups
# (torchvision shufflenet_v2_x1_0; re-derived in the tests).
SHUFFLE_SHAPES: tuple[tuple[int, int], ...] = ((116, 28), (232, 14), (464, 7))

# ShuffleNet V1 1.0x, g = 3 (Zhang et al. 2018, Table 1): (in, out, H = W, activation, shuffle
# after) of the repeated units' GConv1 (→ BN → ReLU → shuffle) and GConv2 (→ BN).
GROUPED_SHAPES: tuple[tuple[int, int, int, str, bool], ...] = (
    (240, 60, 28, "relu", True),
    (60, 240, 28, "none", False),
    (480, 120, 14, "relu", True),
    (120, 480, 14, "none", False),
    (960, 240, 7, "relu", True),
    (240, 960, 7, "none", False),
)
GROUPS_V1 = 3

# Shift layers (channels in = out of the following 1x1, H = W): ShiftResNet-like stages.
SHIFT_SHAPES: tuple[tuple[int, int], ...] = ((64, 56), (128, 28), (256, 14), (512, 7))


@dataclasses.dataclass
class Entry:
    """One provider of one (case, batch), ready for :meth:`slimtorch.core.bench.Bench.add`."""

    case: str
    x: int
    provider: str
    fn: Callable[[], torch.Tensor]
    shape: dict
    nbytes: float
    flops: float | None = None
    computes: str = ""  # providers of a case with the same tag return the same tensor (tests check it)


def _nbytes(*tensors: torch.Tensor) -> float:
    return float(sum(t.numel() * t.element_size() for t in tensors))


def _eval_bn(channels: int, device, dtype) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, device=device, dtype=dtype).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    return fold_scale_shift(conv.weight, conv.bias, *batchnorm_scale_shift(bn))


def _maybe_compile(fn: Callable, compile_: bool) -> Callable:
    return torch.compile(fn, dynamic=False) if compile_ else fn


def _torch_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """The usual torch channel shuffle (ShuffleNet reference code): view, transpose, contiguous."""
    n, c, h, w = x.shape
    out = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return out.view(n, c, h, w).contiguous(memory_format=torch.channels_last)


def _channels_last(shape: Sequence[int], *, device, dtype) -> torch.Tensor:
    return torch.randn(*shape, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)


def depthwise_group(s: DepthwiseShape, batch: int, *, device, dtype, compile_: bool = True) -> list[Entry]:
    """ours, torch conv+bias+act, torch conv→BN→act (baseline), torch.compile of it."""
    conv = nn.Conv2d(s.channels, s.channels, s.kernel, s.stride, s.kernel // 2, groups=s.channels, bias=False)
    conv = conv.to(device=device, dtype=dtype)
    bn, act = _eval_bn(s.channels, device, dtype), activation_module(s.activation)
    weight, bias = _folded(conv, bn)
    x = _channels_last((batch, s.channels, s.size, s.size), device=device, dtype=dtype)
    out_hw = (s.size - 1) // s.stride + 1
    nbytes = _nbytes(x, weight, bias) + x.element_size() * batch * s.channels * out_hw**2
    geometry = ([s.stride] * 2, [s.kernel // 2] * 4, [1, 1])

    def sequence():
        return act(bn(conv(x)))

    providers = {
        "ours": lambda: depthwise_conv2d.launcher(x, weight, None, bias, None, *geometry, s.activation),
        "torch conv+bias+act": lambda: act(F.conv2d(x, weight, bias, s.stride, s.kernel // 2, 1, s.channels)),
        BASELINES["depthwise"]: sequence,
        "torch.compile conv→BN→act": _maybe_compile(sequence, compile_),
    }
    case = f"{s.model} dw{s.kernel}x{s.kernel}/s{s.stride} C{s.channels} {s.size}² {s.activation}"
    shape = dataclasses.asdict(s) | {"batch": batch}
    return [Entry(case, batch, name, fn, shape, nbytes) for name, fn in providers.items()]


def grouped_group(shape_v1: tuple, batch: int, *, device, dtype, compile_: bool = True) -> list[Entry]:
    """ShuffleNet V1 grouped 1x1 (+ BN + act + shuffle): ours vs the torch sequence and its compile."""
    c_in, c_out, size, activation, shuffled = shape_v1
    conv = nn.Conv2d(c_in, c_out, 1, groups=GROUPS_V1, bias=False).to(device=device, dtype=dtype)
    bn, act = _eval_bn(c_out, device, dtype), activation_module(activation)
    weight, bias = _folded(conv, bn)
    out_shuffle = GROUPS_V1 if shuffled else 1
    x = _channels_last((batch, c_in, size, size), device=device, dtype=dtype)
    nbytes = _nbytes(x, weight, bias) + x.element_size() * batch * c_out * size * size

    def sequence():
        y = act(bn(conv(x)))
        return _torch_shuffle(y, GROUPS_V1) if shuffled else y

    providers = {
        "ours": lambda: pointwise_conv2d.launcher(
            x, weight, None, bias, None, GROUPS_V1, 1, out_shuffle, 1, activation
        ),
        BASELINES["grouped"]: sequence,
        "torch.compile sequence": _maybe_compile(sequence, compile_),
    }
    case = f"shufflenet_v1_g3 gconv {c_in}→{c_out} {size}² {activation}{' +shuffle' if shuffled else ''}"
    shape = {"in": c_in, "out": c_out, "size": size, "groups": GROUPS_V1, "batch": batch}
    flops = 2.0 * batch * size * size * c_out * c_in / GROUPS_V1
    return [Entry(case, batch, name, fn, shape, nbytes, flops) for name, fn in providers.items()]


def shuffle_group(shape_v2: tuple, batch: int, *, device, dtype, compile_: bool = True) -> list[Entry]:
    """ShuffleNet V2 unit tail cat([a, b]) → shuffle(2), and the shuffle alone: ours vs torch."""
    channels, size = shape_v2
    a, b = (_channels_last((batch, channels // 2, size, size), device=device, dtype=dtype) for _ in range(2))
    x = torch.cat([a, b], 1)

    def cat_shuffle():
        return _torch_shuffle(torch.cat([a, b], 1), 2)

    def shuffle_only():
        return _torch_shuffle(x, 2)

    cases = {
        f"cat+shuffle C{channels} {size}²": (lambda: shuffle_concat.launcher(a, b, 2), cat_shuffle),
        f"shuffle C{channels} {size}²": (lambda: channel_shuffle.launcher(x, 2), shuffle_only),
    }
    shape = {"channels": channels, "size": size, "batch": batch}
    entries = []
    for case, (ours, torch_fn) in cases.items():
        providers = {"ours": ours, BASELINES["shuffle"]: torch_fn, "torch.compile": _maybe_compile(torch_fn, compile_)}
        entries += [Entry(case, batch, name, fn, shape, 2 * _nbytes(x)) for name, fn in providers.items()]
    return entries


def torch_grouped_shift(x: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """The usual torch grouped shift: zero-pad, slice each channel group at its offset, concatenate."""
    c, h, w = x.shape[1:]
    half = kernel_size // 2
    padded = F.pad(x, (half, half, half, half))
    k2 = kernel_size * kernel_size
    bounds = [math.ceil(i * c / k2) for i in range(k2 + 1)]  # group i = channels with ⌊c·k²/C⌋ == i
    parts = []
    for i in range(k2):
        dy, dx = i // kernel_size - half, i % kernel_size - half
        parts.append(padded[:, bounds[i] : bounds[i + 1], half + dy : half + dy + h, half + dx : half + dx + w])
    return torch.cat(parts, 1)


def shift_group(shape_shift: tuple, batch: int, *, device, dtype, compile_: bool = True) -> list[Entry]:
    """Standalone grouped 3x3 shift: ours (Triton, CUDA C) vs torch pad + slices + cat."""
    channels, size = shape_shift
    offsets = grouped_shift_offsets(channels, 3).to(device)
    x = _channels_last((batch, channels, size, size), device=device, dtype=dtype)
    providers = {
        "ours (triton)": lambda: depthwise_conv2d.launcher(
            x, None, None, None, offsets, [1, 1], [0] * 4, [1, 1], "none"
        ),
        "ours (cuda C, unverified)": lambda: integer_shift_cuda.launcher(x, offsets),
        BASELINES["shift"]: lambda: torch_grouped_shift(x),
    }
    case = f"grouped shift 3x3 C{channels} {size}²"
    shape = {"channels": channels, "size": size, "batch": batch}
    return [Entry(case, batch, name, fn, shape, 2 * _nbytes(x)) for name, fn in providers.items()]


def shiftconv_group(shape_shift: tuple, batch: int, *, device, dtype, compile_: bool = True) -> list[Entry]:
    """Shift + 1x1 + bias + ReLU: fused vs the 1x1 alone (ours and cuDNN) vs shift then 1x1."""
    channels, size = shape_shift
    offsets = grouped_shift_offsets(channels, 3).to(device)
    weight = torch.randn(channels, channels, 1, 1, device=device, dtype=dtype) / math.sqrt(channels)
    bias = torch.randn(channels, device=device, dtype=dtype)
    x = _channels_last((batch, channels, size, size), device=device, dtype=dtype)

    def ours(offsets: torch.Tensor | None):
        return pointwise_conv2d.launcher(x, weight, None, bias, offsets, 1, 1, 1, 1, "relu")

    providers = {  # name: (fn, what it computes)
        "ours fused": (lambda: ours(offsets), "shift+1x1"),
        BASELINES["shiftconv"]: (lambda: ours(None), "1x1"),
        "torch 1x1 alone": (lambda: F.relu(F.conv2d(x, weight, bias)), "1x1"),
        "torch shift then 1x1": (lambda: F.relu(F.conv2d(torch_grouped_shift(x), weight, bias)), "shift+1x1"),
    }
    case = f"shift+1x1 {channels}→{channels} {size}² relu"
    shape = {"channels": channels, "size": size, "batch": batch}
    flops = 2.0 * batch * size * size * channels * channels
    nbytes = 2 * _nbytes(x) + _nbytes(weight, bias)
    return [Entry(case, batch, name, fn, shape, nbytes, flops, tag) for name, (fn, tag) in providers.items()]


# family -> (entries of one (shape, batch), the shapes, the --quick subset)
BUILDERS: dict[str, tuple[Callable[..., list[Entry]], Sequence, Sequence]] = {
    "depthwise": (depthwise_group, DEPTHWISE_SHAPES, DEPTHWISE_SHAPES[::4]),
    "grouped": (grouped_group, GROUPED_SHAPES, GROUPED_SHAPES[:2]),
    "shuffle": (shuffle_group, SHUFFLE_SHAPES, SHUFFLE_SHAPES[:1]),
    "shift": (shift_group, SHIFT_SHAPES, SHIFT_SHAPES[:2]),
    "shiftconv": (shiftconv_group, SHIFT_SHAPES, SHIFT_SHAPES[:2]),
}


def run_family(family: str, *, device, quick: bool, compile_: bool, ceil) -> list[core_bench.BenchResult]:
    """Time one family, one (shape, batch) at a time so that only its tensors are alive."""
    builder, shapes, quick_shapes = BUILDERS[family]
    results = []
    for shape in quick_shapes if quick else shapes:
        for batch in QUICK_BATCHES if quick else BATCHES:
            bench = core_bench.Bench(f"convops-{family}", device=device)
            for e in builder(shape, batch, device=device, dtype=torch.float16, compile_=compile_):
                options = dict(shape=e.shape, dtype="float16", nbytes=e.nbytes, flops=e.flops)
                bench.add(e.case, x=e.x, provider=e.provider, fn=e.fn, **options)
            results.extend(bench.run(progress=False, ceil=ceil))
            del bench
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    core_bench.fill_speedups(results, BASELINES[family])
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = core_bench.common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile providers")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda":
        raise SystemExit("slimtorch.convops.bench measures GPU kernels: run it on a CUDA device (--device cuda)")
    ceil = core_bench.ceilings(device)
    env = core_bench.Environment.collect(device, ceilings=ceil)
    for family in args.families:
        results = run_family(family, device=device, quick=args.quick, compile_=not args.no_compile, ceil=ceil)
        paths = core_bench.write_results(results, env, args.out, f"convops-{family}")
        print(f"{family}: wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()

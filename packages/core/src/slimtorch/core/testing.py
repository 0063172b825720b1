"""Test helpers for every slimtorch package: error bounds, odd shapes, poisoning, a small CNN.

Kernel tests follow one pattern::

    x = randn((m, k), dtype=dtype, device=device, seed=seed)   # fresh, odd-sized
    out = op(x, ...)                                          # dispatch: kernel on GPU/interpreter
    ref = op.get_reference()(x.double(), ...)                 # the pure-torch oracle
    assert_rel_close(out, ref, rel_bound(dtype, k, device=device))   # bound derived from K and the dtype
    assert_gemm_close(out, ref, x, weight, rel_bound(dtype, k))      # where outputs may cancel

:func:`rel_bound` is c·(√K·u_fp32 + 2·u_dtype): tight enough that rounding an intermediate (a
decoded weight, a scale) to fp16 fails an fp32 test. The norm-relative ‖out − ref‖/‖ref‖ is
fragile when the outputs cancel (a 1x1 output whose dot product is ~0); :func:`assert_gemm_close`
measures the error against the dot product's forward-error scale ‖|x|·|w|ᵀ + |b|‖ instead, which
does not shrink when the signed sum cancels.

The test suite runs with ``SLIMTORCH_POISON_OUTPUTS=1``, so outputs allocated through
:func:`slimtorch.core.dispatch.empty_output` start as NaN and unwritten elements fail.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn

from slimtorch.core.dispatch import poison_value
from slimtorch.core.metrics import rel_error, sqnr

__all__ = [
    "ODD_SIZES",
    "SmallCompactCNN",
    "assert_exact",
    "assert_forward_error",
    "assert_gemm_close",
    "assert_rel_close",
    "assert_rows_match",
    "assert_sqnr_at_least",
    "default_device",
    "gemm_error_scale",
    "linear_map",
    "odd_sizes",
    "poison_",
    "randn",
    "rel_bound",
    "rel_error",
    "sqnr",
]

# Sizes that are neither powers of two nor multiples of a tile: they exercise masks and tails.
ODD_SIZES: tuple[int, ...] = (1, 3, 7, 13, 17, 31, 33, 63, 65, 97)


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2: the relative error of rounding one value to ``dtype``."""
    return torch.finfo(dtype).eps / 2


def rel_bound(dtype: torch.dtype, k: int, *, device: torch.device | str = "cpu", c: float = 3.0) -> float:
    """‖out − ref‖/‖ref‖ bound for a K-long fp32-accumulated dot product computed from ``dtype``
    operands against a float64 reference, derived instead of fixed:

        c · (√K · u_fp32 + 2 · u_dtype)

    √K · u_fp32: the accumulation (rounding errors of a K-term sum grow like a random walk);
    2 · u_dtype (fp16/bf16 only): the decoded weight and the output each rounded to ``dtype`` once.
    fp32 on a CUDA device adds the tf32 operand rounding (u = 2⁻¹¹), Triton's default for fp32 dots.
    For fp32 on CPU this is ~1e-6 at K = 64 and ~1e-5 at K = 4096, so a kernel that rounds an
    intermediate (a decoded weight, a scale) to fp16 (u = 4.9e-4) fails. (The fixed table this
    replaces allowed 1e-3 for every fp32 result.) Whole-model comparisons multiply it by the
    number of layers and say so.
    """
    if k < 0:
        raise ValueError(f"k: expected a non-negative reduction length, got {k}")
    u32 = unit_roundoff(torch.float32)
    operand = 0.0 if dtype in (torch.float32, torch.float64) else 2 * unit_roundoff(dtype)
    if dtype == torch.float32 and torch.device(device).type == "cuda":
        operand = 2.0**-11
    if dtype == torch.float64:
        return c * (max(k, 1) ** 0.5 * unit_roundoff(torch.float64))
    return c * (max(k, 1) ** 0.5 * u32 + operand)


def default_device() -> str:
    """ "cuda" where a GPU is present (kernels run natively), else "cpu" (reference/interpreter)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def randn(
    shape: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Standard-normal tensor drawn on CPU from ``seed`` (reproducible across devices)."""
    gen = torch.Generator().manual_seed(seed if seed is not None else random.randrange(2**31))
    return (torch.randn(tuple(shape), generator=gen, dtype=torch.float32) * scale).to(device=device, dtype=dtype)


def odd_sizes(
    count: int,
    *,
    low: int = 1,
    high: int = 97,
    multiple_of: int = 1,
    seed: int = 0,
) -> list[int]:
    """``count`` distinct sizes in [low, high], multiples of ``multiple_of`` but avoiding powers
    of two and multiples of 16·multiple_of where possible (so tile tails are exercised)."""
    rng = random.Random(seed)
    candidates = [s for s in range(low, high + 1) if s % multiple_of == 0]
    if not candidates:
        raise ValueError(f"no multiple of {multiple_of} in [{low}, {high}]")
    awkward = [s for s in candidates if (s & (s - 1)) != 0 and s % (16 * multiple_of) != 0] or candidates
    rng.shuffle(awkward)
    picked = awkward[:count]
    while len(picked) < count:
        picked.append(rng.choice(candidates))
    return picked


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill ``t`` in place with NaN (floats) or an extreme integer; returns ``t``."""
    return t.fill_(poison_value(t.dtype))


def assert_rows_match(
    out: torch.Tensor,
    ref: torch.Tensor,
    x: torch.Tensor,
    bound: float,
    *,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> int:
    """A matmul-shaped op's output against its reference under core's NaN/Inf policy: every row of
    ``x`` holding a non-finite value is all-NaN in both, the other rows agree within ``bound``
    (norm-relative, or :func:`assert_gemm_close` against the (N, K) ``weight`` the op multiplies by
    when given). Returns how many rows were non-finite (for a property test's ``event``)."""
    bad = ~torch.isfinite(x).all(dim=1)
    if out.shape != ref.shape:
        raise AssertionError(f"out: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    if not (bool(out[bad].isnan().all()) and bool(ref[bad].isnan().all())):
        raise AssertionError("non-finite rows give NaN rows: a row of x with NaN/Inf must give an all-NaN output row")
    if bool((~bad).any()):
        if weight is None:
            assert_rel_close(out[~bad], ref[~bad], bound)
        else:
            assert_gemm_close(out[~bad], ref[~bad], x[~bad], weight, bound, bias=bias)
    return int(bad.sum())


def linear_map(fn, k: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """The (N, K) matrix W of a bias-free linear map x (M, K) ↦ x·Wᵀ, read off in float64 by applying
    ``fn`` to the K×K identity (a reference's decoded weight without decoding it by hand: packed
    int4 codes, 2:4 values + metadata, circulant blocks). W8A8's per-token quantiser maps the
    identity's rows exactly (max 1 → code 127)."""
    return fn(torch.eye(k, dtype=torch.float64, device=device)).double().t()


def gemm_error_scale(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """|x|·|w|ᵀ (+ |b|) in float64, (M, N): the magnitude the rounding errors of y = x·wᵀ + b scale
    with (each product, partial sum and the bias add is rounded relative to it), however much the
    signed sum cancels. x (M, K), weight (N, K), bias (N,)."""
    scale = x.detach().double().cpu().abs() @ weight.detach().double().cpu().abs().t()
    return scale if bias is None else scale + bias.detach().double().cpu().abs()


def assert_forward_error(
    out: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor, bound: float, *, name: str = "out"
) -> None:
    """‖out − ref‖ ≤ bound · ‖scale‖ (Frobenius norms; NaN fails), the norm form of the forward-error
    bound |ŷ − y| ≤ γ · |x|·|w|ᵀ. ``scale``: :func:`gemm_error_scale`, or for a convolution the
    convolution of |x| with |w| (+ |b|)."""
    if out.shape != ref.shape or scale.shape != ref.shape:
        raise AssertionError(
            f"{name}: shape {tuple(out.shape)} / scale {tuple(scale.shape)} != reference {tuple(ref.shape)}"
        )
    diff = out.detach().double().cpu() - ref.detach().double().cpu()
    err = float(torch.linalg.vector_norm(diff))
    allowed = bound * float(torch.linalg.vector_norm(scale.detach().double().cpu()))
    if not err <= allowed:  # NaN fails
        diff = torch.nan_to_num(diff.abs(), nan=float("inf"))
        where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape)) if diff.numel() else ()
        raise AssertionError(
            f"{name}: ‖out − ref‖ = {err:.3e} > {bound:.1e} · ‖|x|·|w|ᵀ‖ = {allowed:.3e} "
            f"(max |diff| {diff.max().item() if diff.numel() else 0:.3e} at {where}, shape {tuple(out.shape)})"
        )


def assert_gemm_close(
    out: torch.Tensor,
    ref: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bound: float,
    *,
    bias: torch.Tensor | None = None,
    name: str = "out",
) -> None:
    """y = x·wᵀ + b against its reference by the dot product's forward-error bound:
    ‖out − ref‖ ≤ bound · ‖|x|·|w|ᵀ + |b|‖, ``bound`` = :func:`rel_bound` (dtype, K).

    Robust where ‖out − ref‖/‖ref‖ is not: a 1x1 output whose dot product cancels has a tiny ‖ref‖
    but rounding errors of the size of |x|·|w|. Still catches an intermediate rounded to fp16 (the
    decoded weight, a scale): its error is ≈ 0.9·u_fp16/√K · ‖|x|·|w|ᵀ‖ for random data, above
    rel_bound(fp32, K) = 3·√K·u_fp32 while K ≲ 0.3·u_fp16/u_fp32 ≈ 2400 (``tests/core/test_forward_error.py``);
    for longer reductions the norm-relative :func:`assert_rel_close` is the sharper test."""
    assert_forward_error(out, ref, gemm_error_scale(x, weight, bias), bound, name=name)


def assert_rel_close(out: torch.Tensor, ref: torch.Tensor, bound: float, *, name: str = "out") -> None:
    """‖out − ref‖/‖ref‖ ≤ bound (NaN fails); the message gives the error, max |diff| and where."""
    if out.shape != ref.shape:
        raise AssertionError(f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    err = rel_error(out, ref)
    if not err <= bound:
        diff = (out.detach().double().cpu() - ref.detach().double().cpu()).abs()
        diff = torch.nan_to_num(diff, nan=float("inf"))
        where = tuple(int(i) for i in torch.unravel_index(diff.argmax(), diff.shape)) if diff.numel() else ()
        raise AssertionError(
            f"{name}: relative error {err:.3e} > {bound:.1e} "
            f"(max |diff| {diff.max().item() if diff.numel() else 0:.3e} at {where}, shape {tuple(out.shape)})"
        )


def assert_exact(out: torch.Tensor, ref: torch.Tensor, *, name: str = "out") -> None:
    """Bitwise equality (packing, quantizers): same shape, dtype and every element."""
    if out.shape != ref.shape or out.dtype != ref.dtype:
        raise AssertionError(f"{name}: {tuple(out.shape)}/{out.dtype} != reference {tuple(ref.shape)}/{ref.dtype}")
    a, b = out.detach().cpu(), ref.detach().cpu()
    same = (a == b) | (a.isnan() & b.isnan()) if a.dtype.is_floating_point else a == b
    if not bool(same.all()):
        bad = (~same).nonzero()
        first = tuple(bad[0].tolist())
        raise AssertionError(
            f"{name}: {bad.shape[0]} of {a.numel()} elements differ; first at {first}: "
            f"{a[first].item()} != {b[first].item()}"
        )


def assert_sqnr_at_least(ref: torch.Tensor, approx: torch.Tensor, db: float, *, name: str = "out") -> None:
    value = sqnr(ref, approx)
    if not value >= db:
        raise AssertionError(f"{name}: SQNR {value:.2f} dB < {db:.2f} dB")


class SmallCompactCNN(nn.Module):
    """A tiny MobileNet-style network: stem conv, depthwise-separable blocks (one with a
    residual add), a grouped 1x1 conv, global pooling and a Linear head. Every layer kind the
    compression packages convert appears at least once; sized to run in milliseconds on CPU."""

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        w = width

        def conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU6(inplace=True),
            )

        self.stem = conv_bn_act(3, w, 3, stride=2)
        self.dw1 = conv_bn_act(w, w, 3, groups=w)
        self.pw1 = conv_bn_act(w, 2 * w, 1)
        self.dw2 = conv_bn_act(2 * w, 2 * w, 3, stride=2, groups=2 * w)
        self.pw2 = conv_bn_act(2 * w, 4 * w, 1)
        self.dw3 = conv_bn_act(4 * w, 4 * w, 3, groups=4 * w)
        self.pw3 = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 1, groups=4, bias=False), nn.BatchNorm2d(4 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw1(self.dw1(self.stem(x)))
        x = self.pw2(self.dw2(x))
        x = x + self.pw3(self.dw3(x))
        return self.head(torch.flatten(self.pool(x), 1))


class OrderTimer:
    """A fake timer for :class:`slimtorch.core.measured.Measurer`: the given medians (ms) in the order the
    candidates are timed (ours first); ``calls`` counts the timings."""

    def __init__(self, *times: float):
        self.times, self.calls = list(times), 0

    def __call__(self, fn) -> float:
        self.calls += 1
        return self.times[self.calls - 1]


def order_measurer(*times: float):
    """A Measurer timing with :class:`OrderTimer` (``times``), no cache file, device tag "fake", and
    measuring CPU tensors too: dispatch by measurement tested without a GPU."""
    from slimtorch.core import measured

    return measured.Measurer(OrderTimer(*times), None, device_tag=lambda d: "fake", measurable=lambda t: True)

"""Low-rank and tensor decompositions of Linear and Conv2d layers (pure torch + tensorly; the
factors run as ordinary torch matmuls / convolutions, i.e. cuBLAS / cuDNN).

- :class:`LowRankLinear`: W (m, n) ≈ U·V by truncated SVD, U = U_r·√Σ_r, V = √Σ_r·V_rᵀ; r(m + n) numbers.
- :class:`LowRankConv2d`: the same on W as (N, C·kh·kw): k×k conv C→r, then 1x1 r→N.
- :func:`tucker_decompose_conv`: Tucker-2 on the channel modes (Kim et al. 2016): 1x1 C→R_in, k×k core
  R_in→R_out, 1x1 R_out→N; HOSVD (``n_iter_max=0``) or HOOI.
- :func:`cp_decompose_conv`: CP of rank R (Lebedev et al. 2015): 1x1 C→R, kh×1 and 1×kw depthwise,
  1x1 R→N; R(N + C + kh + kw) numbers.
- :func:`separable_decompose_conv`: Jaderberg et al. 2014 scheme 2, SVD of W as (C·kh, N·kw): kh×1 C→K,
  then 1×kw K→N.
- :class:`TTLinear`: tensor train (Novikov et al. 2015), in = Πn_k, out = Πm_k, cores
  (r_{k−1}, m_k, n_k, r_k) by TT-SVD.

Rank selection (:func:`select_rank`): exactly one of ``rank``, ``energy`` (smallest r keeping that
fraction of Σσ²), ``rank_ratio`` (r = ⌈ratio·min(m, n)⌉) or ``param_ratio`` (largest r with
r(m + n) ≤ ratio·m·n: the parameter and FLOP budget, both scale with r(m + n)). Every
decomposition records ``relative_error`` = ‖W − Ŵ‖_F / ‖W‖_F; for the SVD it is the Eckart–Young
optimum √(Σ_{i>r} σ_i²)/‖W‖_F. tensorly runs inside ``tensorly.backend_context("pytorch")`` so
no global backend state leaks.
"""

from __future__ import annotations

import math
from typing import Any

import tensorly
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.core.checks import check_positive_int
from slimtorch.core.modules import dense_linear


def _check_features(in_features: object, out_features: object, what: str = "") -> None:
    """Both sizes positive ints (a zero-size layer is refused at construction, naming the size)."""
    check_positive_int(in_features, f"{what}in_features")
    check_positive_int(out_features, f"{what}out_features")


def _check_conv(conv: nn.Module) -> None:
    if type(conv) is not nn.Conv2d:
        raise TypeError(f"conv: expected an nn.Conv2d, got {type(conv).__name__}")
    check_positive_int(conv.in_channels, "conv.in_channels")
    check_positive_int(conv.out_channels, "conv.out_channels")
    if conv.groups != 1 or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        raise ValueError(
            "conv: expected groups=1, numeric padding and padding_mode='zeros', got "
            f"groups={conv.groups}, padding={conv.padding!r}, padding_mode={conv.padding_mode!r}"
        )


def relative_error(weight: torch.Tensor, approx: torch.Tensor) -> float:
    """‖W − Ŵ‖_F / ‖W‖_F in float64."""
    w = weight.detach().double()
    return float(torch.linalg.norm(w - approx.detach().double()) / torch.linalg.norm(w).clamp_min(1e-300))


def select_rank(
    singular_values: torch.Tensor,
    m: int,
    n: int,
    *,
    rank: int | None = None,
    energy: float | None = None,
    rank_ratio: float | None = None,
    param_ratio: float | None = None,
) -> int:
    """The rank for an (m, n) matrix with these singular values by exactly one criterion (module doc)."""
    given = {
        k: v
        for k, v in dict(rank=rank, energy=energy, rank_ratio=rank_ratio, param_ratio=param_ratio).items()
        if v is not None
    }
    if len(given) != 1:
        raise ValueError(
            f"expected exactly one of rank, energy, rank_ratio, param_ratio; got {sorted(given) or 'none'}"
        )
    full = min(m, n)
    if rank is not None:
        if not isinstance(rank, int) or not 1 <= rank <= full:
            raise ValueError(f"rank: expected an int in [1, min(m, n) = {full}], got {rank!r}")
        return rank
    if energy is not None:
        if not 0.0 < energy <= 1.0:
            raise ValueError(f"energy: expected a fraction in (0, 1], got {energy!r}")
        s2 = singular_values.double() ** 2
        kept = torch.cumsum(s2, 0) / s2.sum().clamp_min(1e-300)
        return min(full, int((kept < energy - 1e-12).sum()) + 1)
    if rank_ratio is not None:
        if not 0.0 < rank_ratio <= 1.0:
            raise ValueError(f"rank_ratio: expected a fraction in (0, 1], got {rank_ratio!r}")
        return max(1, min(full, math.ceil(rank_ratio * full)))
    if not param_ratio > 0.0:
        raise ValueError(f"param_ratio: expected a positive fraction, got {param_ratio!r}")
    return max(1, min(full, math.floor(param_ratio * m * n / (m + n))))


def truncated_svd(weight: torch.Tensor, **criterion: Any) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(U (m, r), V (r, n), relative error) with U·V the best rank-r approximation of ``weight``."""
    w = weight.detach().double()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    r = select_rank(s, w.shape[0], w.shape[1], **criterion)
    root = s[:r].sqrt()
    error = float(torch.sqrt((s[r:] ** 2).sum()) / torch.sqrt((s**2).sum()).clamp_min(1e-300))
    return (u[:, :r] * root).to(weight.dtype), (root[:, None] * vh[:r]).to(weight.dtype), error


class LowRankLinear(nn.Module):
    """``y = (x·Vᵀ)·Uᵀ + b`` with U (out, r), V (r, in)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True, *, device=None, dtype=None):
        super().__init__()
        _check_features(in_features, out_features)
        if not isinstance(rank, int) or not 1 <= rank <= min(in_features, out_features):
            raise ValueError(
                f"rank: expected an int in [1, min(in, out) = {min(in_features, out_features)}], got {rank!r}"
            )
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.v = nn.Parameter(torch.randn(rank, in_features, device=device, dtype=dtype) / math.sqrt(in_features))
        self.u = nn.Parameter(torch.randn(out_features, rank, device=device, dtype=dtype) / math.sqrt(rank))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        self.relative_error: float | None = None

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        rank: int | None = None,
        energy: float | None = 0.9,
        *,
        rank_ratio: float | None = None,
        param_ratio: float | None = None,
    ) -> LowRankLinear:
        """Truncated SVD; ``energy`` is the default criterion, ignored when another one is given."""
        if type(linear) is not nn.Linear:
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        _check_features(linear.in_features, linear.out_features, "linear.")
        if rank is not None or rank_ratio is not None or param_ratio is not None:
            energy = None
        u, v, error = truncated_svd(
            linear.weight, rank=rank, energy=energy, rank_ratio=rank_ratio, param_ratio=param_ratio
        )
        w = linear.weight
        layer = cls(
            linear.in_features, linear.out_features, u.shape[1], linear.bias is not None, device=w.device, dtype=w.dtype
        )
        with torch.no_grad():
            layer.u.copy_(u)
            layer.v.copy_(v)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.relative_error = error
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.v), self.u, self.bias)

    def to_dense(self) -> nn.Linear:
        return dense_linear((self.u @ self.v).detach(), None if self.bias is None else self.bias.detach())

    def conversion_source(self) -> str:
        return "already low-rank"

    def describe(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "rank": self.rank,
            "bias": self.bias is not None,
        }

    def extra_repr(self) -> str:
        shape = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"{shape}, rank={self.rank}, bias={self.bias is not None}"


class _ConvChain(nn.Sequential):
    """Convolutions applied in turn that together equal one groups=1 Conv2d (``to_dense``)."""

    kind = "decomposed"

    def __init__(self, *convs: nn.Conv2d, spec: dict[str, Any]):
        super().__init__(*convs)
        self.spec = spec  # in/out channels, kernel, stride, padding, dilation, ranks: what describe() returns
        self.relative_error: float | None = None

    def conversion_source(self) -> str:
        return f"already {self.kind}"

    def dense_weight(self) -> torch.Tensor:
        """The composed (N, C, kh, kw) weight: the chain applied to unit impulses, read backwards."""
        raise NotImplementedError

    def to_dense(self) -> nn.Conv2d:
        s = self.spec
        last = self[-1]
        conv = nn.Conv2d(
            s["in_channels"],
            s["out_channels"],
            s["kernel_size"],
            s["stride"],
            s["padding"],
            s["dilation"],
            bias=last.bias is not None,
            device=last.weight.device,
            dtype=last.weight.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.dense_weight())
            if last.bias is not None:
                conv.bias.copy_(last.bias)
        return conv

    def describe(self) -> dict[str, Any]:
        return {"class": type(self).__name__, **self.spec}

    @staticmethod
    def spec_of(conv: nn.Conv2d, **ranks: Any) -> dict[str, Any]:
        return {
            "in_channels": conv.in_channels,
            "out_channels": conv.out_channels,
            "kernel_size": list(conv.kernel_size),
            "stride": list(conv.stride),
            "padding": list(conv.padding),
            "dilation": list(conv.dilation),
            "bias": conv.bias is not None,
            **ranks,
        }


def _conv(cin, cout, kernel, stride=1, padding=0, dilation=1, groups=1, bias=False, like=None) -> nn.Conv2d:
    w = like.weight
    return nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias, device=w.device, dtype=w.dtype)


def _set(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Conv2d:
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(conv.weight.shape))
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


class LowRankConv2d(_ConvChain):
    """k×k conv C→r (the conv's geometry), then 1x1 r→N (+ bias): SVD of W as (N, C·kh·kw)."""

    kind = "low-rank"

    @classmethod
    def build(cls, spec: dict[str, Any], device=None, dtype=None) -> LowRankConv2d:
        s, r = spec, spec["rank"]
        like = nn.Conv2d(1, 1, 1, device=device, dtype=dtype)
        first = _conv(s["in_channels"], r, s["kernel_size"], s["stride"], s["padding"], s["dilation"], like=like)
        second = _conv(r, s["out_channels"], 1, bias=s["bias"], like=like)
        return cls(first, second, spec=dict(spec))

    @classmethod
    def from_dense(
        cls,
        conv: nn.Conv2d,
        rank: int | None = None,
        energy: float | None = 0.9,
        *,
        rank_ratio: float | None = None,
        param_ratio: float | None = None,
    ) -> LowRankConv2d:
        _check_conv(conv)
        if rank is not None or rank_ratio is not None or param_ratio is not None:
            energy = None
        w = conv.weight.reshape(conv.out_channels, -1)
        u, v, error = truncated_svd(w, rank=rank, energy=energy, rank_ratio=rank_ratio, param_ratio=param_ratio)
        layer = cls.build(cls.spec_of(conv, rank=u.shape[1]), conv.weight.device, conv.weight.dtype)
        _set(layer[0], v)
        _set(layer[1], u, conv.bias)
        layer.relative_error = error
        return layer

    def dense_weight(self) -> torch.Tensor:
        first, second = self[0].weight, self[1].weight
        return (second.flatten(1) @ first.flatten(1)).reshape(second.shape[0], *first.shape[1:])


def _with_tensorly(fn):
    """Run ``fn`` with tensorly's PyTorch backend, restoring the caller's backend afterwards."""
    with tensorly.backend_context("pytorch"):
        return fn()


class TuckerConv2d(_ConvChain):
    """Tucker-2: 1x1 C→R_in, k×k R_in→R_out (the conv's geometry), 1x1 R_out→N (+ bias)."""

    kind = "Tucker-2"

    @classmethod
    def build(cls, spec: dict[str, Any], device=None, dtype=None) -> TuckerConv2d:
        s = spec
        like = nn.Conv2d(1, 1, 1, device=device, dtype=dtype)
        return cls(
            _conv(s["in_channels"], s["rank_in"], 1, like=like),
            _conv(s["rank_in"], s["rank_out"], s["kernel_size"], s["stride"], s["padding"], s["dilation"], like=like),
            _conv(s["rank_out"], s["out_channels"], 1, bias=s["bias"], like=like),
            spec=dict(spec),
        )

    def dense_weight(self) -> torch.Tensor:
        u_in, core, u_out = (
            self[0].weight.flatten(1),
            self[1].weight,
            self[2].weight.flatten(1),
        )  # (Ri, C), (Ro, Ri, k, k), (N, Ro)
        return torch.einsum("no,oikl,ic->nckl", u_out, core, u_in)


def _mode_ranks(weight: torch.Tensor, ranks, rank_ratio, energy) -> tuple[int, int]:
    """(R_out, R_in) from explicit ranks, a ratio of the channels, or an energy per mode unfolding."""
    n, c = weight.shape[:2]
    if ranks is not None:
        r_out, r_in = ranks
        for name, r, full in (("ranks[0] (output channels)", r_out, n), ("ranks[1] (input channels)", r_in, c)):
            if not isinstance(r, int) or not 1 <= r <= full:
                raise ValueError(f"{name}: expected an int in [1, {full}], got {r!r}")
        return r_out, r_in
    out = []
    for mode, full in ((0, n), (1, c)):
        unfolded = weight.detach().double().movedim(mode, 0).reshape(full, -1)
        s = torch.linalg.svdvals(unfolded)
        crit = {"rank_ratio": rank_ratio} if rank_ratio is not None else {"energy": energy}
        out.append(select_rank(s, full, unfolded.shape[1], **crit))
    return out[0], out[1]


def tucker_decompose_conv(
    conv: nn.Conv2d,
    ranks: tuple[int, int] | None = None,
    *,
    rank_ratio: float | None = None,
    energy: float | None = None,
    n_iter_max: int = 20,
) -> TuckerConv2d:
    """Tucker-2 of a k×k conv (modes: output and input channels). ``ranks`` (R_out, R_in), or per
    mode by ``rank_ratio`` / ``energy`` of the unfolding's singular values (default ratio 0.5).
    ``n_iter_max=0``: HOSVD (truncated SVD of each unfolding); > 0: HOOI refinement."""
    _check_conv(conv)
    if ranks is None and rank_ratio is None and energy is None:
        rank_ratio = 0.5
    w = conv.weight.detach().double()
    r_out, r_in = _mode_ranks(w, ranks, rank_ratio, energy)
    from tensorly.decomposition import partial_tucker

    (core, (u_out, u_in)), _ = _with_tensorly(
        lambda: partial_tucker(w, rank=[r_out, r_in], modes=[0, 1], n_iter_max=n_iter_max, init="svd")
    )
    layer = TuckerConv2d.build(TuckerConv2d.spec_of(conv, rank_out=r_out, rank_in=r_in), w.device, conv.weight.dtype)
    _set(layer[0], u_in.t().to(conv.weight.dtype))
    _set(layer[1], core.to(conv.weight.dtype))
    _set(layer[2], u_out.to(conv.weight.dtype), conv.bias)
    layer.relative_error = relative_error(conv.weight, layer.dense_weight())
    return layer


class CPConv2d(_ConvChain):
    """CP: 1x1 C→R, depthwise kh×1 (stride_h, pad_h), depthwise 1×kw (stride_w, pad_w), 1x1 R→N."""

    kind = "CP"

    @classmethod
    def build(cls, spec: dict[str, Any], device=None, dtype=None) -> CPConv2d:
        s, r = spec, spec["rank"]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = s["kernel_size"], s["stride"], s["padding"], s["dilation"]
        like = nn.Conv2d(1, 1, 1, device=device, dtype=dtype)
        return cls(
            _conv(s["in_channels"], r, 1, like=like),
            _conv(r, r, (kh, 1), (sh, 1), (ph, 0), (dh, 1), groups=r, like=like),
            _conv(r, r, (1, kw), (1, sw), (0, pw), (1, dw), groups=r, like=like),
            _conv(r, s["out_channels"], 1, bias=s["bias"], like=like),
            spec=dict(spec),
        )

    def dense_weight(self) -> torch.Tensor:
        b, kh, kw, a = (
            self[0].weight.flatten(1),
            self[1].weight.flatten(1),
            self[2].weight.flatten(1),
            self[3].weight.flatten(1),
        )  # (R, C), (R, kh), (R, kw), (N, R)
        return torch.einsum("nr,rc,ri,rj->ncij", a, b, kh, kw)


def cp_decompose_conv(
    conv: nn.Conv2d,
    rank: int | None = None,
    *,
    param_ratio: float | None = None,
    n_iter_max: int = 200,
    seed: int = 0,
) -> CPConv2d:
    """CP (ALS, tensorly ``parafac``, random init from ``seed``) of a k×k conv of rank ``rank`` or
    the largest rank with R(N + C + kh + kw) ≤ ``param_ratio``·N·C·kh·kw (default 0.25)."""
    _check_conv(conv)
    n, c, kh, kw = conv.weight.shape
    per_rank = n + c + kh + kw
    if rank is None:
        param_ratio = 0.25 if param_ratio is None else param_ratio
        if not param_ratio > 0:
            raise ValueError(f"param_ratio: expected a positive fraction, got {param_ratio!r}")
        rank = max(1, math.floor(param_ratio * n * c * kh * kw / per_rank))
    elif not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank: expected a positive int, got {rank!r}")
    w = conv.weight.detach().double()
    from tensorly.decomposition import parafac

    cp = _with_tensorly(lambda: parafac(w, rank, n_iter_max=n_iter_max, init="random", random_state=seed, tol=1e-10))
    a, b, fh, fw = cp.factors
    a = a * cp.weights[None, :]
    layer = CPConv2d.build(CPConv2d.spec_of(conv, rank=rank), w.device, conv.weight.dtype)
    dt = conv.weight.dtype
    _set(layer[0], b.t().to(dt))
    _set(layer[1], fh.t().to(dt))
    _set(layer[2], fw.t().to(dt))
    _set(layer[3], a.to(dt), conv.bias)
    layer.relative_error = relative_error(conv.weight, layer.dense_weight())
    return layer


class SeparableConv2d(_ConvChain):
    """Jaderberg 2014: kh×1 conv C→K (stride_h, pad_h), then 1×kw conv K→N (stride_w, pad_w, bias)."""

    kind = "separable"

    @classmethod
    def build(cls, spec: dict[str, Any], device=None, dtype=None) -> SeparableConv2d:
        s, r = spec, spec["rank"]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = s["kernel_size"], s["stride"], s["padding"], s["dilation"]
        like = nn.Conv2d(1, 1, 1, device=device, dtype=dtype)
        return cls(
            _conv(s["in_channels"], r, (kh, 1), (sh, 1), (ph, 0), (dh, 1), like=like),
            _conv(r, s["out_channels"], (1, kw), (1, sw), (0, pw), (1, dw), bias=s["bias"], like=like),
            spec=dict(spec),
        )

    def dense_weight(self) -> torch.Tensor:
        v, h = self[0].weight[..., 0], self[1].weight[:, :, 0, :]  # (K, C, kh), (N, K, kw)
        return torch.einsum("kci,nkj->ncij", v, h)


def separable_decompose_conv(
    conv: nn.Conv2d, rank: int | None = None, *, energy: float | None = None, param_ratio: float | None = None
) -> SeparableConv2d:
    """SVD of W reshaped to M[(c, i), (n, j)] = W[n, c, i, j]: rank-K vertical and horizontal filters
    (the best such pair in Frobenius norm). Default criterion: energy 0.9."""
    _check_conv(conv)
    n, c, kh, kw = conv.weight.shape
    if rank is None and energy is None and param_ratio is None:
        energy = 0.9
    m = conv.weight.detach().permute(1, 2, 0, 3).reshape(c * kh, n * kw)
    v, h, error = truncated_svd(m, rank=rank, energy=energy, param_ratio=param_ratio)  # (C·kh, K), (K, N·kw)
    k = v.shape[1]
    layer = SeparableConv2d.build(SeparableConv2d.spec_of(conv, rank=k), conv.weight.device, conv.weight.dtype)
    _set(layer[0], v.t().reshape(k, c, kh, 1))
    _set(layer[1], h.reshape(k, n, kw).permute(1, 0, 2).reshape(n, k, 1, kw), conv.bias)
    layer.relative_error = error
    return layer


# ----------------------------------------------------------------------------- tensor train


def factorize(n: int, parts: int) -> list[int]:
    """n as ``parts`` factors, as balanced as the prime factors allow (largest first into the smallest)."""
    primes, rest, p = [], n, 2
    while p * p <= rest:
        while rest % p == 0:
            primes.append(p)
            rest //= p
        p += 1
    if rest > 1:
        primes.append(rest)
    bins = [1] * parts
    for prime in sorted(primes, reverse=True):
        bins[bins.index(min(bins))] *= prime
    return sorted(bins, reverse=True)


def _tt_params(ranks: list[int], out_modes: list[int], in_modes: list[int]) -> int:
    return sum(ranks[k] * out_modes[k] * in_modes[k] * ranks[k + 1] for k in range(len(in_modes)))


class TTLinear(nn.Module):
    """``y = x · Wᵀ + b`` with W in tensor-train form: W[(i_1..i_d), (j_1..j_d)] = G_1[i_1, j_1] ··· G_d[i_d, j_d],
    cores G_k (r_{k−1}, m_k, n_k, r_k), r_0 = r_d = 1; the forward contracts x with one core at a time."""

    def __init__(
        self, in_modes: list[int], out_modes: list[int], ranks: list[int], bias: bool = True, *, device=None, dtype=None
    ):
        super().__init__()
        d = len(in_modes)
        if d == 0:
            raise ValueError(f"in_modes: expected at least one mode, got {list(in_modes)}")
        for name, values in (("in_modes", in_modes), ("out_modes", out_modes), ("ranks", ranks)):
            for i, value in enumerate(values):
                check_positive_int(value, f"{name}[{i}]")
        if len(out_modes) != d or len(ranks) != d + 1 or ranks[0] != 1 or ranks[-1] != 1:
            raise ValueError(
                f"ranks: expected {d + 1} TT ranks starting and ending with 1 for {d} in/out modes, got "
                f"in_modes={in_modes}, out_modes={out_modes}, ranks={ranks}"
            )
        self.in_modes, self.out_modes, self.ranks = list(in_modes), list(out_modes), list(ranks)
        self.in_features, self.out_features = math.prod(in_modes), math.prod(out_modes)
        self.cores = nn.ParameterList(
            nn.Parameter(
                torch.randn(ranks[k], out_modes[k], in_modes[k], ranks[k + 1], device=device, dtype=dtype)
                / math.sqrt(in_modes[k] * ranks[k])
            )
            for k in range(d)
        )
        self.bias = nn.Parameter(torch.zeros(self.out_features, device=device, dtype=dtype)) if bias else None
        self.relative_error: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        b = math.prod(lead)
        t = x.reshape(b, 1, self.in_features, 1)  # (batch, outputs done, inputs left, rank)
        for k, core in enumerate(self.cores):
            n_k = self.in_modes[k]
            t = t.reshape(b, t.shape[1], n_k, t.shape[2] // n_k, t.shape[3])
            t = torch.einsum("aonsr,rinq->aoisq", t, core.to(x.dtype))
            t = t.reshape(b, t.shape[1] * t.shape[2], t.shape[3], t.shape[4])
        y = t.reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def dense_weight(self) -> torch.Tensor:
        """W from tensorly's tt_to_tensor over the (m_k·n_k)-sized modes."""
        cores = [c.detach().reshape(c.shape[0], c.shape[1] * c.shape[2], c.shape[3]) for c in self.cores]
        full = _with_tensorly(lambda: tensorly.tt_to_tensor(cores))
        d = len(self.in_modes)
        full = full.reshape([s for k in range(d) for s in (self.out_modes[k], self.in_modes[k])])
        return full.permute(*range(0, 2 * d, 2), *range(1, 2 * d, 2)).reshape(self.out_features, self.in_features)

    def to_dense(self) -> nn.Linear:
        return dense_linear(self.dense_weight(), None if self.bias is None else self.bias.detach())

    def conversion_source(self) -> str:
        return "already tensor-train"

    def describe(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "in_modes": self.in_modes,
            "out_modes": self.out_modes,
            "ranks": self.ranks,
            "bias": self.bias is not None,
        }

    @classmethod
    def from_dense(
        cls,
        linear: nn.Linear,
        *,
        modes: int = 3,
        max_rank: int | None = None,
        error: float | None = None,
        param_ratio: float | None = None,
    ) -> TTLinear:
        """TT-SVD (tensorly ``tensor_train``) of the weight reshaped to (m_1·n_1, …, m_d·n_d), with
        the TT ranks capped at ``max_rank``, or the smallest cap meeting a relative ``error``, or
        the largest cap within ``param_ratio``·in·out parameters (default: error 0.1)."""
        if type(linear) is not nn.Linear:
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        _check_features(linear.in_features, linear.out_features, "linear.")
        given = [v for v in (max_rank, error, param_ratio) if v is not None]
        if len(given) > 1:
            raise ValueError("expected at most one of max_rank, error, param_ratio")
        if error is not None and not 0.0 < error < 1.0:
            raise ValueError(f"error: expected a relative error in (0, 1), got {error!r}")
        if not given:
            error = 0.1
        in_modes, out_modes = factorize(linear.in_features, modes), factorize(linear.out_features, modes)
        w = linear.weight.detach().double()
        tensor = w.reshape(*out_modes, *in_modes).permute(*[i for k in range(modes) for i in (k, modes + k)])
        tensor = tensor.reshape([out_modes[k] * in_modes[k] for k in range(modes)])

        def ranks_for(cap: int) -> list[int]:
            sizes = [out_modes[k] * in_modes[k] for k in range(modes)]
            ranks = [1]
            for k in range(1, modes):  # a TT rank never exceeds either side's unfolding size
                ranks.append(min(cap, math.prod(sizes[:k]), math.prod(sizes[k:])))
            return [*ranks, 1]

        def decompose(cap: int) -> tuple[list[torch.Tensor], float, list[int]]:
            from tensorly.decomposition import tensor_train

            ranks = ranks_for(cap)
            tt = _with_tensorly(lambda: tensor_train(tensor, ranks))
            approx = _with_tensorly(lambda: tensorly.tt_to_tensor(tt))
            return list(tt.factors), relative_error(tensor, approx), ranks

        top = max(ranks_for(10**9))
        if max_rank is not None:
            if not isinstance(max_rank, int) or max_rank < 1:
                raise ValueError(f"max_rank: expected a positive int, got {max_rank!r}")
            cap = max_rank
        elif param_ratio is not None:
            budget = param_ratio * linear.in_features * linear.out_features
            cap = max([r for r in range(1, top + 1) if _tt_params(ranks_for(r), out_modes, in_modes) <= budget] or [1])
        else:
            lo, hi = 1, top  # smallest cap whose error meets the budget (error falls as the cap grows)
            while lo < hi:
                mid = (lo + hi) // 2
                if decompose(mid)[1] <= error:
                    hi = mid
                else:
                    lo = mid + 1
            cap = lo
        factors, err, ranks = decompose(cap)
        layer = cls(in_modes, out_modes, ranks, linear.bias is not None, device=w.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            for k, factor in enumerate(factors):
                layer.cores[k].copy_(factor.reshape(ranks[k], out_modes[k], in_modes[k], ranks[k + 1]))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.relative_error = err
        return layer


def build_conv_chain(description: dict[str, Any], device=None, dtype=None) -> _ConvChain:
    classes = {c.__name__: c for c in (LowRankConv2d, TuckerConv2d, CPConv2d, SeparableConv2d)}
    spec = {k: v for k, v in description.items() if k != "class"}
    return classes[description["class"]].build(spec, device, dtype)

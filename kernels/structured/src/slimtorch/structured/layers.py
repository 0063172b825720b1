"""Drop-in structured linear layers: ``y = x · Wᵀ + b`` with W a structured matrix that is never
stored densely (parameters are ``nn.Parameter`` s, so they train, and ``state_dict`` holds them).

| layer | W | stored |
|---|---|---|
| :class:`CirculantLinear` | C(c)[:out, :in], C(c)[r, s] = c[(r − s) mod d], d = max(in, out) | d |
| :class:`BlockCirculantLinear` | p × q circulant blocks of size b (:mod:`.block_circulant`) | in·out/b |
| :class:`BlockCirculantConv2d` | a 1x1 conv whose weight is block-circulant (core's GemmConv2d) | in·out/b |
| :class:`FastfoodLinear` | rows of [S·Ĥ·G·Π·Ĥ·B]_blocks, Ĥ = H_n/√n, n = next pow2 of in | ≤ 3n per n outputs |
| :class:`HashedLinear` | V[n, k] = ξ(n, k)·w[h(n, k)] (:mod:`.hashed_mm`) | P buckets |

Each takes x (..., in) in fp16 / bf16 / fp32 and returns (..., out) in x's dtype; ``from_dense``
projects a dense layer onto the family (least squares where the family is a linear subspace:
circulant, block-circulant, hashed; Fastfood fits S), ``to_dense()`` returns the explicit
``nn.Linear`` (``nn.Conv2d``), ``conversion_source()`` says why a second conversion leaves the
layer alone, ``describe()`` lets the compressed file (``slimtorch.core.container``) rebuild it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.core.checks import check_choice, check_divisible, check_positive
from slimtorch.core.modules import GemmConv2d, conv_weight_as_linear, dense_linear
from slimtorch.structured.block_circulant import (
    PATHS,
    block_circulant_matrix,
    block_circulant_mm,
    weight_spectrum,
)
from slimtorch.structured.hadamard import fwht, hadamard_matrix
from slimtorch.structured.hashing import MAX_SEED, hashed_matrix, hashed_mm


def _check_features(in_features: int, out_features: int) -> None:
    for name, value in (("in_features", in_features), ("out_features", out_features)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")


def _check_linear(linear: nn.Module) -> None:
    if type(linear) is not nn.Linear:
        raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")


class StructuredLinear(nn.Module):
    """Base: shape handling, bias, to_dense, counting and description; subclasses give
    :meth:`matmul` (x (M, in) -> (M, out), bias included) and :meth:`dense_weight` (differentiable)."""

    kind = "structured"

    def __init__(self, in_features: int, out_features: int, bias: bool, device=None, dtype=None):
        super().__init__()
        _check_features(in_features, out_features)
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        self._options: dict[str, Any] = {}

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def dense_weight(self) -> torch.Tensor:
        """The explicit (out, in) matrix."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., {self.in_features}), got {tuple(x.shape)}")
        y = self.matmul(x.reshape(-1, self.in_features))
        return y.reshape(*x.shape[:-1], self.out_features)

    def to_dense(self) -> nn.Linear:
        weight = self.dense_weight().detach()
        return dense_linear(weight, None if self.bias is None else self.bias.detach())

    def conversion_source(self) -> str:
        return f"already {self.kind}"

    def compressed_num_params(self) -> int:
        """Stored numbers (parameters and float buffers): what the layer costs."""
        tensors = [*self.parameters(), *(b for b in self.buffers() if b.is_floating_point())]
        return sum(t.numel() for t in tensors)

    def describe(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            **self._options,
        }

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v}" for k, v in self._options.items())
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{options}"
        )


class _SpectrumCache:
    """The weight's spectrum, recomputed when the parameter changes (its version counter, storage,
    dtype or device), in training mode and while torch.compile traces."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: torch.Tensor | None = None

    def get(self, weight: torch.Tensor, training: bool) -> torch.Tensor:
        if training or torch.compiler.is_compiling():
            return weight_spectrum(weight)
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device, tuple(weight.shape))
        if key != self.key:
            self.key, self.value = key, weight_spectrum(weight)
        return self.value


# ----------------------------------------------------------------------------- (block-)circulant


def project_block_circulant(weight: torch.Tensor, block_size: int) -> torch.Tensor:
    """The (p, q, b) block vectors of the block-circulant matrix nearest to ``weight`` (N, K) in
    Frobenius norm: c_ij[k] = mean of block (i, j)'s entries on circulant diagonal k, (r − s) mod b = k."""
    n, k = weight.shape
    check_divisible(n, block_size, "out_features (rows of the weight)")
    check_divisible(k, block_size, "in_features (columns of the weight)")
    b, p, q = block_size, n // block_size, k // block_size
    blocks = weight.detach().reshape(p, b, q, b).permute(0, 2, 1, 3).reshape(p, q, b * b)
    r = torch.arange(b, device=weight.device)
    lag = ((r[:, None] - r[None, :]) % b).reshape(-1)
    sums = torch.zeros(p, q, b, dtype=blocks.dtype, device=weight.device)
    sums.index_add_(2, lag, blocks)
    return sums / b


def project_circulant(weight: torch.Tensor) -> torch.Tensor:
    """The vector c (d,), d = max(N, K), whose C(c)[:N, :K] is nearest to ``weight`` (N, K):
    c[k] = mean of the entries with (r − s) mod d = k (0 where the window has none)."""
    n, k = weight.shape
    d = max(n, k)
    lag = (torch.arange(n, device=weight.device)[:, None] - torch.arange(k, device=weight.device)[None, :]) % d
    sums = torch.zeros(d, dtype=weight.dtype, device=weight.device).index_add_(
        0, lag.reshape(-1), weight.detach().reshape(-1)
    )
    counts = torch.bincount(lag.reshape(-1), minlength=d).to(weight.dtype)
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.zeros_like(sums))


class BlockCirculantLinear(StructuredLinear):
    """W (out, in) of (out/b) × (in/b) circulant b × b blocks; ``path`` "auto" | "fft" | "direct"
    (see :func:`slimtorch.structured.block_circulant.choose_path`)."""

    kind = "block-circulant"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        block_size: int,
        bias: bool = True,
        *,
        path: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features, bias, device, dtype)
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size: expected a positive int, got {block_size!r}")
        check_divisible(in_features, block_size, f"in_features (block_size={block_size})")
        check_divisible(out_features, block_size, f"out_features (block_size={block_size})")
        check_choice(path, "path", PATHS)
        self.block_size, self.path = block_size, path
        p, q = out_features // block_size, in_features // block_size
        # each row of W holds in_features weights drawn from the q·b block values: N(0, 1/in)
        self.weight = nn.Parameter(torch.randn(p, q, block_size, device=device, dtype=dtype) / math.sqrt(in_features))
        self._options = {"block_size": block_size, "path": path}
        self._cache = _SpectrumCache()

    @classmethod
    def from_dense(cls, linear: nn.Linear, block_size: int, *, path: str = "auto") -> BlockCirculantLinear:
        """The nearest block-circulant layer (least squares: mean along each block's diagonals)."""
        _check_linear(linear)
        w = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            block_size,
            linear.bias is not None,
            path=path,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(project_block_circulant(w, block_size))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def dense_weight(self) -> torch.Tensor:
        return block_circulant_matrix(self.weight)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = None if self.path == "direct" else self._cache.get(self.weight, self.training)
        return block_circulant_mm(x, self.weight, self.bias, self.path, spectrum)


class CirculantLinear(StructuredLinear):
    """W = C(c)[:out, :in] for one vector c of d = max(in, out) numbers: x is zero-padded to d,
    multiplied by the d × d circulant by FFT (rfft, complex product, irfft) and truncated to out."""

    kind = "circulant"

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, *, path: str = "auto", device=None, dtype=None
    ):
        super().__init__(in_features, out_features, bias, device, dtype)
        check_choice(path, "path", PATHS)
        self.size, self.path = max(in_features, out_features), path
        self.weight = nn.Parameter(torch.randn(self.size, device=device, dtype=dtype) / math.sqrt(in_features))
        self._options = {"path": path}
        self._cache = _SpectrumCache()

    @classmethod
    def from_dense(cls, linear: nn.Linear, *, path: str = "auto") -> CirculantLinear:
        _check_linear(linear)
        w = linear.weight
        layer = cls(
            linear.in_features, linear.out_features, linear.bias is not None, path=path, device=w.device, dtype=w.dtype
        )
        with torch.no_grad():
            layer.weight.copy_(project_circulant(w))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def dense_weight(self) -> torch.Tensor:
        return block_circulant_matrix(self.weight.reshape(1, 1, -1))[: self.out_features, : self.in_features]

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_features < self.size:
            x = F.pad(x, (0, self.size - self.in_features))
        weight = self.weight.reshape(1, 1, self.size)
        spectrum = None if self.path == "direct" else self._cache.get(weight, self.training)
        y = block_circulant_mm(x, weight, None, self.path, spectrum)[:, : self.out_features]
        return y if self.bias is None else y + self.bias.to(y.dtype)


class BlockCirculantConv2d(GemmConv2d):
    """A 1x1 Conv2d (groups=1) whose weight is block-circulant: core's Conv2d-as-GEMM wrapper
    around a :class:`BlockCirculantLinear` over channels-last pixels (MobileNet / ShuffleNet
    pointwise layers)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        block_size: int,
        stride: int | tuple[int, int] = 1,
        bias: bool = True,
        *,
        path: str = "auto",
        device=None,
        dtype=None,
    ):
        gemm = BlockCirculantLinear(in_channels, out_channels, block_size, bias, path=path, device=device, dtype=dtype)
        super().__init__(gemm, in_channels, 1, stride, 0, 1)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, block_size: int, *, path: str = "auto") -> BlockCirculantConv2d:
        if type(conv) is not nn.Conv2d:
            raise TypeError(f"conv: expected an nn.Conv2d, got {type(conv).__name__}")
        if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.padding != (0, 0):
            raise ValueError(
                "conv: expected a 1x1 convolution with groups=1 and no padding, got kernel_size="
                f"{conv.kernel_size}, groups={conv.groups}, padding={conv.padding}"
            )
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            block_size,
            conv.stride,
            conv.bias is not None,
            path=path,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        layer.gemm = BlockCirculantLinear.from_dense(conv_weight_as_linear(conv), block_size, path=path)
        return layer

    def conversion_source(self) -> str:
        return "already block-circulant"

    def describe(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "block_size": self.gemm.block_size,
            "stride": list(self.stride),
            "bias": self.gemm.bias is not None,
            "path": self.gemm.path,
        }


# ----------------------------------------------------------------------------- Fastfood


def _next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


class FastfoodLinear(StructuredLinear):
    """Fastfood (Le, Sarlós & Smola 2013): out rows from ⌈out / n⌉ blocks V_t = S_t·Ĥ·G_t·Π_t·Ĥ·B_t,
    n = next power of two ≥ in (x zero-padded), Ĥ = H_n/√n (the FWHT kernel), B ∈ {±1}ⁿ, G
    Gaussian, Π a permutation, S the row scales. ``adaptive`` (Yang et al. 2015, Deep Fried
    Convnets): S, G and B are trained parameters; otherwise buffers (fixed random features)."""

    kind = "Fastfood"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        adaptive: bool = True,
        seed: int = 0,
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features, bias, device, dtype)
        n = _next_power_of_two(in_features)
        blocks = -(-out_features // n)
        self.n, self.blocks, self.adaptive, self.seed = n, blocks, adaptive, seed
        gen = torch.Generator().manual_seed(seed)
        sign = (torch.randint(0, 2, (blocks, n), generator=gen) * 2 - 1).float()
        gauss = torch.randn(blocks, n, generator=gen)
        perm = torch.stack([torch.randperm(n, generator=gen) for _ in range(blocks)])
        # rows of Ĥ·G·Π·Ĥ·B have norm ‖G‖/√n; S makes them unit rows (as N(0, 1/in) rows, nearly)
        scale = math.sqrt(n) / torch.linalg.vector_norm(gauss, dim=-1, keepdim=True).expand(blocks, n)
        for name, value in (("sign", sign), ("gauss", gauss), ("scale", scale)):
            value = value.to(device=device, dtype=dtype or torch.get_default_dtype())
            if adaptive:
                setattr(self, name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.register_buffer("perm", perm.to(device))
        self._options = {"adaptive": adaptive, "seed": seed}

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, in) -> (M, out) without bias."""
        m, n = x.shape[0], self.n
        x = F.pad(x, (0, n - self.in_features)) if n > self.in_features else x
        dt = x.dtype
        z = x[:, None, :] * self.sign.to(dt)  # B
        z = fwht(z.reshape(m * self.blocks, n), n**-0.5).reshape(m, self.blocks, n)  # Ĥ
        z = torch.gather(z, 2, self.perm.expand(m, self.blocks, n)) * self.gauss.to(dt)  # Π, G
        z = fwht(z.reshape(m * self.blocks, n), n**-0.5).reshape(m, self.blocks, n) * self.scale.to(dt)  # Ĥ, S
        return z.reshape(m, self.blocks * n)[:, : self.out_features]

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        y = self._transform(x)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def dense_weight(self) -> torch.Tensor:
        """The explicit matrices: V_t = diag(S_t)·Ĥ·diag(G_t)·I[Π_t]·Ĥ·diag(B_t), stacked, [:out, :in]."""
        h = hadamard_matrix(self.n, dtype=self.gauss.dtype, device=self.gauss.device) * self.n**-0.5
        eye = torch.eye(self.n, dtype=h.dtype, device=h.device)
        blocks = [
            self.scale[t][:, None] * (h * self.gauss[t][None, :]) @ eye[self.perm[t]] @ (h * self.sign[t][None, :])
            for t in range(self.blocks)
        ]
        return torch.cat(blocks)[: self.out_features, : self.in_features]

    @classmethod
    def from_dense(cls, linear: nn.Linear, *, adaptive: bool = True, seed: int = 0) -> FastfoodLinear:
        """Random B, G, Π; S by least squares per row (S_r = ⟨W_r, V_r⟩ / ‖V_r‖²). Fastfood is a
        random-feature family: the fit keeps the row scales, not the matrix (see ``relative_error``)."""
        _check_linear(linear)
        w = linear.weight.detach()
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            adaptive=adaptive,
            seed=seed,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            layer.scale.fill_(1.0)
            v = layer.dense_weight().double()  # (out, in) with S = 1
            s = (v * w.double()).sum(1) / (v * v).sum(1).clamp_min(1e-30)
            full = torch.zeros(layer.blocks * layer.n, dtype=torch.float64, device=w.device)
            full[: linear.out_features] = s
            layer.scale.copy_(full.reshape(layer.blocks, layer.n))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer


# ----------------------------------------------------------------------------- HashedNets


class HashedLinear(StructuredLinear):
    """HashedNets: a virtual (out, in) weight V[n, k] = ξ(n, k)·w[h(n, k)] over ``buckets`` shared
    parameters (default ``compression`` · in · out); the kernel hashes tiles in registers."""

    kind = "hashed"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        buckets: int | None = None,
        compression: float = 0.125,
        seed: int = 0,
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features, bias, device, dtype)
        if buckets is None:
            if not 0.0 < compression <= 1.0:
                raise ValueError(f"compression: expected a fraction in (0, 1], got {compression!r}")
            buckets = max(1, round(compression * in_features * out_features))
        check_positive(buckets, "buckets")
        if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed: expected an int in [0, {MAX_SEED}], got {seed!r}")
        self.buckets, self.seed = int(buckets), seed
        self.weight = nn.Parameter(torch.randn(self.buckets, device=device, dtype=dtype) / math.sqrt(in_features))
        self._options = {"buckets": self.buckets, "seed": seed}

    @classmethod
    def from_dense(cls, linear: nn.Linear, *, compression: float = 0.125, seed: int = 0) -> HashedLinear:
        """Least squares: each bucket gets the mean of its sign-corrected entries ξ·W."""
        _check_linear(linear)
        w = linear.weight.detach()
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            compression=compression,
            seed=seed,
            device=w.device,
            dtype=w.dtype,
        )
        from slimtorch.structured.hashing import hash_index

        bucket, sign = hash_index(w.shape[0], w.shape[1], layer.buckets, seed, w.device)
        sums = torch.zeros(layer.buckets, dtype=torch.float64, device=w.device)
        sums.index_add_(0, bucket.reshape(-1), (w.double() * sign).reshape(-1))
        counts = torch.bincount(bucket.reshape(-1), minlength=layer.buckets).clamp_min(1)
        with torch.no_grad():
            layer.weight.copy_(sums / counts)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def dense_weight(self) -> torch.Tensor:
        return hashed_matrix(self.weight, self.out_features, self.in_features, self.seed)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias
        return hashed_mm(x, self.weight.to(x.dtype), self.out_features, self.seed, bias)

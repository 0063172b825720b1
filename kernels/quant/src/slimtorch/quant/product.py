"""Product quantization (Q-CNN: Wu et al., "Quantized Convolutional Neural Networks for Mobile
Devices", CVPR 2016): sub-vectors of the weight rows share learned codebooks, and the GEMM becomes
table lookups of precomputed partial products (:mod:`slimtorch.quant.pq_mm`, which documents the
layout).

    from slimtorch.quant.api import quantize_
    from slimtorch.quant.product import ProductQuantConfig
    report = quantize_(model, ProductQuantConfig(sub_dim=8, centroids=16))   # every Linear / Conv2d
    for layer in product_layers(model): layer.trainable()                    # fine-tune the centroids

Quantizing an (N, K) weight: K is split into S = ceil(K / d) sub-vectors of length d (**K is
padded with zero weights** to S·d when d does not divide it; the padding's centroid coordinates are
exactly 0 and x is never padded), rows are grouped in blocks of R (``rows_per_block``; None = N,
one codebook per subspace as Q-CNN's fully connected layers; the last block may be shorter), and
for every (row block, subspace) the R sub-vectors are clustered by k-means into C ≤ 256 centroids:

- :func:`kmeans` is Lloyd's algorithm with k-means++ initialisation (Arthur & Vassilvitskii 2007),
  batched over all (row block, subspace) groups at once in float64, seeded by a
  ``torch.Generator`` (no global RNG) and deterministic (distances and cluster sums by batched
  matmuls, ties to the lowest centroid); it stops when no assignment changes. A group with fewer
  distinct sub-vectors than C repeats centroids (never NaN); an empty cluster keeps its centroid.
- the codes are packed at :func:`slimtorch.quant.pq_mm.pq_code_bits` (1, 2, 4 or 8) bits.

Size: codes N · ceil(S / P) · 4 bytes, codebooks B·S·C·d values (``codebook_dtype``: fp32, or
fp16 to halve them), so the weight shrinks by about 1 / (C / R · bytes / 4 + bits / (32 d)) against
fp32: small C and R = N make it small; C = 256 with R = N = 300 would keep 85% of the fp32 bytes in
the codebooks alone. :meth:`ProductQuantizedLinear.weight_bytes` counts it.

Fine-tuning (Q-CNN's error correction, here by back-propagation): ``layer.trainable()`` lets the
gradient reach the centroids through the gather (codes fixed): each centroid receives the sum of
the dense weight gradients of the sub-vectors coded with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from slimtorch.core.checks import FLOAT_DTYPES, check_choice, check_positive_int
from slimtorch.core.packing import words_for
from slimtorch.quant import formats
from slimtorch.quant.api import WeightConfig
from slimtorch.quant.layers import QuantizedLinear, Stored, register_linear_class
from slimtorch.quant.pq_mm import (
    MAX_CENTROIDS,
    MAX_SUB_DIM,
    pq_code_bits,
    pq_decode,
    pq_mm,
    pq_unpack_codes,
)

KMEANS_ITERATIONS = 30  # Lloyd steps at most (stops earlier when no assignment changes)
CODEBOOK_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_CHUNK = 1 << 22  # distance-matrix entries (groups · points · C) per batched step


def _dtype(value: torch.dtype | str) -> torch.dtype | str:
    """A dtype given by name (as the compressed file's layer descriptions hold it)."""
    return _DTYPES.get(value, value) if isinstance(value, str) else value


class ProductWeight(NamedTuple):
    """A product-quantized (N, K) weight: packed ``codes`` (ceil(S / P), N) int32 and
    ``codebooks`` (B, S, C, d), with R = ``rows_per_block``."""

    codes: torch.Tensor
    codebooks: torch.Tensor
    rows_per_block: int


def check_pq_options(k: int, n: int, sub_dim: int, centroids: int, rows_per_block: int | None) -> int:
    """The options for an (N, K) weight; returns R (``rows_per_block``; None or more than N → N)."""
    check_positive_int(sub_dim, "sub_dim")
    if sub_dim > min(k, MAX_SUB_DIM):
        raise ValueError(
            f"sub_dim: expected 1 <= sub_dim <= min(in_features = {k}, {MAX_SUB_DIM}) (the table kernel unrolls d), "
            f"got {sub_dim}"
        )
    check_positive_int(centroids, "centroids")
    if centroids > MAX_CENTROIDS:
        raise ValueError(f"centroids: expected at most {MAX_CENTROIDS} (codes fit one byte), got {centroids}")
    if rows_per_block is None:
        return n
    check_positive_int(rows_per_block, "rows_per_block")
    return min(rows_per_block, n)  # R >= N: one block


# ----------------------------------------------------------------------------- k-means


def _sq_distances(points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """(G, P, d), (G, C, d) → (G, P, C) squared distances ‖p‖² − 2 p·c + ‖c‖², clamped at 0."""
    cross = torch.bmm(points, centers.transpose(1, 2))
    return (points.square().sum(-1)[:, :, None] - 2 * cross + centers.square().sum(-1)[:, None, :]).clamp_(min=0)


def _kmeanspp(points: torch.Tensor, valid: torch.Tensor, c: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeds (G, C, d): the first uniformly among each group's points, each next one with
    probability ∝ D² (its squared distance to the nearest seed so far); uniform where every D² is 0."""
    g, _, d = points.shape
    rows = torch.arange(g, device=points.device)
    first = torch.multinomial(valid.double().cpu(), 1, generator=gen).to(points.device)[:, 0]
    centers = points.new_zeros(g, c, d)
    centers[:, 0] = points[rows, first]
    nearest = _sq_distances(points, centers[:, :1])[:, :, 0]
    for i in range(1, c):
        weights = nearest * valid
        weights = torch.where(weights.sum(1, keepdim=True) > 0, weights, valid.double())
        pick = torch.multinomial(weights.cpu(), 1, generator=gen).to(points.device)[:, 0]
        centers[:, i] = points[rows, pick]
        nearest = torch.minimum(nearest, _sq_distances(points, centers[:, i : i + 1])[:, :, 0])
    return centers


def _lloyd(
    points: torch.Tensor, valid: torch.Tensor, centers: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd steps from ``centers``: assign (argmin, lowest index on ties), move each centroid to
    its cluster's mean (by a one-hot matmul: deterministic), an empty cluster keeps its place."""
    c = centers.shape[1]
    codes = _sq_distances(points, centers).argmin(-1)
    for _ in range(iterations):
        onehot = torch.nn.functional.one_hot(codes, c).to(points.dtype) * valid[:, :, None]  # (G, P, C)
        counts = onehot.sum(1)  # (G, C)
        sums = torch.bmm(onehot.transpose(1, 2), points)  # (G, C, d)
        centers = torch.where(counts[:, :, None] > 0, sums / counts.clamp(min=1)[:, :, None], centers)
        new_codes = _sq_distances(points, centers).argmin(-1)
        if torch.equal(new_codes, codes):
            break
        codes = new_codes
    return centers, codes


def kmeans(
    points: torch.Tensor,
    centroids: int,
    *,
    valid: torch.Tensor | None = None,
    iterations: int = KMEANS_ITERATIONS,
    seed: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched k-means (module doc) of G independent groups of P points in R^d.

    ``points`` (G, P, d); ``valid`` (G, P) bool marks real points (None: all). Returns centroids
    (G, C, d) float64 and codes (G, P) int64 (codes of invalid points are meaningless). Groups are
    processed in chunks (tqdm progress with ``progress``); the same seed gives the same answer.
    """
    from tqdm.auto import tqdm

    check_positive_int(centroids, "centroids")
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations: expected a non-negative int, got {iterations!r}")
    if points.dim() != 3:
        raise ValueError(f"points: expected a (groups, points, d) tensor, got shape {tuple(points.shape)}")
    points = points.double()
    g, p, _ = points.shape
    valid = torch.ones(g, p, dtype=torch.bool, device=points.device) if valid is None else valid
    if g and not bool(valid.any(1).all()):
        raise ValueError("valid: every group needs at least one point")
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, _CHUNK // max(p * centroids, 1))
    centers, codes = [], []
    for start in tqdm(range(0, g, chunk), desc="k-means", disable=not progress, leave=False):
        pts, ok = points[start : start + chunk], valid[start : start + chunk].double()
        seeds = _kmeanspp(pts, ok, centroids, gen)
        c, a = _lloyd(pts, ok, seeds, iterations)
        centers.append(c)
        codes.append(a)
    if not centers:
        return points.new_zeros(0, centroids, points.shape[2]), torch.zeros(0, p, dtype=torch.long)
    return torch.cat(centers), torch.cat(codes)


# ----------------------------------------------------------------------------- the format


def quantize_product(
    weight: torch.Tensor,
    sub_dim: int = 4,
    centroids: int = 16,
    rows_per_block: int | None = None,
    *,
    iterations: int = KMEANS_ITERATIONS,
    seed: int = 0,
    codebook_dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> ProductWeight:
    """Product-quantize an (N, K) weight (module doc): codes packed, codebooks (B, S, C, d)."""
    w = formats._check_weight(weight).double()
    n, k = w.shape
    r = check_pq_options(k, n, sub_dim, centroids, rows_per_block)
    check_choice(codebook_dtype, "codebook_dtype", CODEBOOK_DTYPES)
    d, s = sub_dim, -(-k // sub_dim)
    blocks = -(-n // r)
    # (N, S, d) sub-vectors of the zero-padded rows → groups (B·S, R, d), the short last block padded
    sub = torch.nn.functional.pad(w, (0, s * d - k)).reshape(n, s, d)
    sub = torch.nn.functional.pad(sub, (0, 0, 0, 0, 0, blocks * r - n))
    groups = sub.reshape(blocks, r, s, d).permute(0, 2, 1, 3).reshape(blocks * s, r, d)
    valid = (torch.arange(blocks * r, device=w.device) < n).reshape(blocks, 1, r).expand(blocks, s, r)
    centers, assigned = kmeans(
        groups, centroids, valid=valid.reshape(blocks * s, r), iterations=iterations, seed=seed, progress=progress
    )
    codes = assigned.reshape(blocks, s, r).permute(0, 2, 1).reshape(blocks * r, s)[:n]  # (N, S)
    packed = formats.pack_codes(codes, pq_code_bits(centroids))
    codebooks = centers.reshape(blocks, s, centroids, d).to(codebook_dtype).contiguous()
    return ProductWeight(packed, codebooks, r)


def dequantize_product(packed: ProductWeight, k: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The (N, K) weight the codes and codebooks stand for."""
    return pq_decode(packed.codes, packed.codebooks, packed.rows_per_block, k, dtype)


# ----------------------------------------------------------------------------- the layer


@register_linear_class
class ProductQuantizedLinear(QuantizedLinear):
    """y = x · Wᵀ + b with W product-quantized (module doc), multiplied by the LUT GEMM ``pq_mm``.

    Buffers: ``codes`` (ceil(S / P), N) int32 packed codes and ``bias``; parameter: ``codebooks``
    (B, S, C, d), frozen unless :meth:`trainable` (then gradients reach the centroids only)."""

    options_keys = ("sub_dim", "centroids", "rows_per_block", "codebook_dtype")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        sub_dim: int = 4,
        centroids: int = 16,
        rows_per_block: int | None = None,
        codebook_dtype: torch.dtype | str = torch.float32,
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.rows_per_block = check_pq_options(in_features, out_features, sub_dim, centroids, rows_per_block)
        self.sub_dim, self.centroids = sub_dim, centroids
        codebook_dtype = _dtype(codebook_dtype)
        check_choice(codebook_dtype, "codebook_dtype", CODEBOOK_DTYPES)
        s, blocks = self.subspaces, -(-out_features // self.rows_per_block)
        words = words_for(s, pq_code_bits(centroids))
        self.register_buffer("codes", torch.zeros(words, out_features, dtype=torch.int32, device=device))
        shape = (blocks, s, centroids, sub_dim)
        self.codebooks = nn.Parameter(torch.zeros(shape, dtype=codebook_dtype, device=device), requires_grad=False)

    @property
    def subspaces(self) -> int:
        return -(-self.in_features // self.sub_dim)

    @property
    def codebook_dtype(self) -> torch.dtype:
        return self.codebooks.dtype

    @staticmethod
    def quantize(
        weight: torch.Tensor,
        sub_dim: int = 4,
        centroids: int = 16,
        rows_per_block: int | None = None,
        codebook_dtype: torch.dtype | str = torch.float32,
        iterations: int = KMEANS_ITERATIONS,
        seed: int = 0,
    ) -> ProductWeight:
        return quantize_product(
            weight,
            sub_dim,
            centroids,
            rows_per_block,
            iterations=iterations,
            seed=seed,
            codebook_dtype=_dtype(codebook_dtype),
        )

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, **options: Any) -> QuantizedLinear:
        layer_options = {key: options[key] for key in cls.options_keys if key in options}
        n, k = weight.shape
        return cls.from_packed(cls.quantize(weight.detach(), **options), k, n, bias, **layer_options)

    def load_packed(self, packed: ProductWeight) -> None:
        expected = self.codebooks.shape
        if tuple(packed.codebooks.shape) != tuple(expected) or packed.rows_per_block != self.rows_per_block:
            raise ValueError(
                f"packed: expected codebooks {tuple(expected)} with rows_per_block = {self.rows_per_block}, got "
                f"{tuple(packed.codebooks.shape)} with {packed.rows_per_block}"
            )
        self.register_buffer("codes", packed.codes.contiguous())
        self.codebooks = nn.Parameter(packed.codebooks.detach().clone().contiguous(), requires_grad=False)

    def packed(self) -> ProductWeight:
        return ProductWeight(self.codes, self.codebooks.detach(), self.rows_per_block)

    def trainable(self, mode: bool = True) -> ProductQuantizedLinear:
        """Let gradients reach the centroids (codes and bias stay fixed); returns the layer."""
        self.codebooks.requires_grad_(mode)
        return self

    def cast_codebooks(self, dtype: torch.dtype) -> ProductQuantizedLinear:
        """Store the centroids in ``dtype`` (fp16 after fp32 fine-tuning halves them); returns the layer."""
        check_choice(dtype, "dtype", CODEBOOK_DTYPES)
        self.codebooks = nn.Parameter(self.codebooks.detach().to(dtype), requires_grad=self.codebooks.requires_grad)
        return self

    def dequantize(self) -> torch.Tensor:
        return pq_decode(self.codes, self.codebooks.detach(), self.rows_per_block, self.in_features)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return pq_mm(x, self.codes, self.codebooks, self.rows_per_block, self.bias)

    def stored(self) -> dict[str, Stored]:
        n = self.out_features
        words = words_for(self.subspaces, pq_code_bits(self.centroids))
        return {
            "codes": Stored(torch.int32, (words, n)),
            "codebooks": Stored(FLOAT_DTYPES, tuple(self.codebooks.shape)),
        }

    def _check_codes(self, state_dict: dict, prefix: str) -> None:
        codes = state_dict.get(prefix + "codes")
        if codes is None or codes.shape != self.codes.shape:
            return
        unpacked = pq_unpack_codes(codes, self.centroids, self.subspaces)
        if unpacked.numel() and int(unpacked.max()) >= self.centroids:
            raise ValueError(
                f"{prefix}codes: expected codes below centroids = {self.centroids}, found {int(unpacked.max())}"
            )

    def weight_bytes(self) -> int:
        """Bytes of the stored weight: packed codes + codebooks (the bias not included)."""
        return self.codes.numel() * self.codes.element_size() + self.codebooks.numel() * self.codebooks.element_size()


def product_layers(model: nn.Module) -> Iterator[ProductQuantizedLinear]:
    """Every :class:`ProductQuantizedLinear` of ``model`` (inside GemmConv2d too)."""
    return (m for m in model.modules() if isinstance(m, ProductQuantizedLinear))


# ----------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class ProductQuantConfig(WeightConfig):
    """Q-CNN product quantization: sub-vectors of length ``sub_dim`` along K, ``centroids`` per
    (block of ``rows_per_block`` rows, subspace) codebook (None: one block of all rows), k-means++
    seeded by ``seed``. Layers whose product-quantized weight would not be smaller than fp32 stay
    float (the report says why)."""

    linear_class: ClassVar[type[QuantizedLinear]] = ProductQuantizedLinear
    sub_dim: int = 4
    centroids: int = 16
    rows_per_block: int | None = None
    codebook_dtype: torch.dtype = torch.float32
    iterations: int = KMEANS_ITERATIONS
    seed: int = 0

    def __post_init__(self):
        check_positive_int(self.sub_dim, "sub_dim")
        pq_code_bits(self.centroids)  # 1..256
        if self.rows_per_block is not None:
            check_positive_int(self.rows_per_block, "rows_per_block")
        check_choice(self.codebook_dtype, "codebook_dtype", CODEBOOK_DTYPES)

    def options(self) -> dict[str, Any]:
        return {
            "sub_dim": self.sub_dim,
            "centroids": self.centroids,
            "rows_per_block": self.rows_per_block,
            "codebook_dtype": self.codebook_dtype,
            "iterations": self.iterations,
            "seed": self.seed,
        }

    def gemm_skip_reason(self, out_features: int, in_features: int) -> str | None:
        if self.sub_dim > min(in_features, MAX_SUB_DIM):
            return f"in_features={in_features}: shorter than sub_dim={self.sub_dim}"
        rows = min(self.rows_per_block or out_features, out_features)
        s = -(-in_features // self.sub_dim)
        size = 4 * words_for(s, pq_code_bits(self.centroids)) * out_features
        size += -(-out_features // rows) * s * self.centroids * self.sub_dim * self.codebook_dtype.itemsize
        if size >= 4 * in_features * out_features:
            return f"product quantization ({size} bytes) would not be smaller than the fp32 weight"
        return None

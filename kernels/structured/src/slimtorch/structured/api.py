"""Model-level structuring: frozen configs and :func:`structure_` on core's conversion walk; the
layers are saved in core's compressed file (:mod:`slimtorch.core.container`, registered below).

    from slimtorch.structured import structure_, BlockCirculantConfig, LowRankConfig
    report = structure_(model, BlockCirculantConfig(block_size=8))   # pointwise convs + Linears
    report = structure_(report.model, LowRankConfig(param_ratio=0.5))  # the rest; composes
    report.converted / report.skipped / report.bytes_before / report.bytes_after

Eligibility is core's :func:`~slimtorch.core.conversions.conversion_source` (exact nn.Linear /
nn.Conv2d, or what a module declares); every layer made here declares "already <kind>", so a
second conversion leaves it alone and says why. A layer a config could take but should not
(sizes not divisible by the block, a decomposition that would not be smaller, a grouped conv) is
left alone with the reason in the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from slimtorch.core.checks import check_choice
from slimtorch.core.conversions import (
    ConversionConfig,
    ConversionReport,
    FilterFn,
    Replace,
    Skip,
    conversion_source,
    convert_model,
)
from slimtorch.core.layer_formats import LayerFormat, register_layer_format
from slimtorch.structured.block_circulant import PATHS
from slimtorch.structured.layers import (
    BlockCirculantConv2d,
    BlockCirculantLinear,
    CirculantLinear,
    FastfoodLinear,
    HashedLinear,
)
from slimtorch.structured.lowrank import (
    CPConv2d,
    LowRankConv2d,
    LowRankLinear,
    SeparableConv2d,
    TTLinear,
    TuckerConv2d,
    build_conv_chain,
    cp_decompose_conv,
    tucker_decompose_conv,
)


def _source(module: nn.Module) -> nn.Module | Skip | None:
    return conversion_source(module)


def _with_error(new: nn.Module, what: str) -> Replace:
    """The replacement, with its size and reconstruction error in the report's note."""
    return Replace(new, note=f"{what}, relative error {new.relative_error:.4f}")


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (1, 1) and conv.padding == (0, 0) and conv.groups == 1


def _grouped_or_odd(conv: nn.Conv2d) -> Skip | None:
    if conv.groups != 1:
        return Skip(f"groups={conv.groups}: grouped/depthwise convolution stays as it is")
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return Skip(f"padding={conv.padding!r}, padding_mode={conv.padding_mode!r}: not supported")
    return None


@dataclass(frozen=True)
class BlockCirculantConfig(ConversionConfig):
    """Linear and 1x1 Conv2d (groups=1) layers whose in and out sizes ``block_size`` divides become
    :class:`BlockCirculantLinear` / :class:`BlockCirculantConv2d` (nearest in least squares)."""

    block_size: int = 8
    path: str = "auto"
    linears: bool = True
    convs: bool = True

    def __post_init__(self):
        if not isinstance(self.block_size, int) or self.block_size < 2:
            raise ValueError(f"block_size: expected an int >= 2, got {self.block_size!r}")
        check_choice(self.path, "path", PATHS)

    def convert_module(self, module, fqn, plan):
        src = _source(module)
        if src is None or isinstance(src, Skip):
            return src
        b = self.block_size
        if isinstance(src, nn.Linear):
            if not self.linears:
                return None
            sizes = (src.in_features, src.out_features)
            make = lambda: BlockCirculantLinear.from_dense(src, b, path=self.path)
        else:
            if not self.convs:
                return None
            if not _is_pointwise(src):
                return Skip(f"kernel_size={src.kernel_size}, groups={src.groups}: only 1x1 groups=1 convs")
            sizes = (src.in_channels, src.out_channels)
            make = lambda: BlockCirculantConv2d.from_dense(src, b, path=self.path)
        if sizes[0] % b or sizes[1] % b:
            return Skip(f"in/out sizes {sizes} are not multiples of block_size {b}")
        return make()


@dataclass(frozen=True)
class CirculantConfig(ConversionConfig):
    """Every Linear becomes a :class:`CirculantLinear` (one vector of max(in, out) numbers)."""

    path: str = "auto"

    def convert_module(self, module, fqn, plan):
        src = _source(module)
        if src is None or isinstance(src, Skip) or not isinstance(src, nn.Linear):
            return src if isinstance(src, Skip) else None
        return CirculantLinear.from_dense(src, path=self.path)


@dataclass(frozen=True)
class FastfoodConfig(ConversionConfig):
    """Every Linear becomes a :class:`FastfoodLinear` (row scales fitted; meant for fine-tuning)."""

    adaptive: bool = True
    seed: int = 0

    def convert_module(self, module, fqn, plan):
        src = _source(module)
        if src is None or isinstance(src, Skip) or not isinstance(src, nn.Linear):
            return src if isinstance(src, Skip) else None
        return FastfoodLinear.from_dense(src, adaptive=self.adaptive, seed=self.seed)


@dataclass(frozen=True)
class HashedConfig(ConversionConfig):
    """Every Linear becomes a :class:`HashedLinear` with ``compression``·in·out buckets."""

    compression: float = 0.125
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.compression <= 1.0:
            raise ValueError(f"compression: expected a fraction in (0, 1], got {self.compression!r}")

    def convert_module(self, module, fqn, plan):
        src = _source(module)
        if src is None or isinstance(src, Skip) or not isinstance(src, nn.Linear):
            return src if isinstance(src, Skip) else None
        return HashedLinear.from_dense(src, compression=self.compression, seed=self.seed)


@dataclass(frozen=True)
class LowRankConfig(ConversionConfig):
    """Truncated SVD of Linear and groups=1 Conv2d weights (k×k as (N, C·kh·kw)): exactly one of
    ``rank``, ``energy``, ``rank_ratio`` (of min(m, n)) or ``param_ratio`` (of m·n; default
    energy 0.9). A layer the rank would not make smaller is left alone."""

    rank: int | None = None
    energy: float | None = None
    rank_ratio: float | None = None
    param_ratio: float | None = None
    convs: bool = True

    def __post_init__(self):
        given = [k for k in ("rank", "energy", "rank_ratio", "param_ratio") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"expected at most one of rank, energy, rank_ratio, param_ratio; got {given}")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise ValueError(f"energy: expected a fraction in (0, 1], got {self.energy!r}")
        for name in ("rank_ratio", "param_ratio"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name}: expected a fraction in (0, 1], got {value!r}")

    def criterion(self) -> dict[str, Any]:
        chosen = {k: getattr(self, k) for k in ("rank", "energy", "rank_ratio", "param_ratio")}
        chosen = {k: v for k, v in chosen.items() if v is not None} or {"energy": 0.9}
        return {"rank": None, "energy": None, **chosen}

    def convert_module(self, module, fqn, plan):
        src = _source(module)
        if src is None or isinstance(src, Skip):
            return src
        if isinstance(src, nn.Conv2d):
            if not self.convs:
                return None
            odd = _grouped_or_odd(src)
            if odd is not None:
                return odd
            m, n = src.out_channels, src.weight[0].numel()
        else:
            m, n = src.out_features, src.in_features
        if self.rank is not None and self.rank > min(m, n):
            return Skip(f"rank {self.rank} > min(out, in) = {min(m, n)}")
        new = (LowRankConv2d if isinstance(src, nn.Conv2d) else LowRankLinear).from_dense(src, **self.criterion())
        rank = new.spec["rank"] if isinstance(new, LowRankConv2d) else new.rank
        if rank * (m + n) >= m * n:
            return Skip(f"rank {rank} would not be smaller than the dense {m}x{n} weight")
        return _with_error(new, f"rank {rank}")


def _kxk_conv_source(module: nn.Module, method: str) -> nn.Conv2d | Skip | None:
    """The k×k (k > 1) groups=1 conv a decomposition may take, a Skip saying why not, or None."""
    src = _source(module)
    if src is None or isinstance(src, Skip) or not isinstance(src, nn.Conv2d):
        return src if isinstance(src, Skip) else None
    odd = _grouped_or_odd(src)
    if odd is not None or src.kernel_size == (1, 1):
        return odd or Skip(f"1x1 convolution: {method} is for k×k convs (use LowRankConfig)")
    return src


@dataclass(frozen=True)
class TuckerConfig(ConversionConfig):
    """k×k (k > 1) groups=1 convs -> Tucker-2 (:func:`tucker_decompose_conv`) at ``rank_ratio`` of
    the channels per mode, or ``energy``; kept only when smaller."""

    rank_ratio: float | None = 0.5
    energy: float | None = None
    n_iter_max: int = 20

    def convert_module(self, module, fqn, plan):
        src = _kxk_conv_source(module, "Tucker-2")
        if not isinstance(src, nn.Conv2d):
            return src
        ratio = None if self.energy is not None else self.rank_ratio
        new = tucker_decompose_conv(src, rank_ratio=ratio, energy=self.energy, n_iter_max=self.n_iter_max)
        if sum(p.numel() for p in new.parameters()) >= src.weight.numel():
            return Skip("Tucker-2 at these ranks would not be smaller")
        return _with_error(new, f"ranks (out {new.spec['rank_out']}, in {new.spec['rank_in']})")


@dataclass(frozen=True)
class CPConfig(ConversionConfig):
    """k×k (k > 1) groups=1 convs -> CP (:func:`cp_decompose_conv`) of ``rank`` or within ``param_ratio``."""

    rank: int | None = None
    param_ratio: float | None = 0.25
    n_iter_max: int = 200

    def convert_module(self, module, fqn, plan):
        src = _kxk_conv_source(module, "CP")
        if not isinstance(src, nn.Conv2d):
            return src
        ratio = None if self.rank is not None else self.param_ratio
        new = cp_decompose_conv(src, self.rank, param_ratio=ratio, n_iter_max=self.n_iter_max)
        return _with_error(new, f"rank {new.spec['rank']}")


@dataclass(frozen=True)
class TTConfig(ConversionConfig):
    """Linear layers -> :class:`TTLinear` (TT-SVD, ``modes`` cores) within a relative ``error``
    or ``param_ratio``; kept only when smaller."""

    modes: int = 3
    error: float | None = None
    param_ratio: float | None = 0.25

    def convert_module(self, module, fqn, plan):
        src = _source(module)
        if src is None or isinstance(src, Skip) or not isinstance(src, nn.Linear):
            return src if isinstance(src, Skip) else None
        ratio = None if self.error is not None else self.param_ratio
        new = TTLinear.from_dense(src, modes=self.modes, error=self.error, param_ratio=ratio)
        if sum(c.numel() for c in new.cores) >= src.weight.numel():
            return Skip("the tensor train at this budget would not be smaller")
        return _with_error(new, f"TT ranks {new.ranks}")


def structure_(model: nn.Module, config: ConversionConfig, filter_fn: FilterFn | None = None) -> ConversionReport:
    """Convert ``model`` in place by ``config`` (core's walk); ``report.model`` is the result."""
    return convert_model(model, config, filter_fn, conversion="structure_")


# ----------------------------------------------------------------------------- the compressed file

_LAYER_CLASSES = {
    c.__name__: c
    for c in (BlockCirculantLinear, CirculantLinear, FastfoodLinear, HashedLinear, LowRankLinear, TTLinear)
}
_CHAIN_CLASSES = {c.__name__ for c in (LowRankConv2d, TuckerConv2d, CPConv2d, SeparableConv2d)}


def structured_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every layer of this package by name (not the linear inside a BlockCirculantConv2d)."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        inside = any(outer == "" or name.startswith(f"{outer}.") for outer in found)
        if not inside and hasattr(module, "describe") and type(module).__module__.startswith("slimtorch.structured"):
            found[name] = module
    return found


def build_layer(description: dict[str, Any], device=None, dtype=None) -> nn.Module:
    """An empty layer of the described class and shape (what ``load_compressed`` fills)."""
    kind = description["class"]
    options = {k: v for k, v in description.items() if k != "class"}
    if kind in _CHAIN_CLASSES:
        return build_conv_chain(description, device, dtype)
    if kind == "BlockCirculantConv2d":
        return BlockCirculantConv2d(
            options["in_channels"],
            options["out_channels"],
            options["block_size"],
            tuple(options["stride"]),
            options["bias"],
            path=options["path"],
            device=device,
            dtype=dtype,
        )
    if kind == "TTLinear":
        return TTLinear(
            options["in_modes"], options["out_modes"], options["ranks"], options["bias"], device=device, dtype=dtype
        )
    if kind not in _LAYER_CLASSES:
        raise ValueError(f"description: expected a layer class of slimtorch.structured, got {kind!r}")
    cls = _LAYER_CLASSES[kind]
    args = [options.pop("in_features"), options.pop("out_features")]
    if kind == "BlockCirculantLinear":
        args.append(options.pop("block_size"))
    if kind == "LowRankLinear":
        args.append(options.pop("rank"))
    return cls(*args, options.pop("bias"), **options, device=device, dtype=dtype)


# Structured layers in slimtorch.core.container's file: save_compressed(model, path) writes each
# with its description, load_compressed(path, model) rebuilds it (build_layer) and loads its state.
STRUCTURED_LAYER_FORMAT = register_layer_format(
    LayerFormat(
        name="structured",
        family="structured",
        claims=lambda m: hasattr(m, "describe") and type(m).__module__.startswith("slimtorch.structured"),
        describe=lambda m: m.describe(),
        build=build_layer,
    )
)

"""The one model-conversion walk of slimtorch: ``quantize_``, ``sparsify_``, ``fuse_``,
``structure_`` and the pruner are all :func:`convert_model` with their own config.

    report = quantize_(model, Int4WeightOnlyConfig(group_size=32), filter_fn=None)
    report.model        # the converted model (``model`` itself unless the root was replaced)
    report.converted    # {"features.1.conv": "Conv2d -> QuantizedConv2d", ...}
    report.skipped      # {"features.2.conv": "groups=32: grouped/depthwise convolution stays in float", ...}
    report.bytes_before, report.bytes_after

A conversion is a frozen :class:`ConversionConfig` whose :meth:`~ConversionConfig.convert_module`
looks at one module and answers with the module to put in its place, a :class:`Skip` saying why
it stays as it is, or None when the module is none of its business. The walk goes top-down; it
does not descend into a module it replaced (nor into a :class:`Skip` whose ``descend`` is
False). ``filter_fn(module, fqn)`` returning False leaves a module alone before the config sees
it (recorded as skipped when it is a linear or convolution).

**Which modules a conversion may take** is decided by one rule, :func:`conversion_source`:
a module of exactly ``nn.Linear`` / ``nn.Conv2d`` is itself; a module that declares what it
computes (a ``conversion_source()`` method returning the plain ``nn.Linear`` / ``nn.Conv2d`` of
the same computation, or a reason string when there is none) is what it declares; any other
subclass of ``nn.Linear`` / ``nn.Conv2d`` is left alone with its class named, because its forward
may do more than the base class (``isinstance`` on a subclass would silently drop a shift, a
shuffle or a fused activation). A config converts the *source*, so every conversion keeps the
module's whole computation or leaves the module alone and says why.

**Conversions compose**: each compressed layer declares ``conversion_source()`` (a reason, such
as "already int4") so a second conversion leaves it alone and says so; reports add up
(``report_a + report_b``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from slimtorch.core.model_stats import memory_bytes
from slimtorch.core.modules import GemmConv2d, gemm_conv_skip_reason

FilterFn = Callable[[nn.Module, str], bool]

PLAIN_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class Skip:
    """``convert_module``'s answer for a module it could take but leaves alone, and why.
    ``descend``: still visit the module's children."""

    reason: str
    descend: bool = True


@dataclass(frozen=True)
class Replace:
    """``convert_module``'s answer when one conversion also rewrites other modules: ``module``
    goes at the visited name, each ``(fqn, module)`` of ``absorbed`` at its own name (a folded
    BatchNorm becoming ``nn.Identity``, an activation fused into the layer's epilogue)."""

    module: nn.Module
    absorbed: tuple[tuple[str, nn.Module], ...] = ()
    note: str = ""


@dataclass(frozen=True)
class ConversionConfig:
    """Base of every conversion config (frozen dataclasses; options are fields).

    Subclasses implement :meth:`convert_module`; :meth:`plan` may look at the whole model once
    first (a graph trace, a dependency graph, importance scores) and its result is passed along.
    """

    def plan(self, model: nn.Module) -> Any:
        """Whole-model analysis done once before the walk; passed to every convert_module call."""
        return None

    def convert_module(self, module: nn.Module, fqn: str, plan: Any) -> nn.Module | Replace | Skip | None:
        raise NotImplementedError(f"{type(self).__name__} must implement convert_module")

    def describe(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({fields})"


@dataclass
class ConversionReport:
    """What a conversion did. ``converted``/``skipped`` map module names to what each became / why
    it stayed; bytes are the model's parameters and buffers before and after."""

    conversion: str
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    converted: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    bytes_before: int = 0
    bytes_after: int = 0

    def __add__(self, later: ConversionReport) -> ConversionReport:
        """Two conversions one after the other: names from both (a later verdict wins), the first
        one's bytes before, the later one's after and model."""
        if not isinstance(later, ConversionReport):
            return NotImplemented
        converted = {**self.converted, **later.converted}
        skipped = {k: v for k, v in {**self.skipped, **later.skipped}.items() if k not in later.converted}
        return ConversionReport(
            conversion=f"{self.conversion} + {later.conversion}",
            model=later.model,
            converted=converted,
            skipped=skipped,
            bytes_before=self.bytes_before,
            bytes_after=later.bytes_after,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversion": self.conversion,
            "converted": dict(self.converted),
            "skipped": dict(self.skipped),
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
        }

    def __str__(self) -> str:
        lines = [
            f"{self.conversion}: {len(self.converted)} converted, {len(self.skipped)} left alone, "
            f"{self.bytes_before:,} -> {self.bytes_after:,} bytes"
        ]
        lines += [f"  converted {name or '<root>'}: {what}" for name, what in self.converted.items()]
        lines += [f"  left alone {name or '<root>'}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def conversion_source(module: nn.Module) -> nn.Module | Skip | None:
    """The plain ``nn.Linear`` / ``nn.Conv2d`` whose computation ``module`` is (module docstring):
    the module itself, what it declares, a :class:`Skip` naming why it has none, or None when it
    is not a linear/convolution at all."""
    if type(module) in PLAIN_TYPES:
        return module
    declare = getattr(module, "conversion_source", None)
    if callable(declare):
        source = declare()
        if isinstance(source, str):
            return Skip(source, descend=False)
        if type(source) not in PLAIN_TYPES:
            raise TypeError(
                f"{type(module).__name__}.conversion_source(): expected an nn.Linear, an nn.Conv2d or a reason "
                f"string, got {type(source).__name__}"
            )
        return source
    if isinstance(module, nn.Linear) and type(module).__name__ == "NonDynamicallyQuantizableLinear":
        return Skip("attention's out_proj: nn.MultiheadAttention reads its weight directly")
    if isinstance(module, PLAIN_TYPES):
        base = "nn.Linear" if isinstance(module, nn.Linear) else "nn.Conv2d"
        return Skip(f"{type(module).__name__} subclasses {base} without declaring what it computes")
    return None


def convert_model(
    model: nn.Module,
    config: ConversionConfig,
    filter_fn: FilterFn | None = None,
    *,
    conversion: str,
) -> ConversionReport:
    """Run ``config`` over ``model`` in place (module docstring); returns the report, whose
    ``model`` is the converted model."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, ConversionConfig):
        raise TypeError(f"config: expected a ConversionConfig (a {conversion} config), got {type(config).__name__}")
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn: expected a callable (module, fqn) -> bool, got {type(filter_fn).__name__}")
    report = ConversionReport(conversion=f"{conversion}({config.describe()})", bytes_before=memory_bytes(model))
    plan = config.plan(model)
    root = model
    absorbed: dict[str, nn.Module] = {}

    def visit(module: nn.Module, fqn: str) -> tuple[nn.Module | None, bool]:
        """(replacement or None, descend into children)."""
        if filter_fn is not None and not filter_fn(module, fqn):
            if conversion_source(module) is not None:
                report.skipped[fqn] = "excluded by filter_fn"
            return None, True
        answer = config.convert_module(module, fqn, plan)
        if answer is None:
            return None, True
        if isinstance(answer, Skip):
            report.skipped[fqn] = answer.reason
            return None, answer.descend
        if isinstance(answer, Replace):
            for name, new in answer.absorbed:  # in place at once: later visits see the rewritten model
                absorbed[name] = new
                parent_name, _, child_name = name.rpartition(".")
                parent = root.get_submodule(parent_name)
                old = getattr(parent, child_name)
                setattr(parent, child_name, new)
                report.converted[name] = f"{type(old).__name__} -> {type(new).__name__} (absorbed by {fqn or '<root>'})"
            new_module, note = answer.module, answer.note
        elif isinstance(answer, nn.Module):
            new_module, note = answer, ""
        else:
            raise TypeError(
                f"{type(config).__name__}.convert_module: expected a module, Replace, Skip or None for {fqn!r}, "
                f"got {type(answer).__name__}"
            )
        what = f"{type(module).__name__} -> {type(new_module).__name__}"
        report.converted[fqn] = f"{what} ({note})" if note else what
        return new_module, False

    def visit_children(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            fqn = f"{prefix}.{name}" if prefix else name
            if fqn in absorbed:
                continue
            new, descend = visit(child, fqn)
            if new is not None:
                setattr(parent, name, new)
            elif descend:
                visit_children(child, fqn)

    new_root, descend = visit(model, "")
    if new_root is not None:
        model = new_root
    elif descend:
        visit_children(model, "")
    report.model = model
    report.bytes_after = memory_bytes(model)
    return report


@dataclass(frozen=True)
class GemmConversion(ConversionConfig):
    """A conversion that turns each ``nn.Linear`` and groups=1 ``nn.Conv2d`` (by
    :func:`conversion_source`) into a compressed GEMM module: ``to_gemm(linear)`` for a Linear,
    :class:`~slimtorch.core.modules.GemmConv2d` around ``to_gemm`` of the conv's (N, C·kh·kw)
    weight for a convolution. Subclasses define :meth:`to_gemm` and may refuse shapes in
    :meth:`gemm_skip_reason` (N = out features, K = in features of the GEMM)."""

    def gemm_skip_reason(self, out_features: int, in_features: int) -> str | None:
        return None

    def to_gemm(self, linear: nn.Linear) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement to_gemm")

    def convert_module(self, module: nn.Module, fqn: str, plan: Any) -> nn.Module | Skip | None:
        source = gemm_source(module)
        if source is None or isinstance(source, Skip):
            return source
        reason = self.gemm_skip_reason(source.weight.shape[0], source.weight[0].numel())
        if reason is not None:
            return Skip(reason)
        if isinstance(source, nn.Conv2d):
            return GemmConv2d.from_dense(source, self.to_gemm)
        return self.to_gemm(source)


def gemm_source(module: nn.Module) -> nn.Module | Skip | None:
    """:func:`conversion_source`, with the convolutions a GEMM cannot compute left alone and why."""
    source = conversion_source(module)
    if isinstance(source, nn.Conv2d):
        reason = gemm_conv_skip_reason(source)
        if reason is not None:
            return Skip(reason)
    return source

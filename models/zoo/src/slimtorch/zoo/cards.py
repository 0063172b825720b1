"""What each registered model is documented to be: its exact parameter count and the published
(paper or reference implementation) parameter and multiply-add figures.

Each family module registers a :class:`ModelCard` per model name; the registry-wide tests check
every model against its card (exact parameters; :func:`Published.agrees` for the published
figures, with MACs from :func:`slimtorch.zoo.profile`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from torch import nn

from slimtorch.zoo.profile import ModelProfile

_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}


def parse_figure(text: str) -> tuple[float, float]:
    """``"3.47M"`` -> (3.47e6, 0.005e6): the value and half a unit of its last printed digit."""
    match = re.fullmatch(r"([0-9][0-9,]*)(?:\.([0-9]+))?([KMG]?)", text.strip())
    if not match:
        raise ValueError(f"figure: expected a number like '3.47M' or '1,248,424', got {text!r}")
    whole, frac, suffix = match.groups()
    scale = _SUFFIX[suffix]
    value = float(whole.replace(",", "") + (f".{frac}" if frac else "")) * scale
    half_unit = 0.5 * scale * 10.0 ** (-len(frac or ""))
    return value, half_unit


@dataclass(frozen=True)
class Published:
    """Figures as printed by ``source`` (for the model's default classes and input size).

    ``macs`` counts convolution and linear multiply-adds, as the papers do ("MAdds", often
    called FLOPs there). ``counts`` says which parameters the source counted: ``"all"`` (every
    parameter, BatchNorm included, as PyTorch code sums them) or ``"conv+linear"`` (weights
    and biases of convolutions and linear layers only, as TF-slim's tables do).
    """

    source: str
    params: Optional[str] = None
    macs: Optional[str] = None
    counts: str = "all"

    def counted_params(self, profile: ModelProfile) -> int:
        return profile.params if self.counts == "all" else profile.conv_linear_params

    @staticmethod
    def agrees(measured: float, figure: str, rel: float = 0.02) -> bool:
        """Within ``rel`` of the figure, or within the rounding of its last printed digit."""
        value, half_unit = parse_figure(figure)
        return abs(measured - value) <= max(rel * value, half_unit)


@dataclass(frozen=True)
class Equivalent:
    """A torchvision or timm model with the same architecture (and state_dict converter)."""

    library: str  # "torchvision" (torchvision.models.get_model) or "timm" (timm.create_model)
    name: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    def build(self) -> nn.Module:
        if self.library == "torchvision":
            import torchvision

            return torchvision.models.get_model(self.name, **dict(self.kwargs))
        import timm

        return timm.create_model(self.name, **dict(self.kwargs))

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs)
        return f"{self.library} {self.name}" + (f"({args})" if args else "")


def torchvision_equivalent(name: str, **kwargs: Any) -> Equivalent:
    return Equivalent("torchvision", name, tuple(kwargs.items()))


def timm_equivalent(name: str) -> Equivalent:
    return Equivalent("timm", name)


@dataclass(frozen=True)
class ModelCard:
    """``params``: exact parameter count of the model as registered (default classes);
    ``equivalents``: torchvision / timm models of the same architecture, whose weights load."""

    params: int
    published: Optional[Published] = None
    equivalents: tuple[Equivalent, ...] = ()


_CARDS: dict[str, ModelCard] = {}


def register_cards(cards: dict[str, ModelCard]) -> None:
    _CARDS.update(cards)


def model_card(name: str) -> ModelCard:
    """The card of a registered zoo model."""
    if name not in _CARDS:
        raise ValueError(f"name: {name!r} is not a slimtorch.zoo model (see slimtorch.zoo.list_models())")
    return _CARDS[name]


def _published_cell(published: Optional[Published]) -> str:
    if published is None:
        return ""
    params = published.params and published.params + (" conv+linear" if published.counts != "all" else "")
    figures = [f for f in (params, published.macs and f"{published.macs} MACs") if f]
    return f"{' / '.join(figures)} ({published.source})"


def model_table() -> str:
    """The README's markdown table: every model's parameters and MACs (``profile`` at its
    default input size, on the meta device) beside its published figures and equivalents."""
    import torch

    import slimtorch.zoo as zoo

    lines = [
        "| model | params | MACs | input | published | same architecture |",
        "|---|---:|---:|---|---|---|",
    ]
    for name in zoo.list_models():
        with torch.device("meta"):
            model = zoo.create_model(name)
        size = tuple(model.pretrained_cfg["input_size"])
        prof = zoo.profile(model, (1, *size))
        card = model_card(name)
        same = ", ".join(str(eq) for eq in card.equivalents)
        lines.append(
            f"| `{name}` | {prof.params / 1e6:.3f}M | {prof.macs / 1e6:.1f}M | {size[-1]}² | "
            f"{_published_cell(card.published)} | {same} |"
        )
    return "\n".join(lines) + "\n"

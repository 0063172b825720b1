"""Gradual and iterative unstructured pruning, with lottery-ticket rewinding.

**Cubic schedule** (Zhu & Gupta 2017, *To prune, or not to prune*): starting at step ``t0`` and
pruning every ``Δt`` steps, ``n`` times, the sparsity at step t is

    s_t = s_f + (s_i − s_f) · (1 − (t − t0) / (n·Δt))³      for t0 ≤ t ≤ t0 + n·Δt

(``s_i`` before t0, ``s_f`` after). It prunes fast while the network is redundant and slowly near
the target. ``kind="linear"`` is the equal steps of Han et al. 2015 (``s_i + (s_f − s_i)·(t−t0)/(nΔt)``).

Two ways to use it:

- :class:`GradualPruner` (Zhu & Gupta): one training run; ``after_step`` after every optimizer step
  re-prunes to ``s_t`` at the steps ``t0 + jΔt`` (j = 0..n). Steps count from 1.
- :func:`prune_iteratively_` (Han et al. 2015): train → prune → retrain, ``n`` rounds; round j
  prunes to ``s_j`` (the schedule with t0 = 0, Δt = 1: round j is step j), each prune is
  :func:`~slimtorch.compress.prune.prune_unstructured_` (magnitude or random, ``scope`` "layer" or
  "global"; removed weights stay removed), each retraining keeps the masks applied.

**Lottery-ticket rewinding** (Frankle & Carbin 2019, *The Lottery Ticket Hypothesis*; late
rewinding: Frankle et al. 2020): ``rewind_step=k`` saves every parameter after optimizer step k of
the dense training (k = 0: the initialisation), and after each prune round sets the surviving
weights (and every bias / norm parameter) back to those values before retraining; the removed
weights stay zero. Buffers (BatchNorm statistics) are not rewound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from slimtorch.compress.prune.unstructured import METHODS, SCOPES, UnstructuredConfig, masks_of, prune_unstructured_
from slimtorch.core.checks import check_choice
from slimtorch.core.conversions import ConversionReport, FilterFn

__all__ = ["GradualPruner", "IterativeConfig", "PruneSchedule", "prune_iteratively_"]

KINDS = ("cubic", "linear")
_MASKED = ".parametrizations.weight.original"


def _fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: expected a float in [0, 1), got {type(value).__name__}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}: expected a fraction of weights to remove in [0, 1), got {value}")
    return float(value)


def _count(value: object, name: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")


@dataclass(frozen=True)
class PruneSchedule:
    """``s_t`` from ``initial_sparsity`` to ``final_sparsity`` in ``steps`` (n) prunes ``frequency``
    (Δt) apart from ``begin_step`` (t0); ``kind`` "cubic" (Zhu & Gupta) or "linear" (module docstring)."""

    final_sparsity: float = 0.9
    initial_sparsity: float = 0.0
    steps: int = 5
    begin_step: int = 0
    frequency: int = 1
    kind: str = "cubic"

    def __post_init__(self) -> None:
        _fraction(self.final_sparsity, "final_sparsity")
        _fraction(self.initial_sparsity, "initial_sparsity")
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(
                f"initial_sparsity: expected <= final_sparsity {self.final_sparsity}, got {self.initial_sparsity}"
            )
        _count(self.steps, "steps", 1)
        _count(self.begin_step, "begin_step", 0)
        _count(self.frequency, "frequency", 1)
        check_choice(self.kind, "kind", KINDS)

    @property
    def end_step(self) -> int:
        return self.begin_step + self.steps * self.frequency

    def sparsity_at(self, t: int) -> float:
        """s_t (module docstring); ``initial_sparsity`` before ``begin_step``, ``final_sparsity`` after the end."""
        s_i, s_f = float(self.initial_sparsity), float(self.final_sparsity)
        progress = min(max((t - self.begin_step) / (self.steps * self.frequency), 0.0), 1.0)
        if self.kind == "linear":
            return s_i + (s_f - s_i) * progress
        return s_f + (s_i - s_f) * (1.0 - progress) ** 3

    def is_prune_step(self, t: int) -> bool:
        """True at t0, t0 + Δt, ..., t0 + nΔt."""
        return self.begin_step <= t <= self.end_step and (t - self.begin_step) % self.frequency == 0


class GradualPruner:
    """Zhu & Gupta's gradual pruning during one training run: call after every optimizer step
    (``tasks.train(..., after_step=pruner)``); at the schedule's prune steps the model is re-pruned
    to ``s_t`` with ``UnstructuredConfig(method, scope)``. ``reports`` keeps each prune's report."""

    def __init__(
        self,
        schedule: PruneSchedule,
        *,
        method: str = "magnitude",
        scope: str = "layer",
        filter_fn: FilterFn | None = None,
    ) -> None:
        if not isinstance(schedule, PruneSchedule):
            raise TypeError(f"schedule: expected a PruneSchedule, got {type(schedule).__name__}")
        self.schedule, self.filter_fn = schedule, filter_fn
        self.config = UnstructuredConfig(method=method, scope=scope)
        self.step = 0
        self.reports: list[ConversionReport] = []

    def __call__(self, model: nn.Module) -> None:
        self.step += 1
        if self.schedule.is_prune_step(self.step):
            sparsity = self.schedule.sparsity_at(self.step)
            if sparsity > 0 or masks_of(model):
                config = dataclasses.replace(self.config, sparsity=sparsity)
                self.reports.append(prune_unstructured_(model, config, self.filter_fn))


# train_fn(model, round, after_step): train ``model`` in place for one round (round 0: the dense
# model), calling after_step(model) after every optimizer step (tasks.train(..., after_step=...)).
TrainFn = Callable[[nn.Module, int, Callable[[nn.Module], None]], None]


@dataclass(frozen=True)
class IterativeConfig:
    """Han et al.'s prune/retrain loop on a :class:`PruneSchedule` (t = round), optionally with
    lottery-ticket rewinding to the weights after dense step ``rewind_step`` (module docstring).

    ``train_dense``: train the dense model first (round 0; needed for ``rewind_step`` > 0)."""

    schedule: PruneSchedule = PruneSchedule()
    method: str = "magnitude"
    scope: str = "global"
    seed: int = 0
    rewind_step: int | None = None
    train_dense: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, PruneSchedule):
            raise TypeError(f"schedule: expected a PruneSchedule, got {type(self.schedule).__name__}")
        check_choice(self.method, "method", METHODS)
        check_choice(self.scope, "scope", SCOPES)
        if self.rewind_step is not None:
            _count(self.rewind_step, "rewind_step", 0)
            if self.rewind_step > 0 and not self.train_dense:
                raise ValueError(
                    f"rewind_step: {self.rewind_step} > 0 needs the dense training (train_dense=True) to save "
                    "the weights of that step; got train_dense=False"
                )


def _canonical(name: str) -> str:
    """The parameter's name in the plain model (a masked weight lives at ...parametrizations.weight.original)."""
    return name.replace(_MASKED, ".weight") if name.endswith(_MASKED) else name


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {_canonical(n): p.detach().clone() for n, p in model.named_parameters()}


@torch.no_grad()
def rewind_(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Set every parameter back to ``snapshot`` ({plain-model name: tensor}); masked weights keep
    their masks, so the removed ones stay zero in the forward."""
    for name, p in model.named_parameters():
        key = _canonical(name)
        if key not in snapshot:
            raise KeyError(f"snapshot: no saved value for parameter {key!r}")
        p.copy_(snapshot[key])


def prune_iteratively_(
    model: nn.Module,
    config: IterativeConfig,
    train_fn: TrainFn,
    filter_fn: FilterFn | None = None,
    *,
    on_round: Callable[[int, float, nn.Module], None] | None = None,
) -> ConversionReport:
    """Prune ``model`` in ``config.schedule.steps`` rounds, retraining after each with ``train_fn``
    (``round`` 1..n; round 0 trains the dense model when ``train_dense``); the masks stay on (call
    :func:`~slimtorch.compress.prune.finalize_` to bake them in). ``on_round(round, sparsity, model)``
    runs after every retraining (round 0 included). Returns the prunes' reports added up."""
    if not isinstance(config, IterativeConfig):
        raise TypeError(f"config: expected an IterativeConfig, got {type(config).__name__}")
    if not callable(train_fn):
        raise TypeError(f"train_fn: expected a callable (model, round, after_step), got {type(train_fn).__name__}")
    snapshot: dict[str, torch.Tensor] | None = None
    if config.rewind_step == 0:
        snapshot = _snapshot(model)
    if config.train_dense:
        seen = 0

        def count(m: nn.Module) -> None:
            nonlocal seen, snapshot
            seen += 1
            if seen == config.rewind_step:
                snapshot = _snapshot(m)

        train_fn(model, 0, count)
        if config.rewind_step is not None and snapshot is None:
            raise ValueError(f"rewind_step: {config.rewind_step}, but the dense training took only {seen} steps")
        if on_round is not None:
            on_round(0, 0.0, model)
    report = None
    prune = UnstructuredConfig(method=config.method, scope=config.scope, seed=config.seed)
    for r in range(1, config.schedule.steps + 1):
        sparsity = config.schedule.sparsity_at(config.schedule.begin_step + r * config.schedule.frequency)
        step = prune_unstructured_(model, dataclasses.replace(prune, sparsity=sparsity), filter_fn)
        report = step if report is None else report + step
        if snapshot is not None:
            rewind_(model, snapshot)
        train_fn(model, r, lambda m: None)
        if on_round is not None:
            on_round(r, sparsity, model)
    report.conversion = f"prune_iteratively_({config})"
    return report

"""Channel selection by reconstruction, with a least-squares refit of the consumer layers.

    pruned = Pruner(model, x, PruneConfig(importance=ThiNet(batches), ratio=0.5)).step()
    pruned = Pruner(model, x, PruneConfig(importance=Lasso(batches), ratio=0.5)).step()

**The problem.** A removable class of channels (:mod:`.graph`) is read by consumer layers L+1
(``nn.Conv2d`` with groups=1 and zero padding, or ``nn.Linear``). On calibration batches, at S
sampled output locations of each consumer (ThiNet's random sampling),

    Y = X Wᵀ + b      X: S × P, one im2col row per location (``F.unfold``: column j reads input
                      channel j // (kh·kw)); W: N × P (the weight flattened); Y: S × N

and the columns of X split by channel class r: Y − b = Σ_r z_r, z_r = X[:, cols_r] W[:, cols_r]ᵀ.
Channels fed by other groups (or frozen) are columns that always stay.

**Criteria** (each ranks the classes of a group by the order it would remove them; the pruner
removes the first n of that order, so every ratio is the greedy's own prefix):

- :class:`ThiNet`, ``objective="least_squares"`` (default): backward greedy elimination — remove
  the class whose removal least increases the least-squares residual ``min_W' ||Y − X_S W'ᵀ||²``
  over the kept columns S, i.e. the error left after the refit that follows. With
  H = (X_SᵀX_S + εI)⁻¹ and B = H X_SᵀY (the current fit), removing block r raises the residual by
  tr(B_rᵀ H_rr⁻¹ B_r); then H ← H_−− − H_−r H_rr⁻¹ H_r− and B ← B_− − H_−r H_rr⁻¹ B_r (block
  downdate; every candidate scored in one batched solve). A channel that is a linear combination
  of others costs ~0 here. Only the removals the ratio asks for are computed (the ``select`` hook);
  cost per consumer O(Q³ + removals·Q²·kh·kw), Q = C_in·kh·kw, and it needs S ≥ Q samples (fewer
  make the fit underdetermined: :attr:`notes` says so; add batches or ``samples``).
- :class:`ThiNet`, ``objective="thinet"`` (Luo et al. 2017, *ThiNet*, Alg. 1, weights fixed):
  grow the removed set T minimising ``||Σ_{r∈T} z_r||²`` = Σ_{r,s∈T} M_rs with
  M_rs = ⟨z_r, z_s⟩ = Σ_{i∈cols_r, j∈cols_s} (XᵀX)_ij (WᵀW)_ij.
- :class:`Lasso` (He et al. 2017, *Channel Pruning for Accelerating Very Deep Neural Networks*):
  β = argmin ½||Σ_r z_r − Σ_r β_r z_r||² + λ||β||₁ = ½βᵀMβ − (M1)ᵀβ + λ||β||₁ by coordinate
  descent along a geometric λ path from λ_max = max_r |(M1)_r| (every β zero) down to
  λ_max·10⁻⁴; a class ranks by the largest λ at which its β is non-zero (ties: |β| at the end).
  He et al. tune λ to the target count; the path order gives that choice for every count at once.

**Refit** (``refit=True``, run by the pruner after the walk): every consumer that lost input
channels gets W', b' = argmin ||Y − X' W'ᵀ − b'||² (+ ε||W'||²) where Y are the unpruned model's
outputs at the sampled locations and X' the pruned model's inputs there (consumers refit one by
one in execution order, so a later one sees the earlier refits: He et al.'s sequential
reconstruction). A consumer whose outputs were pruned too fits only its kept outputs.

Groups without a supported consumer (read only by depthwise/grouped convolutions, functional
ops, the model output) score by the L2 filter norm; :attr:`notes` says which and why.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.compress.prune._selection import class_scores, drop_count, lowest
from slimtorch.compress.prune.graph import ChannelGraph, ModuleRecord
from slimtorch.compress.prune.importance import channel_scores
from slimtorch.core.checks import check_choice, check_positive, check_positive_int

__all__ = ["OBJECTIVES", "Lasso", "ThiNet", "greedy_least_squares", "greedy_thinet", "lasso_path", "lasso_solve"]

OBJECTIVES = ("least_squares", "thinet")


# ----------------------------------------------------------------------------- the solvers (pure)


def _eps(gram: torch.Tensor, ridge: float) -> float:
    mean = float(gram.diagonal().mean()) if gram.numel() else 0.0
    return ridge * (mean if mean > 0 else 1.0)


def greedy_least_squares(
    problems: Sequence[tuple[torch.Tensor, torch.Tensor, dict[int, np.ndarray]]],
    classes: Sequence[int],
    ridge: float = 1e-8,
    steps: int | None = None,
) -> tuple[list[int], list[float]]:
    """Backward elimination of ``classes`` (module docstring). ``problems``: per consumer
    (XᵀX: Q×Q, XᵀY: Q×N, {class: its columns}), float64. Returns the removal order (the first
    ``steps`` removals, default all but one, then the classes never removed in their given order)
    and each removal's residual increase.

    Cost per consumer: one Q×Q inverse, then per step one batched solve of every candidate's
    block (b×b, b = kh·kw columns per channel) and one rank-b downdate of H (Q²·b). H stays Q×Q:
    removed rows and columns are zeroed instead of cut out (no copies)."""
    classes = list(classes)
    position = {r: k for k, r in enumerate(classes)}
    state = []
    for gram, xty, cols in problems:
        q = gram.shape[0]
        h = torch.linalg.inv(gram + _eps(gram, ridge) * torch.eye(q, dtype=gram.dtype))
        by_size: dict[int, tuple[list[int], list[np.ndarray]]] = {}
        for r, c in cols.items():
            if r in position and len(c):
                members, blocks = by_size.setdefault(len(c), ([], []))
                members.append(position[r])
                blocks.append(np.asarray(c))
        buckets = [(torch.tensor(m), torch.as_tensor(np.stack(b))) for m, b in by_size.values()]
        state.append({"H": h, "B": h @ xty, "buckets": buckets, "cols": cols})
    alive = torch.ones(len(classes), dtype=torch.bool)
    steps = len(classes) - 1 if steps is None else max(0, min(int(steps), len(classes) - 1))
    order: list[int] = []
    increments: list[float] = []
    for _ in range(steps):
        cost = torch.zeros(len(classes), dtype=torch.float64)
        for s in state:  # the residual increase tr(B_rᵀ H_rr⁻¹ B_r) of every candidate at once
            for members, idx in s["buckets"]:
                live = alive[members]
                if not live.any():
                    continue
                m, ix = members[live], idx[live]
                h_rr = s["H"][ix[:, :, None], ix[:, None, :]]
                b_r = s["B"][ix]
                cost.index_add_(0, m, (b_r * torch.linalg.solve(h_rr, b_r)).sum(dim=(1, 2)))
        cost[~alive] = math.inf
        k = int(torch.argmin(cost))
        alive[k] = False
        order.append(classes[k])
        increments.append(float(cost[k]))
        for s in state:  # H ← H − H[:, r] H_rr⁻¹ H[r, :], B ← B − H[:, r] H_rr⁻¹ B_r; then zero r
            c = s["cols"].get(classes[k])
            if c is None or not len(c):
                continue
            ix = torch.as_tensor(np.asarray(c))
            h, b = s["H"], s["B"]
            h_c = h[:, ix]
            sol = torch.linalg.solve(h_c[ix], torch.cat([h_c.T, b[ix]], dim=1))
            h -= h_c @ sol[:, : h.shape[0]]
            b -= h_c @ sol[:, h.shape[0] :]
            h[ix, :] = 0.0
            h[:, ix] = 0.0
            b[ix] = 0.0
    rest = [r for k, r in enumerate(classes) if alive[k]]
    return order + rest, increments + [math.inf] * len(rest)


def greedy_thinet(m: torch.Tensor) -> tuple[list[int], list[float]]:
    """ThiNet's Alg. 1 on the contribution Gram ``m`` (C×C, m[r, s] = ⟨z_r, z_s⟩): positions in
    removal order and the cost ||Σ_{T} z||² after each removal."""
    c = m.shape[0]
    removed: list[int] = []
    cross = torch.zeros(c, dtype=m.dtype)  # Σ_{s∈T} m[r, s]
    total = 0.0
    costs = []
    left = list(range(c))
    while len(left) > 1:
        inc = torch.stack([m[r, r] + 2 * cross[r] for r in left])
        k = int(torch.argmin(inc))
        r = left.pop(k)
        total += float(inc[k])
        removed.append(r)
        costs.append(total)
        cross += m[:, r]
    return removed + left, [*costs, float("inf")]


def lasso_solve(
    m: torch.Tensor, b: torch.Tensor, lam: float, beta: torch.Tensor | None = None, iters: int = 500, tol: float = 1e-10
) -> torch.Tensor:
    """argmin_β ½βᵀmβ − bᵀβ + lam·||β||₁ by cyclic coordinate descent (warm start ``beta``)."""
    m64, b64 = m.double().numpy(), b.double().numpy()
    x = np.zeros(len(b64)) if beta is None else beta.double().numpy().copy()
    diag = np.diag(m64)
    for _ in range(iters):
        change = 0.0
        for r in range(len(x)):
            if diag[r] <= 0:
                x[r] = 0.0
                continue
            rho = b64[r] - m64[r] @ x + diag[r] * x[r]
            new = np.sign(rho) * max(abs(rho) - lam, 0.0) / diag[r]
            change = max(change, abs(new - x[r]))
            x[r] = new
        if change <= tol * max(1.0, float(np.abs(x).max())):
            break
    return torch.from_numpy(x)


def lasso_path(m: torch.Tensor, n_lambdas: int = 30, span: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (higher = enters the LASSO path earlier = kept longer) and the λ grid, for targets
    y = Σ_r z_r (b = m·1); module docstring."""
    b = m.sum(dim=1)
    lam_max = float(b.abs().max()) if b.numel() else 0.0
    grid = torch.tensor([lam_max * span ** (k / (n_lambdas - 1)) for k in range(n_lambdas)], dtype=torch.float64)
    enter = torch.full((m.shape[0],), n_lambdas, dtype=torch.float64)
    beta = None
    for k, lam in enumerate(grid.tolist()):
        beta = lasso_solve(m, b, lam, beta)
        newly = (beta != 0) & (enter == n_lambdas)
        enter[newly] = k
    final = beta.abs() if beta is not None else torch.zeros(m.shape[0], dtype=torch.float64)
    tie = final / (1.0 + float(final.max())) if final.numel() else final
    return (n_lambdas - enter) + tie, grid


# ----------------------------------------------------------------------------- calibration data


def _unsupported(record: ModuleRecord) -> str | None:
    """None when the criteria reconstruct ``record``'s output, else why not."""
    m = record.module
    if record.kind == "linear" and type(m) is nn.Linear:
        return None
    if record.kind != "conv" or type(m) is not nn.Conv2d:
        return f"{type(m).__name__} consumer"
    if m.groups != 1:
        return f"grouped convolution (groups={m.groups})"
    if m.padding_mode != "zeros" or isinstance(m.padding, str):
        return f"padding {m.padding!r} / padding_mode {m.padding_mode!r}"
    return None


def _rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every output location's input row: im2col for a convolution (R × C·kh·kw), rows for a linear."""
    if isinstance(module, nn.Conv2d):
        cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def _run(model: nn.Module, batch: Any) -> None:
    model(*batch) if isinstance(batch, tuple | list) else model(batch)


def _calibrate(model: nn.Module, batches: Any, index: list[int], handles: list) -> None:
    """Run every calibration batch through ``model`` in eval mode without gradients (``index[0]``:
    the batch being run, for the hooks), then remove ``handles`` and restore the training mode."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for index[0], b in enumerate(batches):
                _run(model, b)
    finally:
        model.train(was)
        for h in handles:
            h.remove()


@dataclass
class _Consumer:
    name: str
    record: ModuleRecord
    bias: bool
    columns: int  # P
    weight: torch.Tensor  # N × P, float64
    cols: dict[int, np.ndarray] = field(default_factory=dict)  # class root -> columns
    gram: torch.Tensor | None = None  # [X 1]ᵀ[X 1]
    xty: torch.Tensor | None = None  # [X 1]ᵀY
    rows: list[torch.Tensor] = field(default_factory=list)  # sampled row indices per batch
    targets: list[torch.Tensor] = field(default_factory=list)  # Y at those rows per batch


class _Reconstruction:
    """Common part of :class:`ThiNet` and :class:`Lasso`: calibration, ranking hook, refit."""

    def __init__(
        self, batches: Iterable[Any], *, samples: int = 256, ridge: float = 1e-8, refit: bool = True, seed: int = 0
    ) -> None:
        self.batches = list(batches)
        if not self.batches:
            raise ValueError(f"batches: {type(self).__name__} needs at least one calibration batch, got none")
        self.samples = check_positive_int(samples, "samples")
        check_positive(ridge, "ridge")
        self.ridge = float(ridge)
        self.refit = bool(refit)
        self.seed = int(seed)
        self.notes: dict[str, str] = {}
        self.consumers: dict[str, _Consumer] = {}
        self.orders: dict[int, list[int]] = {}  # group index -> classes in removal order
        self._plan: dict[int, list[str]] = {}  # group index -> its reconstructed consumers

    # ------------------------------------------------------------------ the criterion
    def __call__(self, graph: ChannelGraph, model: nn.Module) -> dict[int, float]:
        self.notes, self.consumers, self.orders, self._plan = {}, {}, {}, {}
        scores = dict(channel_scores(graph, model, "l2"))
        root = {}
        plan: dict[int, list[str]] = {}
        for g in graph.groups:
            names = []
            for module, slot in g.places:
                record = graph.records[module]
                if slot != "in" or record.kind not in ("conv", "linear", "shiftconv"):
                    continue
                if record.kind == "conv" and record.extra.get("depthwise"):
                    continue  # its outputs are in the group too; their consumer is reconstructed
                why = _unsupported(record)
                if why is None:
                    names.append(module)
                else:
                    self.notes.setdefault(module, f"not reconstructed: {why}")
            if names:
                plan[g.index] = names
                for r in g.classes:
                    for i in g.members[r].tolist():
                        root[i] = r
            else:
                self.notes[f"group {g.index}"] = "no supported consumer: ranked by L2 filter norm"
        for name in sorted({n for names in plan.values() for n in names}, key=list(graph.records).index):
            self.consumers[name] = self._consumer(graph.records[name], root)
        self._calibrate(model)
        self._plan = plan
        return scores  # the L2 fallback; the reconstruction choice is made in select()

    def select(self, graph: ChannelGraph, scores: Any, config: Any) -> set[int]:
        """Per group, the classes the ratio removes, in the criterion's order (module docstring)."""
        per_group = class_scores(graph, scores)
        if config.global_ and not isinstance(config.ratio, Mapping):  # one ranking: full orders as scores
            ranked = dict(scores)
            for g in graph.groups:
                if g.index in self._plan:
                    order = self._order(g, None)
                    for r in g.classes:
                        for i in g.members[r].tolist():
                            ranked[i] = 0.0
                    ranked.update({r: float(k + 1) for k, r in enumerate(order)})
            return config._select(graph, ranked)
        removed: set[int] = set()
        for g in graph.groups:
            n = drop_count(g, config._group_ratio(g), config.round_to)
            if n <= 0:
                continue
            if g.index in self._plan:
                removed |= set(self._order(g, n)[:n])
            else:
                removed |= lowest(g, per_group[g.index], n)
        return removed

    def _order(self, group: Any, steps: int | None) -> list[int]:
        order = self.rank(group.classes, [self.consumers[n] for n in self._plan[group.index]], steps)
        self.orders[group.index] = order
        return order

    def rank(self, classes: list[int], consumers: list[_Consumer], steps: int | None) -> list[int]:
        """``classes`` in removal order (at least the first ``steps`` exact; None: all)."""
        raise NotImplementedError

    def _consumer(self, record: ModuleRecord, root: dict[int, int]) -> _Consumer:
        m = record.module
        w = m.weight.detach().double().cpu().reshape(m.weight.shape[0], -1)
        per = w.shape[1] // len(record.slots["in"])  # kh·kw columns per input channel (1 for a linear)
        cols: dict[int, list[int]] = {}
        for p, i in enumerate(record.slots["in"].tolist()):
            r = root.get(i)
            if r is not None:
                cols.setdefault(r, []).extend(range(p * per, (p + 1) * per))
        return _Consumer(
            record.name,
            record,
            m.bias is not None,
            w.shape[1],
            w,
            {r: np.array(c, dtype=np.int64) for r, c in cols.items()},
        )

    def _sample(self, consumer_index: int, batch_index: int, n_rows: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + batch_index * 7_919 + consumer_index)
        if n_rows <= self.samples:
            return torch.arange(n_rows)
        return torch.randperm(n_rows, generator=gen)[: self.samples].sort().values

    def _calibrate(self, model: nn.Module) -> None:
        consumers = list(self.consumers.values())
        batch = [0]

        def hook(k: int):
            def pre(module: nn.Module, args: tuple) -> None:
                c = consumers[k]
                rows = _rows(module, args[0])
                idx = self._sample(k, batch[0], rows.shape[0])
                x = rows[idx.to(rows.device)].double().cpu()
                y = x @ c.weight.T
                if c.bias:
                    y += module.bias.detach().double().cpu()
                    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
                c.gram = x.T @ x if c.gram is None else c.gram + x.T @ x
                c.xty = x.T @ y if c.xty is None else c.xty + x.T @ y
                c.rows.append(idx)
                c.targets.append(y)

            return pre

        handles = [model.get_submodule(c.name).register_forward_pre_hook(hook(k)) for k, c in enumerate(consumers)]
        _calibrate(model, self.batches, batch, handles)
        for c in consumers:
            if c.gram is None or not (bool(torch.isfinite(c.gram).all()) and bool(torch.isfinite(c.xty).all())):
                raise ValueError(
                    f"batches: the calibration inputs of layer {c.name!r} hold NaN or Inf (or never reached it); "
                    "expected finite activations to reconstruct"
                )
            samples, columns = sum(len(r) for r in c.rows), c.gram.shape[0]
            if samples < columns:
                self.notes[c.name] = (
                    f"underdetermined: {samples} samples < {columns} columns (add calibration batches or samples)"
                )

    def _contributions(self, classes: list[int], consumers: list[_Consumer]) -> torch.Tensor:
        """M[r, s] = Σ_consumers ⟨z_r, z_s⟩ (module docstring)."""
        m = torch.zeros(len(classes), len(classes), dtype=torch.float64)
        for c in consumers:
            p = c.columns
            e = c.gram[:p, :p] * (c.weight.T @ c.weight)
            a = torch.zeros(len(classes), p, dtype=torch.float64)
            for k, r in enumerate(classes):
                a[k, torch.as_tensor(c.cols[r])] = 1.0
            m += a @ e @ a.T
        return m

    # ------------------------------------------------------------------ the refit
    def after_prune(self, model: nn.Module, report: Any) -> None:
        if not self.refit:
            return
        plan = getattr(report, "plan", None)
        for c in self.consumers.values():
            module = model.get_submodule(c.name)
            width = module.weight[0].numel()
            if width == c.columns:
                continue  # no input channel removed
            keep_out = plan.keep(c.record, "out") if plan is not None else None
            note = self._refit(model, module, c, keep_out)
            report.converted[c.name] = (report.converted.get(c.name, "") + "; " + note).lstrip("; ")

    def _refit(self, model: nn.Module, module: nn.Module, c: _Consumer, keep_out: np.ndarray | None) -> str:
        xs: list[torch.Tensor] = []
        batch = [0]

        def pre(mod: nn.Module, args: tuple) -> None:
            rows = _rows(mod, args[0])
            xs.append(rows[c.rows[batch[0]].to(rows.device)].double().cpu())

        _calibrate(model, self.batches, batch, [module.register_forward_pre_hook(pre)])
        x = torch.cat(xs)
        y = torch.cat(c.targets)
        if keep_out is not None:
            y = y[:, torch.as_tensor(keep_out)]
        if c.bias:
            x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
        gram = x.T @ x
        gram += _eps(gram, self.ridge) * torch.eye(gram.shape[0], dtype=gram.dtype)
        sol = torch.linalg.solve(gram, x.T @ y)  # (P' [+1]) × N'
        resid = float((y - x @ sol).norm() / y.norm().clamp_min(1e-300))
        w = sol[: module.weight[0].numel()].T
        with torch.no_grad():
            module.weight.copy_(w.reshape(module.weight.shape).to(module.weight))
            if c.bias:
                module.bias.copy_(sol[-1].to(module.bias))
        return f"least-squares refit on {x.shape[0]} samples (relative residual {resid:.2e})"


class ThiNet(_Reconstruction):
    """Greedy channel selection by reconstruction of the consumers' outputs (module docstring).

    ``batches``: calibration inputs (tensors or argument tuples); ``objective``: "least_squares"
    (the error after the refit, default) or "thinet" (Luo et al.'s, weights fixed); ``samples``:
    locations sampled per consumer and batch; ``refit``: least-squares refit after pruning."""

    def __init__(self, batches: Iterable[Any], *, objective: str = "least_squares", **options: Any) -> None:
        super().__init__(batches, **options)
        check_choice(objective, "objective", OBJECTIVES)
        self.objective = objective

    def rank(self, classes: list[int], consumers: list[_Consumer], steps: int | None) -> list[int]:
        if self.objective == "thinet":  # cheap (C×C): always the whole order
            order, _ = greedy_thinet(self._contributions(classes, consumers))
            return [classes[k] for k in order]
        problems = [(c.gram, c.xty, c.cols) for c in consumers]
        order, _ = greedy_least_squares(problems, classes, self.ridge, steps)
        return order


class Lasso(_Reconstruction):
    """LASSO channel selection (He et al. 2017) then the least-squares refit (module docstring).
    ``n_lambdas``: points of the λ path."""

    def __init__(self, batches: Iterable[Any], *, n_lambdas: int = 30, **options: Any) -> None:
        super().__init__(batches, **options)
        self.n_lambdas = check_positive_int(n_lambdas, "n_lambdas")
        if self.n_lambdas < 2:
            raise ValueError(f"n_lambdas: expected at least 2 points on the λ path, got {n_lambdas}")

    def rank(self, classes: list[int], consumers: list[_Consumer], steps: int | None) -> list[int]:
        scores, _ = lasso_path(self._contributions(classes, consumers), self.n_lambdas)
        return [classes[k] for k in np.argsort(scores.numpy(), kind="stable").tolist()]

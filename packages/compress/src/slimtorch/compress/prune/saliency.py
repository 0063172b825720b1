"""Gradient and second-order saliencies for unstructured pruning: SNIP, OBD and layer-wise OBS.

All three mask the plain ``nn.Linear`` / ``nn.Conv2d`` layers of a model in place through core's
conversion walk (a frozen config, ``filter_fn(module, fqn)``, a ``ConversionReport``), with the
masks of :mod:`.unstructured` (so ``finalize_``, the exports and retraining work the same way).
``data`` is one ``(x, y)`` batch or an iterable of them (OBS needs only inputs: ``x`` or ``(x, ...)``).

**SNIP** (Lee, Ajanthan, Torr, ICLR 2019, *Single-shot Network Pruning based on Connection
Sensitivity*): at initialisation, on one batch, the connection sensitivity ``|g ⊙ w|`` with
``g = ∂L/∂w`` (the paper's derivative with respect to a multiplicative mask c at c = 1); keep the
global top-k. (SNIP normalises by the sum of the scores, which does not change the top-k.)

**OBD** (LeCun, Denker, Solla, NeurIPS 1990, *Optimal Brain Damage*): the loss change of removing
w_i is, to second order at a minimum with a diagonal Hessian, ``½·h_ii·w_i²``. h_ii is the diagonal
of the Gauss-Newton matrix (OBD's Levenberg-Marquardt approximation; for softmax cross-entropy it
is the Fisher information) averaged over the calibration samples: with J = ∂f(x)/∂w and the
output-space Hessian of the loss written ``Σ_k α_k v_k v_kᵀ``,

    h_ii = 1/N Σ_n Σ_k α_k (J_nᵀ v_k)_i²          # J_nᵀ v = ∂⟨f(x_n), v⟩/∂w: one vector-Jacobian product
    cross-entropy: v_k = p − e_k, α_k = p_k (k over classes; p = softmax(f(x_n)), held constant)
    mse (½‖f − y‖²): v_k = e_k, α_k = 1

``fisher="empirical"`` uses the gradient of the sample's own loss instead (one v = ∂ℓ/∂f, α = 1).
Per-sample products by ``torch.func.vmap``, ``chunk`` samples at a time.

**Layer-wise OBS** (Dong, Chen, Pan, NeurIPS 2017, *Learning to Prune Deep Neural Networks via
Layer-wise Optimal Brain Surgeon*; Hassibi & Stork 1993): each layer's reconstruction error
‖X(W' − W)ᵀ‖²/N is quadratic with Hessian ``H = 2/N·X Xᵀ`` (X: the layer's K×N inputs over the
calibration data: a Linear's input rows, a convolution's im2col columns, K = C·kh·kw), damped as
``H + λI``, λ = ``damp``·mean(diag H). Per output row w (K weights, one H⁻¹ per row), remove the
weight with the smallest

    L_q = w_q² / (2 [H⁻¹]_qq),   then   δw = −w_q / [H⁻¹]_qq · H⁻¹[:, q]   (w_q becomes exactly 0)
    H⁻¹ ← H⁻¹ − H⁻¹[:, q] H⁻¹[q, :] / [H⁻¹]_qq     (the inverse Hessian of the remaining weights)

until ``round(sparsity·K)`` weights of the row are gone. ``steps`` < that count prunes in blocks:
each step removes the set Q of lowest L_q at once with the joint compensation
``δw = −H⁻¹[:, Q] ([H⁻¹]_QQ)⁻¹ w_Q`` and the matching rank-|Q| downdate (one weight per step is
``steps=None``). With exact downdates the result is the least-squares optimum on the final mask:
``w_S = w_S + H_SS⁻¹ H_SQ w_Q`` (S kept, Q removed). This ``solver="exact"`` costs O(R·K²·count)
per layer (R rows). ``solver="blocked"`` is the column-ordered form of the same OBS step (SparseGPT,
Frantar & Alistarh 2023), O(K³ + R·K²): with U the upper Cholesky factor of H⁻¹, columns are
visited left to right in blocks of ``block``; per block each row removes ``sparsity`` of the
block's weights with the lowest ``w_q² / U_qq²`` (OBS's saliency for the columns not yet visited),
and removing w_q applies ``δw = −w_q / U_qq · U[q, q:]`` to the later columns only (the OBS
compensation restricted to them, which shares one H⁻¹ sequence between all rows).
``sequential=True`` collects each layer's inputs from the model whose earlier layers are already
pruned (in forward order). Float64 math. Every row loses the same count (per-row sparsity).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.compress.prune.unstructured import (
    SCOPES,
    UnstructuredConfig,
    _eligible,
    _mask_of,
    prune_unstructured_,
    set_masks_,
)
from slimtorch.core.checks import check_choice
from slimtorch.core.conversions import ConversionConfig, ConversionReport, FilterFn, Skip, convert_model
from slimtorch.core.model_stats import memory_bytes
from slimtorch.core.modules import gemm_conv_skip_reason

__all__ = [
    "OBDConfig",
    "OBSConfig",
    "SNIPConfig",
    "obd_prune_",
    "obd_scores",
    "obs_prune_",
    "obs_prune_blocked",
    "obs_prune_rows",
    "obs_saliency",
    "snip_prune_",
    "snip_scores",
]

LOSSES = ("cross_entropy", "mse")
FISHERS = ("gauss_newton", "empirical")
SOLVERS = ("exact", "blocked")


def _check_sparsity(sparsity: object) -> None:
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float):
        raise TypeError(f"sparsity: expected a float in [0, 1), got {type(sparsity).__name__}")
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity: expected a fraction of weights to remove in [0, 1), got {sparsity}")


def _batches(data: Any, name: str = "data") -> list[tuple]:
    """One (x, y) / x batch or an iterable of them -> a list of tuples."""
    if isinstance(data, torch.Tensor):
        return [(data,)]
    if isinstance(data, tuple | list) and data and isinstance(data[0], torch.Tensor):
        return [tuple(data)]
    if isinstance(data, Iterable):
        out = [(b,) if isinstance(b, torch.Tensor) else tuple(b) for b in data]
        if out and all(isinstance(b[0], torch.Tensor) for b in out):
            return out
    raise TypeError(f"{name}: expected a tensor, an (x, y) batch or an iterable of them, got {type(data).__name__}")


def _layers(model: nn.Module, filter_fn: FilterFn | None) -> dict[str, nn.Module]:
    """{fqn: module} of the plain (or already masked) Linear / Conv2d layers filter_fn selects."""
    return {
        name: m for name, m in model.named_modules() if _eligible(m) is m and (filter_fn is None or filter_fn(m, name))
    }


def _param_name(fqn: str, module: nn.Module) -> str:
    inner = "parametrizations.weight.original" if _mask_of(module) is not None else "weight"
    return f"{fqn}.{inner}" if fqn else inner


def _masked_with_scores(model, config, filter_fn, scores, conversion: str) -> ConversionReport:
    prune = UnstructuredConfig(sparsity=config.sparsity, scope=config.scope)
    report = prune_unstructured_(model, prune, filter_fn, scores=scores)
    report.conversion = f"{conversion}({config})"
    return report


# ----------------------------------------------------------------------------- SNIP


@dataclass(frozen=True)
class SNIPConfig:
    """SNIP: remove ``sparsity`` of the weights with the lowest ``|g ⊙ w|`` (``scope`` "global", as in the paper)."""

    sparsity: float = 0.9
    scope: str = "global"

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity)
        check_choice(self.scope, "scope", SCOPES)


def snip_scores(
    model: nn.Module, data: Any, filter_fn: FilterFn | None = None, *, loss: str = "cross_entropy"
) -> dict[str, torch.Tensor]:
    """{fqn: |∂L/∂w ⊙ w|} for every selected layer, L the mean loss over ``data``'s batches."""
    check_choice(loss, "loss", LOSSES)
    layers = _layers(model, filter_fn)
    params = dict(model.named_parameters())
    weights = [params[_param_name(n, m)] for n, m in layers.items()]
    batches = _batches(data)
    grads = [torch.zeros_like(w) for w in weights]
    for x, y, *_ in batches:
        out = model(x)
        value = F.cross_entropy(out, y) if loss == "cross_entropy" else 0.5 * (out - y).pow(2).sum(-1).mean()
        for acc, g in zip(grads, torch.autograd.grad(value / len(batches), weights), strict=True):
            acc.add_(g)
    return {
        name: (g * module.weight.detach()).abs().float()
        for (name, module), g in zip(layers.items(), grads, strict=True)
    }


def snip_prune_(
    model: nn.Module, config: SNIPConfig, data: Any, filter_fn: FilterFn | None = None, *, loss: str = "cross_entropy"
) -> ConversionReport:
    """Mask the weights of lowest connection sensitivity (module docstring)."""
    if not isinstance(config, SNIPConfig):
        raise TypeError(f"config: expected a SNIPConfig, got {type(config).__name__}")
    scores = snip_scores(model, data, filter_fn, loss=loss)
    return _masked_with_scores(model, config, filter_fn, scores, "snip_prune_")


# ----------------------------------------------------------------------------- OBD


@dataclass(frozen=True)
class OBDConfig:
    """OBD: remove ``sparsity`` of the weights with the lowest ``½·h_ii·w²``; ``fisher``:
    "gauss_newton" (the expected Fisher for cross-entropy) or "empirical"; ``chunk`` samples per vmap."""

    sparsity: float = 0.9
    scope: str = "global"
    fisher: str = "gauss_newton"
    loss: str = "cross_entropy"
    chunk: int = 16

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity)
        check_choice(self.scope, "scope", SCOPES)
        check_choice(self.fisher, "fisher", FISHERS)
        check_choice(self.loss, "loss", LOSSES)
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
            raise ValueError(f"chunk: expected an int >= 1, got {self.chunk!r}")


def _output_vectors(out: torch.Tensor, y: torch.Tensor | None, loss: str, fisher: str) -> tuple:
    """(v (n, k, C), α (n, k)): the output-space Hessian Σ_k α_k v_k v_kᵀ per sample (module docstring)."""
    n, c = out.shape
    if fisher == "empirical":
        if y is None:
            raise ValueError("data: the empirical Fisher needs labels, got batches without y")
        v = out.softmax(-1) - F.one_hot(y, c).to(out.dtype) if loss == "cross_entropy" else out - y
        return v.unsqueeze(1), torch.ones(n, 1, dtype=out.dtype)
    eye = torch.eye(c, dtype=out.dtype)
    if loss == "mse":
        return eye.expand(n, c, c), torch.ones(n, c, dtype=out.dtype)
    p = out.softmax(-1)
    return p.unsqueeze(1) - eye, p


def obd_scores(model: nn.Module, data: Any, config: OBDConfig | None = None, filter_fn: FilterFn | None = None):
    """(saliencies {fqn: ½·h_ii·w²}, hessian diagonals {fqn: h_ii}) for every selected layer."""
    from torch.func import functional_call, grad, vmap

    config = config or OBDConfig()
    layers = _layers(model, filter_fn)
    names = {fqn: _param_name(fqn, m) for fqn, m in layers.items()}
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    wanted = {names[f]: params[names[f]] for f in layers}
    rest = {k: v for k, v in params.items() if k not in wanted}

    def dot(w: dict, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**rest, **buffers, **w}, (x.unsqueeze(0),))
        return (out.squeeze(0) * v).sum()

    per_sample = vmap(vmap(grad(dot), in_dims=(None, None, 0)), in_dims=(None, 0, 0))
    diag = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in wanted.items()}
    total = 0
    was_training = model.training
    model.eval()  # one sample at a time: BatchNorm must use its running statistics
    try:
        for x, *rest_batch in _batches(data):
            y = rest_batch[0] if rest_batch else None
            for start in range(0, len(x), config.chunk):
                xs = x[start : start + config.chunk]
                with torch.no_grad():
                    out = model(xs)
                v, alpha = _output_vectors(
                    out, None if y is None else y[start : start + config.chunk], config.loss, config.fisher
                )
                grads = per_sample(wanted, xs, v)  # {name: (n, k, *w.shape)}
                for k, g in grads.items():
                    a = alpha.reshape(*alpha.shape, *([1] * (g.dim() - 2))).to(torch.float64)
                    diag[k] += (a * g.double().pow(2)).sum(dim=(0, 1))
                total += len(xs)
    finally:
        model.train(was_training)
    hessian = {fqn: (diag[names[fqn]] / max(total, 1)).float() for fqn in layers}
    scores = {fqn: 0.5 * hessian[fqn] * layers[fqn].weight.detach().float().pow(2) for fqn in layers}
    return scores, hessian


def obd_prune_(model: nn.Module, config: OBDConfig, data: Any, filter_fn: FilterFn | None = None) -> ConversionReport:
    """Mask the weights of lowest OBD saliency (module docstring)."""
    if not isinstance(config, OBDConfig):
        raise TypeError(f"config: expected an OBDConfig, got {type(config).__name__}")
    scores, _ = obd_scores(model, data, config, filter_fn)
    return _masked_with_scores(model, config, filter_fn, scores, "obd_prune_")


# ----------------------------------------------------------------------------- layer-wise OBS


@dataclass(frozen=True)
class OBSConfig:
    """Layer-wise OBS with compensation: ``sparsity`` of every row of every layer; ``damp`` λ/mean(diag H);
    ``solver`` "exact" (``steps`` mask selections per row, None: one weight at a time; ``rows`` rows
    per batched solve) or "blocked" (SparseGPT's column blocks of ``block``); module docstring."""

    sparsity: float = 0.5
    damp: float = 0.01
    solver: str = "exact"
    steps: int | None = None
    block: int = 128
    sequential: bool = True
    rows: int = 16

    def __post_init__(self) -> None:
        _check_sparsity(self.sparsity)
        check_choice(self.solver, "solver", SOLVERS)
        if isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"block: expected an int >= 1, got {self.block!r}")
        if not self.damp > 0:
            raise ValueError(f"damp: expected a value > 0 (H + λI must be invertible), got {self.damp}")
        for name in ("steps", "rows"):
            value = getattr(self, name)
            if value is None and name == "steps":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def obs_saliency(weight: torch.Tensor, hinv_diag: torch.Tensor) -> torch.Tensor:
    """L_q = w_q² / (2 [H⁻¹]_qq), elementwise."""
    return weight.pow(2) / (2 * hinv_diag)


def obs_prune_rows(
    weight: torch.Tensor, hessian: torch.Tensor, count: int, *, steps: int | None = None, removed=None, rows: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove ``count`` weights of every row of ``weight`` (R, K) by layer-wise OBS with the (damped)
    Hessian ``hessian`` (K, K) shared by the rows; ``removed`` (R, K) bool: weights already gone
    (chosen first, they are zero). Returns (compensated weight, kept mask), float64 math."""
    r_all, k = weight.shape
    if not 0 <= count <= k:
        raise ValueError(f"count: expected 0 <= count <= K = {k}, got {count}")
    steps = count if steps is None else max(1, min(steps, count))
    hinv0 = torch.linalg.inv(hessian.double())
    w_out = weight.detach().double().clone()
    keep = torch.ones(r_all, k, dtype=torch.bool)
    if removed is not None and int(removed.sum(1).max()) > count:
        raise ValueError(f"removed: a row already has {int(removed.sum(1).max())} weights removed, more than {count}")
    sizes = [count // steps + (1 if i < count % steps else 0) for i in range(steps)] if count else []
    for start in range(0, r_all, rows):
        w = w_out[start : start + rows]
        alive = keep[start : start + rows]
        hinv = hinv0.expand(len(w), k, k).clone()
        forced = None if removed is None else removed[start : start + rows].clone()
        for m in sizes:
            score = obs_saliency(w, torch.diagonal(hinv, dim1=1, dim2=2).clamp_min(1e-300))
            if forced is not None:
                score = torch.where(forced, -1.0, score)
            score = torch.where(alive, score, float("inf"))
            q = torch.sort(score, dim=1, stable=True).indices[:, :m]  # (R, m)
            cols = torch.gather(hinv, 2, q.unsqueeze(1).expand(-1, k, -1))  # H⁻¹[:, Q]  (R, K, m)
            block = torch.gather(cols, 1, q.unsqueeze(2).expand(-1, -1, m))  # [H⁻¹]_QQ  (R, m, m)
            wq = torch.gather(w, 1, q).unsqueeze(2)  # (R, m, 1)
            solved = torch.linalg.solve(block, torch.cat([wq, cols.transpose(1, 2)], dim=2))
            w -= (cols @ solved[:, :, :1]).squeeze(2)  # δw = −H⁻¹[:, Q] [H⁻¹]_QQ⁻¹ w_Q
            hinv -= cols @ solved[:, :, 1:]  # H⁻¹ ← H⁻¹ − H⁻¹[:, Q] [H⁻¹]_QQ⁻¹ H⁻¹[Q, :]
            alive.scatter_(1, q, False)
            w.masked_fill_(~alive, 0.0)  # exactly zero (the update leaves rounding there)
            if forced is not None:
                forced.scatter_(1, q, False)
    return w_out.to(weight.dtype), keep


def obs_prune_blocked(
    weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, *, block: int = 128, removed=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The column-blocked OBS of ``solver="blocked"`` (module docstring) on ``weight`` (R, K) with the
    damped ``hessian`` (K, K); ``removed`` (R, K): weights already gone (removed first). Returns
    (compensated weight, kept mask); every row loses ``round(sparsity · b)`` of each block of b columns."""
    r_all, k = weight.shape
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian.double())), upper=True)
    w = weight.detach().double().clone()
    keep = torch.ones(r_all, k, dtype=torch.bool)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        u_block = u[i1:i2, i1:i2]
        score = w[:, i1:i2].pow(2) / u_block.diagonal().pow(2)  # OBS saliency ×2 in the Cholesky form
        if removed is not None:
            score = torch.where(removed[:, i1:i2], -1.0, score)
        count = round(float(sparsity) * (i2 - i1))
        gone = torch.zeros(r_all, i2 - i1, dtype=torch.bool)
        if count:
            gone.scatter_(1, torch.sort(score, dim=1, stable=True).indices[:, :count], True)
        if removed is not None:
            gone |= removed[:, i1:i2]
        errors = torch.zeros(r_all, i2 - i1, dtype=torch.float64)
        for j in range(i2 - i1):
            col = i1 + j
            err = torch.where(gone[:, j], w[:, col], 0.0) / u[col, col]  # w_q / U_qq for the removed rows
            w[:, col:i2] -= err.unsqueeze(1) * u[col, col:i2].unsqueeze(0)  # δw on the block's later columns
            errors[:, j] = err
        w[:, i2:] -= errors @ u[i1:i2, i2:]  # ... and on every column after the block, at once
        keep[:, i1:i2] = ~gone
    w.masked_fill_(~keep, 0.0)
    return w.to(weight.dtype), keep


class _Stop(Exception):
    """Raised by a collection hook once the layer's input is seen: the rest of the forward is skipped."""


def _layer_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's GEMM input rows (·, K): a Linear's input, a convolution's im2col columns."""
    if isinstance(module, nn.Conv2d):
        cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def _hessian(model: nn.Module, module: nn.Module, batches: list[tuple], *, stop: bool) -> torch.Tensor:
    """H = 2/N Σ x xᵀ over the layer's input rows (float64)."""
    state = {"h": None, "n": 0}

    def hook(mod, args):
        rows = _layer_rows(mod, args[0].detach()).double()
        state["h"] = rows.T @ rows if state["h"] is None else state["h"] + rows.T @ rows
        state["n"] += rows.shape[0]
        if stop:
            raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for x, *_ in batches:
                with contextlib.suppress(_Stop):
                    model(x)
    finally:
        handle.remove()
    if state["h"] is None:
        raise ValueError("data: the calibration batches never reached this layer")
    return 2.0 * state["h"] / state["n"]


def _forward_order(model: nn.Module, layers: Mapping[str, nn.Module], x: torch.Tensor) -> list[str]:
    order: list[str] = []
    handles = [
        m.register_forward_pre_hook(lambda mod, args, name=name: order.append(name) if name not in order else None)
        for name, m in layers.items()
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return order + [n for n in layers if n not in order]


def obs_prune_(model: nn.Module, config: OBSConfig, data: Any, filter_fn: FilterFn | None = None) -> ConversionReport:
    """Prune every selected layer by layer-wise OBS with compensation (module docstring)."""
    if not isinstance(config, OBSConfig):
        raise TypeError(f"config: expected an OBSConfig, got {type(config).__name__}")
    batches = _batches(data)
    layers = _layers(model, filter_fn)
    skipped = {}
    for name, m in list(layers.items()):
        if isinstance(m, nn.Conv2d):
            reason = gemm_conv_skip_reason(m)
            if reason is not None:
                skipped[name] = reason
                del layers[name]
    bytes_before = memory_bytes(model)
    was_training = model.training
    model.eval()
    try:
        order = _forward_order(model, layers, batches[0][0])
        plans: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in order:
            module = layers[name]
            h = _hessian(model, module, batches, stop=config.sequential)
            h = h + config.damp * h.diagonal().mean().clamp_min(1e-12) * torch.eye(len(h), dtype=h.dtype)
            w = module.weight.detach()
            rows = w.reshape(w.shape[0], -1)
            existing = _mask_of(module)
            removed = None if existing is None else ~existing.mask.reshape(rows.shape).cpu()
            if config.solver == "blocked":
                new, keep = obs_prune_blocked(rows.cpu(), h, config.sparsity, block=config.block, removed=removed)
            else:
                count = round(config.sparsity * rows.shape[1])
                new, keep = obs_prune_rows(rows.cpu(), h, count, steps=config.steps, removed=removed, rows=config.rows)
            plans[name] = (new.reshape(w.shape).to(w.device), keep.reshape(w.shape).to(w.device))
            if config.sequential:
                _apply(model, name, *plans[name])
        if not config.sequential:
            for name, (new, keep) in plans.items():
                _apply(model, name, new, keep)
    finally:
        model.train(was_training)

    report = convert_model(model, _Record(frozenset(plans)), filter_fn, conversion="obs_prune_")
    report.conversion = f"obs_prune_({config})"
    report.bytes_before = bytes_before
    for name in list(report.converted):
        kept = plans[name][1].float().mean().item()
        report.converted[name] = f"masked, {1 - kept:.1%} of weights removed, OBS-compensated"
    report.skipped.update(skipped)
    return report


@torch.no_grad()
def _apply(model: nn.Module, name: str, weight: torch.Tensor, keep: torch.Tensor) -> None:
    """The compensated weight as the masked layer's ``original`` and ``keep`` as its mask."""
    module = model.get_submodule(name)
    if _mask_of(module) is None:
        module.weight.copy_(weight)
        set_masks_(model, {name: keep})
    else:
        module.parametrizations.weight.original.copy_(weight)
        _mask_of(module).mask.copy_(keep)


@dataclass(frozen=True)
class _Record(ConversionConfig):
    """The walk over a model already pruned in place: names what was masked, and what was left alone."""

    names: frozenset = frozenset()

    def convert_module(self, module: nn.Module, fqn: str, plan: Any) -> nn.Module | Skip | None:
        if fqn in self.names:
            return module
        source = _eligible(module)
        if isinstance(source, Skip):
            return source
        return None if source is None else Skip("not pruned")

"""ThiNet / LASSO channel selection by reconstruction (+ least-squares refit) against hand
computations and brute force on toys."""

import copy
import itertools

import pytest
import torch
from torch import nn

from slimtorch.compress.prune import Lasso, PruneConfig, Pruner, ThiNet
from slimtorch.compress.prune.reconstruction import greedy_least_squares, lasso_path, lasso_solve
from slimtorch.core.metrics import rel_error
from slimtorch.core.testing import rel_bound


def redundant_pair(seed=0):
    """conv(3→4) then conv(4→5), no activation: channel 3 = channel 1 + 2·channel 2 exactly;
    channel 0 has the smallest filter (so L1 removes it) but is independent."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 5, 3, padding=1)).eval()
    with torch.no_grad():
        model[0].weight[3] = model[0].weight[1] + 2 * model[0].weight[2]
        model[0].bias[3] = model[0].bias[1] + 2 * model[0].bias[2]
        model[0].weight[0] *= 0.1
    return model


def prune(model, importance, x, ratio=0.25):
    pruner = Pruner(model, x, PruneConfig(importance=importance, ratio=ratio, round_to=1))
    return pruner.step(), pruner.report


def test_redundant_channel_costs_nothing_after_refit():
    model = redundant_pair()
    batches = [torch.randn(3, 3, 7, 9) for _ in range(2)]
    x = torch.randn(2, 3, 7, 9)  # fresh inputs, not the calibration batches
    with torch.no_grad():
        ref = model(x)
    bound = rel_bound(torch.float32, 3 * 9 + 4 * 9)
    pruned, report = prune(copy.deepcopy(model), ThiNet(batches), x)
    assert pruned[0].out_channels == 3
    with torch.no_grad():
        err = rel_error(pruned(x), ref)
    assert err <= bound, f"reconstruction pruning: rel error {err:.3g} > {bound:.3g}"
    assert "least-squares refit" in report.converted["1"]
    # it removed one of the dependent three: channel 0's (small, independent) filter is kept
    assert any(torch.equal(w, model[0].weight[0].detach()) for w in pruned[0].weight.detach())
    # L1 removes the small independent channel: a real loss
    l1, _ = prune(copy.deepcopy(model), "l1", x)
    with torch.no_grad():
        assert rel_error(l1(x), ref) > 100 * bound


def _residual(x, y, cols):
    """min_W ||Y − X[:, cols] W||² by lstsq (brute force, independent of the downdate)."""
    if not len(cols):
        return float((y**2).sum())
    sol = torch.linalg.lstsq(x[:, cols], y).solution
    return float(((y - x[:, cols] @ sol) ** 2).sum())


def test_greedy_least_squares_equals_brute_force():
    gen = torch.Generator().manual_seed(3)
    s, per, n = 41, 3, 5  # 4 channels of 3 columns (a 1x3 kernel), 5 outputs
    x = torch.randn(s, 4 * per, generator=gen, dtype=torch.float64)
    x[:, 9:12] = x[:, 0:3] - 0.5 * x[:, 3:6] + 1e-3 * torch.randn(s, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(4 * per, n, generator=gen, dtype=torch.float64)
    w[6:9] *= 0.05  # channel 2 contributes little
    y = x @ w
    cols = {c: list(range(c * per, (c + 1) * per)) for c in range(4)}
    problems = [(x.T @ x, x.T @ y, {c: torch.tensor(v).numpy() for c, v in cols.items()})]
    order, increments = greedy_least_squares(problems, [0, 1, 2, 3], ridge=1e-12)
    full = _residual(x, y, list(range(4 * per)))
    removed: list[int] = []
    before = full
    for step in range(3):  # every greedy step is the brute-force best next removal
        options = {}
        for c in set(range(4)) - set(removed):
            kept = [j for k in range(4) if k not in removed and k != c for j in cols[k]]
            options[c] = _residual(x, y, kept)
        best = min(options, key=options.get)
        assert order[step] == best
        assert increments[step] == pytest.approx(options[best] - before, rel=1e-6, abs=1e-9)
        removed.append(best)
        before = options[best]
    for k in (1, 2):  # and the greedy prefix is the best subset of its size
        brute = min(
            itertools.combinations(range(4), k),
            key=lambda t: _residual(x, y, [j for c in range(4) if c not in t for j in cols[c]]),
        )
        assert set(order[:k]) == set(brute)


def test_thinet_objective_equals_brute_force_zeroing():
    """objective="thinet": greedy on ||Σ_T z_r||², checked by zeroing input channels of the consumer
    (ThiNet's greedy is not the best subset in general: contributions can cancel)."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1)).eval()
    batches = [torch.randn(2, 3, 5, 7)]
    criterion = ThiNet(batches, objective="thinet", samples=10**6)  # every location
    _, report = prune(copy.deepcopy(model), criterion, batches[0], ratio=0.5)
    order = criterion.orders[next(iter(criterion.orders))]
    group_ids = sorted(order)  # class roots in channel order (fresh ids of conv 0's outputs)
    channel = {r: k for k, r in enumerate(group_ids)}
    with torch.no_grad():
        h = model[1](model[0](batches[0]))
        y = model[2](h)

        def cost(removed):
            c2 = copy.deepcopy(model[2])
            c2.weight[:, list(removed)] = 0
            return float(((model[2](h) - c2(h)) ** 2).sum()) if removed else 0.0

        # the first removal is the global best; every later one the best next step (greedy)
        assert channel[order[0]] == min(range(4), key=lambda c: cost((c,)))
        prefix = [channel[r] for r in order]
        for k in (1, 2):
            best = min(set(range(4)) - set(prefix[:k]), key=lambda c: cost((*prefix[:k], c)))
            assert prefix[k] == best
    assert y.shape[1] == 5 and "least-squares refit" in report.converted["2"]


def test_lasso_orthogonal_design_by_hand():
    """Orthogonal contributions: M diagonal, β_r(λ) = max(0, 1 − λ/M_rr), so channels enter the
    path (rank) by M_rr = ||h_r||²·||w2[:, r]||²."""
    gen = torch.Generator().manual_seed(7)
    q, _ = torch.linalg.qr(torch.randn(8, 6, generator=gen))
    o, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen))
    d = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25])
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 3)).eval()
    with torch.no_grad():
        model[0].weight.copy_(d[:, None] * o[:5])
        model[0].bias.zero_()
    h = model[0](q).detach().double()
    diag = (h**2).sum(0) * (model[1].weight.detach().double() ** 2).sum(0)
    m = torch.diag(diag)
    for lam in (0.1, 1.0, float(diag.max()) * 0.9):
        want = torch.clamp(1 - lam / diag, min=0)
        torch.testing.assert_close(lasso_solve(m, diag, lam), want, rtol=1e-9, atol=1e-12)
    scores, _ = lasso_path(m)
    assert torch.argsort(scores).tolist() == torch.argsort(diag).tolist()
    criterion = Lasso([q])
    pruned, _ = prune(copy.deepcopy(model), criterion, q, ratio=0.4)
    order = criterion.orders[next(iter(criterion.orders))]
    assert [sorted(order).index(r) for r in order] == torch.argsort(diag).tolist()
    assert pruned[1].in_features == 3


def test_lasso_kkt_on_a_correlated_design():
    gen = torch.Generator().manual_seed(11)
    a = torch.randn(20, 6, generator=gen, dtype=torch.float64)
    m = a.T @ a
    b = m.sum(1)
    sparsity = []
    for frac in (0.2, 0.6, 0.9):
        lam = frac * float(b.abs().max())
        beta = lasso_solve(m, b, lam, iters=5000, tol=1e-14)
        grad = m @ beta - b  # KKT: grad_r = −λ·sign(β_r) where β_r ≠ 0, |grad_r| ≤ λ where β_r = 0
        nz = beta != 0
        torch.testing.assert_close(grad[nz], -lam * torch.sign(beta[nz]), rtol=1e-7, atol=1e-7)
        assert bool((grad[~nz].abs() <= lam * (1 + 1e-9)).all())
        sparsity.append(int(nz.sum()))
    assert sparsity[0] > sparsity[-1] >= 1, sparsity


def test_refit_helps_a_deeper_chain():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 9, 3, padding=1), nn.ReLU(), nn.Conv2d(9, 11, 3, padding=1), nn.ReLU(), nn.Conv2d(11, 5, 1)
    ).eval()
    batches = [torch.randn(4, 3, 7, 9) for _ in range(3)]
    x = batches[0]
    with torch.no_grad():
        ref = model(x)
    errors = {}
    for refit in (False, True):
        pruned, report = prune(copy.deepcopy(model), ThiNet(batches, refit=refit), x, ratio=0.4)
        assert pruned[0].out_channels < 9 and pruned[2].out_channels < 11
        with torch.no_grad():
            errors[refit] = rel_error(pruned(x), ref)
    assert errors[True] < errors[False]
    assert "refit" in report.converted["4"] and "refit" in report.converted["2"]


def test_unsupported_consumers_fall_back_to_norms():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 3, padding=1, groups=2)).eval()
    x = torch.randn(2, 3, 5, 5)
    criterion = ThiNet([x])
    pruned, _ = prune(model, criterion, x, ratio=0.5)
    assert "grouped" in criterion.notes["1"] and pruned[0].out_channels == 4


def test_bad_arguments():
    with pytest.raises(ValueError, match="batches"):
        ThiNet([])
    with pytest.raises(ValueError, match="objective"):
        ThiNet([torch.zeros(1)], objective="l1")
    with pytest.raises(ValueError, match="samples"):
        ThiNet([torch.zeros(1)], samples=0)
    with pytest.raises(ValueError, match="n_lambdas"):
        Lasso([torch.zeros(1)], n_lambdas=1)
    model, x = redundant_pair(), torch.randn(2, 3, 5, 5)
    x_nan = x.clone()
    x_nan[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        prune(model, ThiNet([x_nan]), x)


def test_global_ranking_uses_the_full_greedy_orders():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 7, 1), nn.ReLU(), nn.Conv2d(7, 5, 1))
    x = torch.randn(3, 3, 5, 7)
    criterion = ThiNet([x])
    config = PruneConfig(importance=criterion, ratio=0.4, round_to=1, global_=True)
    pruned = Pruner(model.eval(), x, config).step()
    assert sorted(len(o) for o in criterion.orders.values()) == [6, 7]  # every class ranked
    assert pruned[0].out_channels + pruned[2].out_channels < 13

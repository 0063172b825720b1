"""SNIP, OBD and layer-wise OBS against hand-computed saliencies, Hessians and compensations; OBS's
reconstruction error against magnitude pruning's."""

import copy

import pytest
import torch
from torch import nn

from slimtorch.compress.prune import (
    OBDConfig,
    OBSConfig,
    SNIPConfig,
    UnstructuredConfig,
    masks_of,
    obd_prune_,
    obd_scores,
    obs_prune_,
    obs_prune_rows,
    obs_saliency,
    prune_unstructured_,
    set_masks_,
    snip_prune_,
    snip_scores,
)


def _data(n=23, k=7, c=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=gen, dtype=torch.float64), torch.randint(0, c, (n,), generator=gen)


def _linear(k=7, c=5, seed=0, bias=True):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(k, c, bias=bias).double())


def test_snip_scores_hand_computed_and_global_top_k():
    x, y = _data()
    model = _linear()
    w = model[0].weight.detach()
    p = (x @ w.T + model[0].bias.detach()).softmax(-1)
    grad = (p - nn.functional.one_hot(y, 5).double()).T @ x / len(x)  # ∂ mean CE / ∂W
    scores = snip_scores(model, (x, y))
    torch.testing.assert_close(scores["0"], (grad * w).abs().float(), rtol=1e-6, atol=0)
    # two batches: the gradient of the mean of the two batch losses
    halves = [(x[:11], y[:11]), (x[11:], y[11:])]
    g2 = (
        sum(
            (x_ @ w.T + model[0].bias.detach()).softmax(-1).sub(nn.functional.one_hot(y_, 5)).T @ x_ / len(x_)
            for x_, y_ in halves
        )
        / 2
    )
    torch.testing.assert_close(snip_scores(model, halves)["0"], (g2 * w).abs().float(), rtol=1e-6, atol=0)
    two = nn.Sequential(nn.Linear(7, 9), nn.ReLU(), nn.Linear(9, 5)).double()
    all_scores = snip_scores(two, (x, y))
    report = snip_prune_(two, SNIPConfig(sparsity=0.6), (x, y))
    flat = torch.cat([all_scores[n].flatten() for n in ("0", "2")])
    kept = torch.cat([masks_of(two)[n].flatten() for n in ("0", "2")])
    assert int((~kept).sum()) == round(0.6 * flat.numel())
    assert flat[kept].min() >= flat[~kept].max()
    assert report.conversion.startswith("snip_prune_")


def test_obd_gauss_newton_diagonal_hand_computed():
    x, y = _data()
    model = _linear()
    w = model[0].weight.detach()
    p = (x @ w.T + model[0].bias.detach()).softmax(-1)
    # logits z = W x + b: ∂z_c/∂W_ij = δ_ci x_j, so diag(Jᵀ (diag p − p pᵀ) J)_ij = (p_i − p_i²) x_j²
    h = ((p - p * p).T @ (x * x)) / len(x)
    scores, hessian = obd_scores(model, (x, y), OBDConfig(chunk=5))
    torch.testing.assert_close(hessian["0"], h.float(), rtol=1e-5, atol=0)
    torch.testing.assert_close(scores["0"], (0.5 * h * w * w).float(), rtol=1e-5, atol=0)
    # empirical Fisher: mean of the squared per-sample gradients (p − e_y)_i x_j
    r = p - nn.functional.one_hot(y, 5).double()
    emp = ((r * r).T @ (x * x)) / len(x)
    _, hessian = obd_scores(model, [(x[:10], y[:10]), (x[10:], y[10:])], OBDConfig(fisher="empirical"))
    torch.testing.assert_close(hessian["0"], emp.float(), rtol=1e-5, atol=0)


def test_obd_mse_is_the_input_second_moment():
    x, _ = _data(k=6)
    target = torch.randn(len(x), 3, dtype=torch.float64)
    model = _linear(k=6, c=3, bias=False)
    _, hessian = obd_scores(model, (x, target), OBDConfig(loss="mse"))
    expected = (x * x).mean(0).expand(3, 6)  # ½‖Wx − t‖²: GN = x xᵀ per output row
    torch.testing.assert_close(hessian["0"], expected.float(), rtol=1e-5, atol=0)


def test_obd_prune_removes_the_lowest_saliency():
    x, y = _data(k=8)
    model = nn.Sequential(nn.Linear(8, 11), nn.ReLU(), nn.Linear(11, 5)).double()
    scores, _ = obd_scores(model, (x, y))
    obd_prune_(model, OBDConfig(sparsity=0.5, scope="layer"), (x, y))
    for name in ("0", "2"):
        keep = masks_of(model)[name]
        assert int((~keep).sum()) == round(0.5 * keep.numel())
        assert scores[name][keep].min() >= scores[name][~keep].max()


def test_obs_saliency_and_compensation_hand_computed():
    h = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)  # H⁻¹ = 1/3 [[2, −1], [−1, 2]]
    w = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(
        obs_saliency(w, torch.linalg.inv(h).diagonal()), torch.tensor([[0.75, 0.1875]], dtype=torch.float64)
    )
    new, keep = obs_prune_rows(w, h, 1)
    # q = 1: δw = −w_q/[H⁻¹]_qq · H⁻¹[:, q] = −0.5/(2/3) · [−1/3, 2/3] = [0.25, −0.5]
    assert keep.tolist() == [[True, False]]
    torch.testing.assert_close(new, torch.tensor([[1.25, 0.0]], dtype=torch.float64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps", [None, 3])
def test_obs_is_the_least_squares_optimum_on_its_mask(steps):
    gen = torch.Generator().manual_seed(5)
    k, rows, count = 13, 6, 8
    x = torch.randn(97, k, generator=gen, dtype=torch.float64) @ torch.randn(k, k, generator=gen, dtype=torch.float64)
    w = torch.randn(rows, k, generator=gen, dtype=torch.float64)
    h = 2 * x.T @ x / len(x)
    h = h + 0.01 * h.diagonal().mean() * torch.eye(k, dtype=torch.float64)
    new, keep = obs_prune_rows(w, h, count, steps=steps, rows=4)
    assert keep.sum(1).tolist() == [k - count] * rows
    assert bool((new[~keep] == 0).all())
    for r in range(rows):
        s, q = keep[r], ~keep[r]
        best = w[r, s] + torch.linalg.solve(h[s][:, s], h[s][:, q] @ w[r, q])  # w_S + H_SS⁻¹ H_SQ w_Q
        torch.testing.assert_close(new[r, s], best, rtol=1e-9, atol=1e-9)


def _recon_error(model, reference, x):
    with torch.no_grad():
        ref = reference(x)
        return ((model(x) - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize(
    ("sparsity", "solver", "k"), [(0.5, "exact", 19), (0.8, "exact", 19), (0.5, "blocked", 67), (0.8, "blocked", 67)]
)
def test_obs_reconstructs_better_than_magnitude(sparsity, solver, k):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(301, k, generator=gen) @ torch.randn(k, k, generator=gen)  # correlated inputs
    torch.manual_seed(7)
    dense = nn.Sequential(nn.Linear(k, 13))
    obs, mag = copy.deepcopy(dense), copy.deepcopy(dense)
    report = obs_prune_(obs, OBSConfig(sparsity=sparsity, solver=solver, block=16), x)
    blocks = [16] * (k // 16) + [k % 16]
    per_row = round(sparsity * k) if solver == "exact" else sum(round(sparsity * b) for b in blocks)
    assert (~masks_of(obs)["0"]).sum(1).tolist() == [per_row] * 13
    prune_unstructured_(mag, UnstructuredConfig(sparsity=per_row / k))  # the same number of weights
    assert int((~masks_of(mag)["0"]).sum()) == per_row * 13
    e_obs, e_mag = _recon_error(obs, dense, x), _recon_error(mag, dense, x)
    assert e_obs <= e_mag, (e_obs, e_mag)
    assert "OBS-compensated" in report.converted["0"]


def test_obs_on_a_convnet_sequential_and_filter_fn():
    torch.manual_seed(8)
    dense = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=3), nn.Flatten(), nn.Linear(6 * 5 * 5, 4)
    )
    x = torch.randn(13, 3, 7, 7)
    sparsity = 5 / 9  # 15 of the 27 weights of every row
    pruned, mag = copy.deepcopy(dense), copy.deepcopy(dense)
    report = obs_prune_(pruned, OBSConfig(sparsity=sparsity, steps=4), x, filter_fn=lambda m, n: n != "4")
    assert set(masks_of(pruned)) == {"0"}
    assert "groups" in report.skipped["2"] and report.skipped["4"] == "excluded by filter_fn"
    assert masks_of(pruned)["0"].reshape(6, -1).sum(1).tolist() == [12] * 6
    # magnitude with the same per-row count: the 12 largest |w| of every row of the (6, 27) GEMM weight
    rows = mag[0].weight.detach().reshape(6, 27)
    keep = torch.zeros_like(rows, dtype=torch.bool).scatter_(1, rows.abs().topk(12, dim=1).indices, True)
    set_masks_(mag, {"0": keep.reshape(mag[0].weight.shape)})
    e_obs, e_mag = _recon_error(pruned[0], dense[0], x), _recon_error(mag[0], dense[0], x)
    assert e_obs <= e_mag, (e_obs, e_mag)
    x[0, 0, 0, 0] = float("nan")
    out = pruned(x)
    assert torch.isnan(out[0]).all() and not torch.isnan(out[1:]).any()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sparsity: expected a fraction"):
        OBSConfig(sparsity=1.0)
    with pytest.raises(ValueError, match="damp: expected a value > 0"):
        OBSConfig(damp=0.0)
    with pytest.raises(ValueError, match="fisher"):
        OBDConfig(fisher="hutchinson")
    with pytest.raises(TypeError, match="sparsity: expected a float"):
        SNIPConfig(sparsity="0.5")
    with pytest.raises(TypeError, match="data: expected a tensor, an \\(x, y\\) batch"):
        snip_scores(_linear(), 3)
    with pytest.raises(TypeError, match="config: expected an OBSConfig"):
        obs_prune_(_linear(), OBDConfig(), torch.randn(2, 7))
    with pytest.raises(ValueError, match="count: expected 0 <= count <= K = 2, got 3"):
        obs_prune_rows(torch.ones(1, 2), torch.eye(2), 3)

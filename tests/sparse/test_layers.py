"""layers.py: SparseLinear24, BlockSparseLinear (alone and in core's GemmConv2d) and MaskedSparseLinear — outputs,
to_dense, state_dict (compressed, smaller, exact round trip through safetensors), .to(dtype),
torch.compile, gradients, masked fine-tuning and SR-STE."""

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from slimtorch.core import reference_only
from slimtorch.core.model_stats import count_parameters, disk_bytes, state_dict_tensors
from slimtorch.core.modules import GemmConv2d
from slimtorch.core.testing import assert_exact, assert_rel_close, randn, rel_bound
from slimtorch.sparse import formats
from slimtorch.sparse.layers import (
    BlockSparseLinear,
    MaskedSparseLinear,
    SparseLinear24,
)


def make_linear(k, n, *, bias=True, seed=0, dtype=torch.float32, device="cpu"):
    torch.manual_seed(seed)
    return nn.Linear(k, n, bias=bias).to(device=device, dtype=dtype)


def pruned_weight(linear):
    w = linear.weight.detach()
    return w * formats.prune_24(w)


def round_trip(layer: nn.Module, fresh: nn.Module) -> nn.Module:
    """Save layer's state_dict as safetensors (no pickle) and load it into ``fresh``."""
    blob = safetensors.torch.save(state_dict_tensors(layer))
    fresh.load_state_dict(safetensors.torch.load(blob))
    return fresh


# ----------------------------------------------------------------------------- SparseLinear24


def test_sparse_linear24_matches_pruned_dense(device):
    linear = make_linear(36, 19, device=device)
    layer = SparseLinear24.from_dense(linear)
    x = randn((2, 3, 36), device=device, seed=1)  # leading dims are kept
    expected = F.linear(x.double(), pruned_weight(linear).double(), linear.bias.double())
    assert_rel_close(layer(x), expected, rel_bound(torch.float32, 36, device=device))
    assert_exact(layer.to_dense().weight, pruned_weight(linear))
    assert_exact(layer.to_dense().bias, linear.bias.detach())


def test_sparse_linear24_with_permutation(device):
    torch.manual_seed(2)
    linear = nn.Linear(32, 13).to(device)
    with torch.no_grad():
        linear.weight[:, :8] *= 10  # clustered heavy channels: the permutation must help
    layer = SparseLinear24.from_dense(linear, permute=True)
    assert layer.perm is not None and layer.retained_gain > 0
    dense = layer.to_dense()
    kept = dense.weight.detach().abs().sum()
    assert kept > pruned_weight(linear).abs().sum()  # more magnitude than pruning in place
    x = randn((5, 32), device=device, seed=3)
    expected = F.linear(x.double(), dense.weight.double(), dense.bias.double())
    assert_rel_close(layer(x), expected, rel_bound(torch.float32, 32, device=device))


def test_sparse_linear24_with_given_mask_and_errors():
    linear = make_linear(8, 3, seed=4)
    mask = torch.tensor([[True, False, False, True] * 2] * 3)
    layer = SparseLinear24.from_dense(linear, mask=mask)
    assert_exact(layer.to_dense().weight, linear.weight.detach() * mask)
    with pytest.raises(ValueError, match=r"mask: expected a 2:4 mask"):
        SparseLinear24.from_dense(linear, mask=torch.ones(3, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask: expected shape \(3, 8\)"):
        SparseLinear24.from_dense(linear, mask=mask[:2])
    with pytest.raises(ValueError, match=r"linear.in_features: expected a multiple of 4, got 10"):
        SparseLinear24.from_dense(nn.Linear(10, 3))
    with pytest.raises(ValueError, match=r"backend: expected one of"):
        SparseLinear24(8, 3, backend="cusparselt")
    with pytest.raises(ValueError, match=r"x: expected shape \(\*, 8\), got \(2, 9\)"):
        layer(torch.zeros(2, 9))


def test_sparse_linear24_state_dict_is_compressed_and_round_trips(device):
    layer = SparseLinear24.from_dense(make_linear(64, 24, device=device, seed=5), permute=True)
    assert set(layer.state_dict()) == {"values", "meta", "bias", "perm"}
    dense_bytes = disk_bytes(make_linear(64, 24))
    assert disk_bytes(SparseLinear24.from_dense(make_linear(64, 24))) < 0.7 * dense_bytes
    fresh = SparseLinear24.from_dense(make_linear(64, 24, device=device, seed=6))  # other weight, no perm
    round_trip(layer, fresh)
    x = randn((3, 64), device=device, seed=7)
    assert_exact(fresh(x), layer(x))
    assert_exact(fresh.perm, layer.perm)
    unpermuted = round_trip(SparseLinear24.from_dense(make_linear(64, 24, device=device)), fresh)
    assert unpermuted.perm is None and "perm" not in unpermuted.state_dict()


def test_sparse_linear24_to_dtype(device):
    layer = SparseLinear24.from_dense(make_linear(32, 12, device=device, seed=8)).to(torch.float16)
    assert layer.values.dtype == torch.float16 and layer.meta.dtype == torch.int32
    x = randn((4, 32), dtype=torch.float16, device=device, seed=9)
    expected = F.linear(x.double(), layer.to_dense().weight.double(), layer.bias.double())
    assert_rel_close(layer(x), expected, rel_bound(torch.float16, 32, device=device))


def test_sparse_linear24_backward_wrt_input(device):
    layer = SparseLinear24.from_dense(make_linear(32, 12, device=device, seed=10))
    x = randn((5, 32), device=device, seed=11).requires_grad_()
    grad_y = randn((5, 12), device=device, seed=12)
    layer(x).backward(grad_y)
    assert_rel_close(x.grad, grad_y.double() @ layer.to_dense().weight.double(), 1e-5)
    assert layer.values.grad is not None and layer.values.grad.shape == layer.values.shape


def test_sparse_linear24_backends_on_cpu():
    layer = SparseLinear24.from_dense(make_linear(64, 16, seed=13), backend="cuda").half()
    x = randn((3, 64), dtype=torch.float16, seed=14)
    expected = F.linear(x.double(), layer.to_dense().weight.double(), layer.bias.double())
    with pytest.raises(ValueError, match=r"backend: 'cuda' runs on CUDA tensors only, got inputs on CPU"):
        layer(x)
    with reference_only():  # the reference serves every backend
        assert_rel_close(layer(x), expected, rel_bound(torch.float16, 64))
    assert "meta_mma" not in layer.state_dict()
    torch_layer = SparseLinear24.from_dense(make_linear(64, 16), backend="torch")
    with pytest.raises(ValueError, match=r"backend: 'torch' runs on CUDA tensors only, got inputs on CPU"):
        torch_layer(torch.zeros(2, 64))


def test_mma_sp_is_offered_only_for_fp16_bf16_and_k_multiple_of_32():
    half = torch.zeros(4, 64, dtype=torch.float16)
    assert SparseLinear24(64, 16)._kernels(half) == ("triton", "cuda", "torch")
    assert SparseLinear24(64, 16)._kernels(half.float()) == ("triton", "torch")
    assert SparseLinear24(36, 16)._kernels(torch.zeros(4, 36, dtype=torch.float16)) == ("triton", "torch")
    # asked for explicitly, the mma.sp op's own checks name what is wrong
    assert SparseLinear24(36, 16, backend="cuda")._kernels(half) == ("triton", "cuda", "torch")


def test_sparse_linear24_counts_stored_weights():
    layer = SparseLinear24.from_dense(make_linear(16, 8))
    assert count_parameters(layer) == 8 * 8 + 8


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda", "torch"])
@pytest.mark.parametrize("m", [1, 16, 300])
def test_sparse_linear24_backends_on_gpu(backend, m):
    layer = SparseLinear24.from_dense(make_linear(256, 128, device="cuda", dtype=torch.float16), backend=backend)
    x = randn((m, 256), dtype=torch.float16, device="cuda", seed=m)
    expected = F.linear(x.double(), layer.to_dense().weight.double(), layer.bias.double())
    assert_rel_close(layer(x), expected, rel_bound(torch.float16, 256, device="cuda"))


# ----------------------------------------------------------------------------- BlockSparseLinear


def test_block_sparse_linear(device):
    linear = make_linear(64, 32, device=device, seed=15)
    layer = BlockSparseLinear.from_dense(linear, block_size=16, density=0.5)
    assert layer.values.shape == (4, 16, 16) and layer.density == 0.5
    mask = formats.prune_blocks(linear.weight.detach(), 16, 0.5).repeat_interleave(16, 0).repeat_interleave(16, 1)
    assert_exact(layer.to_dense().weight, linear.weight.detach() * mask)
    x = randn((2, 5, 64), device=device, seed=16)
    expected = F.linear(x.double(), layer.to_dense().weight.double(), linear.bias.double())
    assert_rel_close(layer(x), expected, rel_bound(torch.float32, 64, device=device))
    assert count_parameters(layer) == 4 * 256 + 32


def test_block_sparse_linear_state_dict_round_trip_adopts_nnz(device):
    layer = BlockSparseLinear.from_dense(make_linear(64, 32, device=device, seed=17), block_size=16, density=0.25)
    fresh = BlockSparseLinear(64, 32, block_size=16, device=device)  # every block stored
    assert disk_bytes(layer) < 0.5 * disk_bytes(fresh)
    round_trip(layer, fresh)
    x = randn((3, 64), device=device, seed=18)
    assert_exact(fresh(x), layer(x))
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state["col_indices"][0] = 9
    with pytest.raises(ValueError, match=r"col_indices: expected block columns in \[0, 4\)"):
        fresh.load_state_dict(state)


def test_block_sparse_linear_errors():
    with pytest.raises(ValueError, match=r"block_size: expected one of \(16, 32, 64\), got 24"):
        BlockSparseLinear(48, 48, block_size=24)
    with pytest.raises(
        ValueError, match=r"the weight.shape\[0\] \(N\) for block_size 32: expected a multiple of 32, got 40"
    ):
        BlockSparseLinear(64, 40, block_size=32)


# ----------------------------------------------------------------------------- in core's GemmConv2d


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_conv_matches_conv2d(device, stride):
    torch.manual_seed(19)
    conv = nn.Conv2d(32, 16, 1, stride=stride, bias=True).to(device)
    layer = GemmConv2d.from_dense(conv, SparseLinear24.from_dense)
    dense = layer.to_dense()
    assert isinstance(dense, nn.Conv2d) and dense.stride == (stride, stride)
    x = randn((2, 32, 5, 7), device=device, seed=20)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        expected = F.conv2d(inp.double(), dense.weight.double(), dense.bias.double(), stride=stride)
        assert_rel_close(layer(inp), expected, rel_bound(torch.float32, 32, device=device))


def test_pointwise_conv_block_sparse_and_errors(device):
    conv = nn.Conv2d(32, 32, 1, bias=False).to(device)
    layer = GemmConv2d.from_dense(conv, lambda lin: BlockSparseLinear.from_dense(lin, 16, 0.5))
    x = randn((1, 32, 3, 3), device=device, seed=21)
    expected = F.conv2d(x.double(), layer.to_dense().weight.double())
    assert_rel_close(layer(x), expected, rel_bound(torch.float32, 32, device=device))
    with pytest.raises(ValueError, match=r"conv: expected groups=1, .*; groups=2: grouped/depthwise"):
        GemmConv2d.from_dense(nn.Conv2d(32, 32, 3, groups=2), BlockSparseLinear.from_dense)
    with pytest.raises(ValueError, match=r"x: expected an \(N, C, H, W\) or \(C, H, W\) tensor, got shape \(32, 9\)"):
        layer(torch.zeros(32, 9))


def test_layers_compile_fullgraph(device):
    torch.manual_seed(22)
    model = nn.Sequential(
        GemmConv2d.from_dense(nn.Conv2d(16, 32, 1), SparseLinear24.from_dense),
        nn.ReLU(),
        GemmConv2d.from_dense(nn.Conv2d(32, 32, 1), lambda lin: BlockSparseLinear.from_dense(lin, 16, 0.5)),
        nn.Flatten(),
        nn.Linear(32 * 9, 16),
    ).to(device)
    model[4] = SparseLinear24.from_dense(model[4], permute=True)
    x = randn((2, 16, 3, 3), device=device, seed=23)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert_rel_close(compiled(x), model(x), 1e-6)


# ----------------------------------------------------------------------------- masked fine-tuning


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_masked_training_keeps_pruned_weights_zero(optimizer):
    layer = MaskedSparseLinear.from_dense(make_linear(16, 6, seed=24))
    pruned = ~layer.mask
    assert bool((layer.weight[pruned] == 0).all())
    opt = (
        torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
        if optimizer == "sgd"
        else torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.01)
    )
    for step in range(2):
        opt.zero_grad()
        layer(randn((4, 16), seed=25 + step)).pow(2).sum().backward()
        assert bool((layer.weight.grad[pruned] == 0).all()) and bool((layer.weight.grad[~pruned] != 0).any())
        opt.step()
        assert bool((layer.weight[pruned] == 0).all())
    sparse = layer.to_sparse()
    x = randn((3, 16), seed=27)
    assert_rel_close(sparse(x), layer(x).double(), 1e-6)


def test_sr_ste_gradient_formula_exactly():
    lam = 0.25
    layer = MaskedSparseLinear.from_dense(
        make_linear(8, 4, seed=28, dtype=torch.float64), sr_ste=True, sr_ste_lambda=lam
    )
    weight = layer.weight.detach().clone()
    mask = formats.prune_24(weight)
    x = randn((5, 8), seed=29, dtype=torch.float64)
    grad_y = randn((5, 4), seed=30, dtype=torch.float64)
    y = layer(x)
    assert_exact(layer.mask, mask)
    assert_exact(y, F.linear(x, weight * mask, layer.bias))
    y.backward(grad_y)
    g_masked = grad_y.t() @ x  # dL/d(W ⊙ mask), passed straight through to every weight
    assert_exact(layer.weight.grad, g_masked + lam * (~mask) * weight)


def test_sr_ste_mask_follows_the_weights():
    layer = MaskedSparseLinear.from_dense(make_linear(8, 2, seed=31), sr_ste=True)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2, 3, 4, 4, 3, 2, 1]] * 2))
    layer(torch.zeros(1, 8))
    assert_exact(layer.mask[0], torch.tensor([False, False, True, True, True, True, False, False]))
    assert_exact(layer.to_sparse().to_dense().weight[0], torch.tensor([0.0, 0, 3, 4, 4, 3, 0, 0]))


def test_masked_layer_rejects_bad_mask():
    with pytest.raises(ValueError, match=r"mask: expected a 2:4 mask"):
        MaskedSparseLinear.from_dense(make_linear(8, 2), mask=torch.ones(2, 8, dtype=torch.bool))


def test_reference_only_uses_no_kernel(monkeypatch):
    from slimtorch.sparse import sparse24

    monkeypatch.setattr(sparse24, "_sparse24_mm_kernel", None)  # any launch would fail
    monkeypatch.setattr(sparse24, "_sparse24_gemv_kernel", None)
    layer = SparseLinear24.from_dense(make_linear(16, 4))
    with reference_only():
        out = layer(torch.ones(2, 16))
    assert out.shape == (2, 4)

"""Shift ops: integer shift (exact against padded crops), active shift (against
torch.nn.functional.grid_sample, values and gradients w.r.t. input and offsets), the
quantization-aware sparse shift, the CUDA C kernel (GPU only) and its CPU fallback."""

import pytest
import torch
import torch.nn.functional as F

from slimtorch.convops.shift import active_shift, integer_shift, integer_shift_cuda, quantized_shift
from slimtorch.core import reference_only
from slimtorch.core.testing import assert_exact, assert_rel_close, randn, rel_bound


def _offsets(channels, low=-3, high=4, seed=0):
    return torch.randint(low, high, (channels, 2), generator=torch.Generator().manual_seed(seed), dtype=torch.int32)


def _crop_oracle(x, offsets):
    """y[c] = x[c] read at (h + dy, w + dx): crops of a zero-padded copy."""
    border = 8
    big = F.pad(x, (border,) * 4)
    h, w = x.shape[2:]
    crops = [
        big[:, c : c + 1, border + dy : border + dy + h, border + dx : border + dx + w]
        for c, (dy, dx) in enumerate(offsets.tolist())
    ]
    return torch.cat(crops, 1)


def _grid_sample_oracle(x, offsets):
    """Bilinear sampling of channel c at (h + dy_c, w + dx_c), zero outside, by grid_sample."""
    n, c, h, w = x.shape
    ys = torch.arange(h, dtype=x.dtype)[None, :, None] + offsets[:, 0, None, None].to(x.dtype)
    xs = torch.arange(w, dtype=x.dtype)[None, None, :] + offsets[:, 1, None, None].to(x.dtype)
    grid = torch.stack([2 * xs / (w - 1) - 1 + 0 * ys, 2 * ys / (h - 1) - 1 + 0 * xs], dim=-1)  # (C, H, W, 2)
    grid = grid.expand(n, c, h, w, 2).reshape(n * c, h, w, 2)
    out = F.grid_sample(x.reshape(n * c, 1, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(n, c, h, w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("layout_name", ["nchw", "nhwc"])
def test_integer_shift_is_exact(layout_name, dtype, layout, memory_format, device):
    x = layout(randn((2, 11, 7, 9), dtype=dtype, device=device, seed=1), layout_name)
    offsets = _offsets(11, seed=2)
    out = integer_shift(x, offsets.to(device))
    assert_exact(out, _crop_oracle(x.cpu(), offsets).to(out.device))
    assert out.is_contiguous(memory_format=memory_format(layout_name))


def test_integer_shift_backward_is_the_negated_shift(device):
    x = randn((2, 6, 5, 7), device=device, seed=3).requires_grad_()
    offsets = _offsets(6, seed=4).to(device)
    g = randn((2, 6, 5, 7), device=device, seed=5)
    integer_shift(x, offsets).backward(g)
    assert_exact(x.grad, _crop_oracle(g.cpu(), -offsets.cpu()).to(x.device))


def test_backend_argument_follows_the_core_rule():
    x, offsets = randn((1, 5, 6, 4), seed=6), _offsets(5, seed=7)
    assert_exact(integer_shift(x, offsets, backend="reference"), _crop_oracle(x, offsets))
    with pytest.raises(ValueError, match=r"backend: 'cuda' runs on CUDA tensors only, got inputs on CPU"):
        integer_shift(x, offsets, backend="cuda")
    with pytest.raises(ValueError, match=r"backend: integer_shift has no 'torch' kernel"):
        integer_shift(x, offsets, backend="torch")
    with pytest.raises(
        ValueError, match=r"backend: expected one of \('auto', 'triton', 'cuda', 'torch', 'reference'\)"
    ):
        integer_shift(x, offsets, backend="cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("layout_name,channels", [("nchw", 13), ("nhwc", 13), ("nhwc", 48)])
def test_cuda_shift_kernel(layout_name, channels, dtype, layout):
    """The opt-in CUDA C kernel: NCHW, NHWC scalar (C % 8 != 0) and NHWC 16-byte vector paths."""
    x = layout(randn((3, channels, 9, 11), dtype=dtype, device="cuda", seed=8), layout_name).requires_grad_()
    offsets = torch.repeat_interleave(_offsets(channels // 8 + 1, seed=9), 8, dim=0)[:channels].cuda()
    offsets[0] = torch.tensor([2, -1])  # a group whose channels disagree: the per-channel fallback
    out = integer_shift_cuda(x, offsets)
    assert_exact(out, _crop_oracle(x.detach().cpu(), offsets.cpu()).cuda())
    g = randn(out.shape, dtype=dtype, device="cuda", seed=10)
    out.backward(g)
    assert_exact(x.grad, _crop_oracle(g.cpu(), -offsets.cpu()).cuda())


def _real_offsets(channels, seed):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(channels, 2, generator=gen) * 6 - 3).double()  # in (-3, 3), never integral


@pytest.mark.parametrize("dtype,layout_name", [(torch.float32, "nhwc"), (torch.float16, "nchw")])
def test_active_shift_matches_grid_sample(dtype, layout_name, layout, device):
    x = layout(randn((2, 7, 8, 9), dtype=dtype, device=device, seed=11), layout_name)
    offsets = _real_offsets(7, seed=12)
    out = active_shift(x, offsets.float().to(device))
    ref = _grid_sample_oracle(x.double().cpu(), offsets.float().double())
    assert_rel_close(out, ref, rel_bound(dtype, 4, device=device))  # bilinear: 4 taps


def test_active_shift_gradients_match_grid_sample(device):
    x = randn((2, 5, 7, 6), device=device, seed=13).requires_grad_()
    offsets = _real_offsets(5, seed=14).float().to(device).requires_grad_()
    g = randn((2, 5, 7, 6), device=device, seed=15)
    active_shift(x, offsets).backward(g)
    x_ref = x.detach().double().cpu().requires_grad_()
    off_ref = offsets.detach().double().cpu().requires_grad_()
    _grid_sample_oracle(x_ref, off_ref).backward(g.double().cpu())
    assert_rel_close(x.grad, x_ref.grad, rel_bound(torch.float32, 4, device=device), name="grad x")  # 4 taps
    pixels = g.numel() // g.shape[1]  # an offset's gradient sums over N·H·W
    assert_rel_close(offsets.grad, off_ref.grad, rel_bound(torch.float32, pixels, device=device), name="grad offsets")


def test_active_shift_gradcheck_reference_path():
    x = torch.randn(1, 3, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    offsets = _real_offsets(3, seed=16).requires_grad_()
    with reference_only():
        assert torch.autograd.gradcheck(active_shift, (x, offsets))


def test_active_shift_at_integer_offsets_is_the_integer_shift(device):
    x = randn((1, 6, 5, 5), device=device, seed=17)
    offsets = _offsets(6, seed=18)
    assert_rel_close(active_shift(x, offsets.float().to(device)), _crop_oracle(x.cpu(), offsets), 1e-6)


def test_quantized_shift_rounds_forward_and_passes_active_gradients(device):
    x = randn((2, 6, 7, 5), device=device, seed=19).requires_grad_()
    offsets = (_real_offsets(6, seed=20).float() * 0.8).to(device).requires_grad_()
    g = randn((2, 6, 7, 5), device=device, seed=21)
    out = quantized_shift(x, offsets)
    rounded = torch.round(offsets.detach()).to(torch.int32).cpu()
    assert_exact(out, _crop_oracle(x.detach().cpu(), rounded).to(out.device))
    out.backward(g)
    assert_exact(x.grad, _crop_oracle(g.cpu(), -rounded).to(x.device))  # exact: the integer shift's
    off_ref = offsets.detach().clone().requires_grad_()
    active_shift(x.detach(), off_ref).backward(g)
    assert_rel_close(offsets.grad, off_ref.grad, 1e-6, name="straight-through offsets gradient")
    with torch.no_grad():
        assert_exact(quantized_shift(x, offsets), out.detach())


def test_bad_arguments_are_named():
    x = torch.zeros(1, 4, 5, 5)
    with pytest.raises(ValueError, match=r"offsets: expected shape \(4, 2\), got \(3, 2\)"):
        integer_shift(x, torch.zeros(3, 2, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"offsets: expected dtype int32, got float32"):
        integer_shift(x, torch.zeros(4, 2))
    with pytest.raises(TypeError, match=r"offsets: expected dtype one of \(float16, bfloat16, float32, float64\)"):
        active_shift(x, torch.zeros(4, 2, dtype=torch.int32))
    with pytest.raises(TypeError, match=r"x: expected dtype one of"):
        active_shift(x.int(), torch.zeros(4, 2))

"""Shared by the quant kernel tests: run an op (kernel: GPU or interpreter) against its reference."""

import torch

from slimtorch.core.testing import assert_gemm_close, assert_rel_close, linear_map, randn, rel_bound


def activations(m: int, k: int, dtype: torch.dtype, device: str, seed: int) -> torch.Tensor:
    return randn((m, k), dtype=dtype, device=device, seed=seed)


def assert_matches_reference(
    op, x: torch.Tensor, *weights, bias: torch.Tensor | None = None, same_x: bool = False, **kwargs
) -> torch.Tensor:
    """op(x, *weights, bias=bias) vs its reference on x and bias in float64 (same weights), within
    rel_bound(x's dtype, K): a decoded weight or a scale rounded to fp16 on the way fails it. Also
    by the forward-error bound against the reference's own decoded weight (core.testing.linear_map).
    ``same_x``: the reference sees x in x's dtype (W8A8 quantises x: the same codes on both paths)."""
    out = op(x, *weights, bias=bias, **kwargs)
    assert out.dtype == x.dtype and out.device == x.device
    reference = op.get_reference()
    k = x.shape[-1]
    ref = reference(x if same_x else x.double(), *weights, bias=None if bias is None else bias.double(), **kwargs)
    bound = rel_bound(x.dtype, k, device=x.device)
    assert_rel_close(out, ref.double(), bound)
    if not same_x:
        weight = linear_map(lambda e: reference(e.to(x.device), *weights, **kwargs), k)
        assert_gemm_close(out, ref, x, weight, bound, bias=bias)
    return out

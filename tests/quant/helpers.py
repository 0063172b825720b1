"""Shared by the quant kernel tests: run an op (kernel: GPU or interpreter) against its reference."""

import torch

from slimtorch.core.testing import REL_BOUND, assert_rel_close, randn


def activations(m: int, k: int, dtype: torch.dtype, device: str, seed: int) -> torch.Tensor:
    return randn((m, k), dtype=dtype, device=device, seed=seed)


def assert_matches_reference(op, x: torch.Tensor, *weights, bias: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """op(x, *weights, bias=bias) vs its reference on x and bias in float64 (same weights)."""
    out = op(x, *weights, bias=bias, **kwargs)
    assert out.dtype == x.dtype and out.device == x.device
    ref = op.get_reference()(x.double(), *weights, bias=None if bias is None else bias.double(), **kwargs)
    assert_rel_close(out, ref, REL_BOUND[x.dtype])
    return out

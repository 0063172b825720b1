"""Error measures shared by tests, benchmarks and the demo (computed in float64)."""

from __future__ import annotations

import math

import torch


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖₂ / ‖ref‖₂ in float64; NaN anywhere in ``out`` gives NaN (never passes a bound).

    A zero reference gives ‖out‖ (0 when both are zero).
    """
    if out.shape != ref.shape:
        raise ValueError(f"out: expected shape {tuple(ref.shape)} (the reference's), got {tuple(out.shape)}")
    o = out.detach().to(device="cpu", dtype=torch.float64)
    r = ref.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(o).all()) and bool(torch.isfinite(r).all()):
        return math.nan
    denom = torch.linalg.vector_norm(r).item()
    num = torch.linalg.vector_norm(o - r).item()
    return num / denom if denom > 0 else num


def sqnr(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 20·log10(‖ref‖ / ‖ref − approx‖).

    ``inf`` when the two are identical; NaN when ``approx`` holds NaN/Inf.
    """
    err = rel_error(approx, ref)
    if math.isnan(err):
        return math.nan
    return math.inf if err == 0 else -20.0 * math.log10(err)

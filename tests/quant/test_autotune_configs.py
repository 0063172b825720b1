"""Every autotune config of every quant kernel, numerically, in the interpreter too: core.tuning
keeps only the first config there, so each other config is run with ``use_config`` against the
reference (bounds from K and the dtype). The shapes reach each kernel's path: M <= SMALL_M_MAX the
split-K GEMV kernel, above it the tile kernel; the formats take turns across the configs."""

import pytest
import torch

from slimtorch.core.testing import assert_rel_close, randn, rel_bound
from slimtorch.core.tuning import all_configs, use_config
from slimtorch.quant import dequant_mm, formats, w8a8_mm
from slimtorch.quant.codebook_mm import codebook_mm
from slimtorch.quant.int4_mm import int4_weight_mm
from slimtorch.quant.int8_mm import int8_weight_mm
from slimtorch.quant.lowbit_mm import lowbit_weight_mm

K, N = 64, 37
WEIGHT = randn((N, K), seed=11, scale=0.1)
FORMATS = [
    (int8_weight_mm, formats.quantize_int8(WEIGHT)),
    (int4_weight_mm, (*formats.quantize_int4(WEIGHT, 32, torch.float32)[:3], 32)),
    (lowbit_weight_mm, (*formats.quantize_ternary(WEIGHT, asymmetric=True)[:3], 2)),
    (codebook_mm, (*formats.quantize_codebook(WEIGHT, 3, iterations=5)[:2], 3)),
]
KERNELS = {
    "dequant small-M": (dequant_mm._small_m_kernel, 5),
    "dequant large-M": (dequant_mm._large_m_kernel, dequant_mm.SMALL_M_MAX + 3),
    "w8a8": (w8a8_mm._int8_mm_tuned, 19),
}
CASES = [(name, i) for name, (kernel, _) in KERNELS.items() for i in range(len(all_configs(kernel)))]


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_every_config_matches_reference(name, index):
    kernel, m = KERNELS[name]
    config = all_configs(kernel)[index]
    x = randn((m, K), seed=index)
    if name == "w8a8":
        op, args = w8a8_mm.w8a8_linear, formats.quantize_int8(WEIGHT)
        ref = op.get_reference()(x, *args)  # the same per-token codes as the kernel
    else:
        op, args = FORMATS[index % len(FORMATS)]
        ref = op.get_reference()(x.double(), *args)
    with use_config(kernel, config):
        out = op(x, *args)
        assert kernel.best_config == config, "the chosen config must be the one that ran"
    assert_rel_close(out, ref.to(torch.float64), rel_bound(torch.float32, K), name=f"{name} config {config}")

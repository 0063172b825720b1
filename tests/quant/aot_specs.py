"""Every Triton kernel of slimtorch.quant as AOT specialisations (see slimtorch.core.aot), captured
from the launchers (slimtorch.core.capture) so each is specialised exactly as at run time: every
weight format of the benchmarks (int8, int4 g128 and g32, W8A8, ternary, binary, codebook, XNOR) on the
split-K GEMV path (M = 1 fp16, M = 7 bf16) and the tile path (M = 64 fp32 / tf32). ``quick``: the
first autotune config of each launch; otherwise every config. Plus the XNOR binary conv (one small layer)."""

import math

import torch

from slimtorch.core.aot import captured_specs
from slimtorch.core.capture import on_fake_device
from slimtorch.quant import bench, formats
from slimtorch.quant.int4_mm import int4_weight_mm

K, N = 512, 320
CALLS = ((1, torch.float16), (7, torch.bfloat16), (64, torch.float32))


def _providers():
    found = [p for p in bench.providers(K, N) if p.name.startswith("ours")]
    int4_g32 = bench.ours("int4-g32", lambda w: tuple(formats.quantize_int4(w, 32)[:3]), int4_weight_mm, (32,), 0)
    return [*found, int4_g32]


def _run():
    for provider in _providers():
        packed = on_fake_device(lambda device, p=provider: p.pack(torch.randn(N, K, device=device) / math.sqrt(K)))
        for m, dtype in CALLS:
            provider.run(torch.randn(m, K, device="cuda", dtype=dtype), *packed)
    bench.xnor_conv_run(2, 40, 6, 8, 1, "cuda")


def aot_specs(quick: bool):
    return captured_specs("quant", _run, quick)

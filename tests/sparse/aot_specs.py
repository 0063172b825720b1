"""Every Triton kernel of slimtorch.sparse as AOT specialisations (see slimtorch.core.aot), captured
from the launchers (slimtorch.core.capture) so each is specialised exactly as at run time: the 2:4
GEMV (M = 1, 2; split-K and not) and tile kernel (M = 64), BSR at block sizes 16/32/64, in fp16,
bf16 and fp32, with bias and an activation. ``quick``: the first autotune config of each launch."""

import torch

from slimtorch.core.aot import captured_specs
from slimtorch.core.capture import on_fake_device
from slimtorch.sparse.bsr import bsr_mm
from slimtorch.sparse.formats import compress_24, prune_24, prune_blocks, to_bsr
from slimtorch.sparse.sparse24 import sparse24_mm

K, N = 1024, 192
CALLS = ((1, torch.float16, 0), (2, torch.bfloat16, 1), (64, torch.float32, 0), (40, torch.float16, 1))


def _run():
    for m, dtype, split_k in CALLS:

        def build(device, dtype=dtype):
            weight = torch.randn(N, K, device=device, dtype=dtype)
            return compress_24(weight * prune_24(weight))

        values, meta = on_fake_device(build)
        bias = torch.randn(N, device="cuda", dtype=dtype)
        x = torch.randn(m, K, device="cuda", dtype=dtype)
        sparse24_mm.launcher(x, values, meta, bias=bias, activation="gelu", split_k=split_k)
    for block in (16, 32, 64):
        for dtype in (torch.float16, torch.bfloat16, torch.float32):

            def build(device, block=block, dtype=dtype):
                full = torch.randn(N, K, device=device, dtype=dtype)
                return to_bsr(full, prune_blocks(full, block, 0.5))

            crow, col, blocks = on_fake_device(build)
            x = torch.randn(48, K, device="cuda", dtype=dtype)
            bsr_mm.launcher(x, crow, col, blocks, bias=torch.randn(N, device="cuda", dtype=dtype), activation="relu")


def aot_specs(quick: bool):
    return captured_specs("sparse", _run, quick)

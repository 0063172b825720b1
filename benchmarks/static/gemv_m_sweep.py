"""The weight-only GEMV (slimtorch.quant.dequant_gemv) at M = 1, 2, 4 on K = N = 4096, fp16 x: the static
SASS report's rows for choosing each format's GEMV_MAX_M (the report's own cases run M = 1 and 16 only,
and M = 16 runs the tl.dot kernel, whose cost is the same at any M <= 16). GEMV_MAX_M is lifted for the
sweep; the launcher is called directly, as the report calls each op's launcher.

    python benchmarks/static/gemv_m_sweep.py [--out benchmarks/static] [--m 1 2 4] [--ops int8 ...]
"""

import argparse
from pathlib import Path

import torch

from slimtorch.core import sass
from slimtorch.core.capture import on_fake_device
from slimtorch.core.sass_cases import Case
from slimtorch.quant import dequant_gemv, formats, pow2

K = N = 4096
# op -> (pack W into the launcher's (fmt, stored bits, w, scale, aux), weight bytes): as quant.bench's providers
PACKERS = {
    "int8": (lambda w: ("int8", 8, *formats.quantize_int8(w), None), N * K + 4 * N),
    "ternary-2bit": (lambda w: ("lowbit", 2, *formats.quantize_ternary(w)[:3]), N * K / 4 + 8 * N),
    "binary-1bit": (lambda w: ("lowbit", 1, *formats.quantize_binary(w)[:3]), N * K / 8 + 8 * N),
    "codebook-4bit": (lambda w: ("codebook", 4, *formats.quantize_codebook(w, 4)[:2], None), N * K / 2 + 64),
    "codebook-2bit": (lambda w: ("codebook", 2, *formats.quantize_codebook(w, 2)[:2], None), N * K / 4 + 16),
    "pow2-5bit": (lambda w: ("pow2", 8, *pow2.quantize_pow2(w, 5)[:2], None), N * K + 4),
}


def cases(ops, ms):
    for op in ops:
        pack, weight_bytes = PACKERS[op]
        state = {}

        def packed(pack=pack, state=state):
            if "packed" not in state:
                state["packed"] = on_fake_device(lambda device: pack(torch.randn(N, K, device=device) / 64))
            return state["packed"]

        for m in ms:

            def run(m=m, packed=packed):
                fmt, bits, w, scale, aux = packed()
                x = torch.randn(m, K, device="cuda", dtype=torch.float16)
                dequant_gemv.launch_dequant_gemv(x, fmt, bits, w, scale, aux, None, N)

            yield Case("quant", op, f"M={m} K={K} N={N}", {"M": m, "K": K, "N": N}, run, "gemv",
                       weights=float(N * K), weight_bytes=weight_bytes, nbytes=weight_bytes + 2 * m * K + 2 * m * N,
                       flops=2.0 * m * N * K, outputs=m * N)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/static"))
    parser.add_argument("--stem", default="sm_90a-gemv-m")
    parser.add_argument("--m", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--ops", nargs="+", default=list(PACKERS), choices=list(PACKERS))
    args = parser.parse_args()
    for fmt in dequant_gemv.GEMV_MAX_M:
        dequant_gemv.GEMV_MAX_M[fmt] = max(args.m)
    rows = sass.report(list(cases(args.ops, args.m)), with_cuda_sources=False)
    note = (
        "The weight-only GEMV (slimtorch.quant.dequant_gemv) launched directly at M = "
        + ", ".join(map(str, args.m))
        + " (GEMV_MAX_M lifted), K = N = 4096, fp16 x: the rows GEMV_MAX_M is chosen from (compare with the tl.dot"
        " kernel's M = 16 rows of sm_90a-gemv-before.md / sm_90a-gemv.md). `python benchmarks/static/gemv_m_sweep.py`."
    )
    paths = sass.write(rows, args.out, args.stem, note)
    print(f"{len(rows)} rows -> {paths['json']}, {paths['md']}")


if __name__ == "__main__":
    main()

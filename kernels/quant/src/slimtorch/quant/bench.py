"""Benchmark of the quantized GEMMs against fp16 cuBLAS and torch's own low-bit paths.

    python -m slimtorch.quant.bench [--quick] [--out benchmarks/results] [--device cuda]

y = x · Wᵀ with x (M, K) fp16 and W (N, K), for the LLM shapes K = N = 4096, K = N = 8192 and
K = 4096 → N = 11008, and the 1x1-convolution GEMMs of MobileNetV2 and ShuffleNetV2 (M = pixels ×
batch), at M ∈ {1, 4, 16, 64, 256, 1024, 4096}. Providers, side by side per (case, M):

- ``fp16 torch.matmul`` (the baseline: cuBLAS on fp16 weights);
- ours, through the raw launchers (no dispatch overhead): ``int8``, ``int4-gG`` (G = 128, or the
  largest of 64/32 dividing K), ``w8a8`` (per-token quantization pass + int8 GEMM), ``ternary-2bit``,
  ``binary-1bit``, ``codebook-4bit``, ``xnor-1bit`` (binary activations too: sign packing +
  XOR/popcount), ``pq-d4-c16`` (product quantization: LUT table + gather-add), ``pow2-5bit``
  (INQ power-of-two weights, exponent decode); each is checked
  against its reference before it is timed (a
  wrong result is reported as an error, not a time);
- torch's: ``torch._weight_int8pack_mm``, ``torch._weight_int4pack_mm`` (tinygemm, bf16 activations)
  and ``torch._int_mm`` (the int8 GEMM alone, on pre-quantized activations, M > 16), where the
  installed torch has them for this device (otherwise an error row says why).

FLOPs are 2·M·N·K; bytes are what the provider must move: activations, its weight format
(packed weights, scales, zero points, codebook) and the output. Inputs rotate through enough
copies to miss L2. Results go to ``<out>/<device>/quant.{json,md,png}``; the markdown ends with
the speed goals and the measured speedups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from slimtorch.core import bench
from slimtorch.core.testing import rel_bound
from slimtorch.quant import formats
from slimtorch.quant.codebook_mm import codebook_mm
from slimtorch.quant.int4_mm import int4_weight_mm
from slimtorch.quant.int8_mm import int8_weight_mm
from slimtorch.quant.lowbit_mm import lowbit_weight_mm
from slimtorch.quant.pow2 import quantize_pow2
from slimtorch.quant.pow2_mm import pow2_weight_mm
from slimtorch.quant.pq_mm import pq_code_bits, pq_mm
from slimtorch.quant.w8a8_mm import quantize_per_token_reference, w8a8_linear
from slimtorch.quant.xnor_mm import pack_signs, pack_signs_reference, pack_weight_signs, xnor_mm, xnor_mm_reference

FAMILY = "quant"
BASELINE = "fp16 torch.matmul"
M_VALUES = (1, 4, 16, 64, 256, 1024, 4096)
QUICK_M_VALUES = (1, 16, 1024)
# (label, K, N)
LLM_SHAPES = [("llm 4096x4096", 4096, 4096), ("llm 8192x8192", 8192, 8192), ("llm 4096->11008", 4096, 11008)]
CONV_SHAPES = [
    ("mobilenetv2 1x1 320->1280", 320, 1280),
    ("mobilenetv2 1x1 960->160", 960, 160),
    ("shufflenetv2 1x1 464->1024", 464, 1024),
    ("shufflenetv2 1x1 232->232", 232, 232),
]
QUICK_SHAPES = LLM_SHAPES[:1]


@dataclass
class Provider:
    """One way to compute y = x·Wᵀ: ``pack(W)`` once per case, then ``run(x, *packed)`` per call."""

    name: str
    pack: Callable[[torch.Tensor], tuple]
    run: Callable[..., torch.Tensor]
    weight_bytes: float
    reference: Callable[..., torch.Tensor] | None = None  # ours: the op's reference, checked first
    x_dtype: torch.dtype = torch.float16
    min_m: int = 1


def int4_group_size(k: int) -> int | None:
    """The largest supported int4 group dividing K (128 preferred, as in the speed goals)."""
    return next((g for g in sorted(formats.INT4_GROUP_SIZES, reverse=True) if k % g == 0), None)


def _torch_int8_pack(packed: formats.Int8Weight) -> tuple:
    """torch._weight_int8pack_mm's operands: int8 (N, K) weights, scales in the activation dtype."""
    return packed.qweight, packed.scale.half()


def _tinygemm_pack(w: torch.Tensor, group_size: int) -> tuple:
    """torch._weight_int4pack_mm's operands (the packing API changed across torch versions)."""
    n, k = w.shape
    codes = torch.randint(0, 16, (n, k), dtype=torch.int32, device=w.device)
    try:  # torch >= 2.5: uint8 (N, K/2), two codes per byte
        packed = torch._convert_weight_to_int4pack((codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8), 8)
    except (RuntimeError, TypeError):  # older: int32 (N, K)
        packed = torch._convert_weight_to_int4pack(codes, 8)
    scales_and_zeros = torch.rand(k // group_size, n, 2, device=w.device, dtype=torch.bfloat16)
    return packed, scales_and_zeros


def ours(name: str, pack: Callable[[torch.Tensor], tuple], op, extra: tuple, weight_bytes: float) -> Provider:
    """Our op's raw launcher on ``(x, *pack(W), *extra, bias=None)``, checked against its reference."""
    return Provider(
        name,
        pack,
        lambda x, *packed: op.launcher(x, *packed, *extra, None),
        weight_bytes,
        lambda x, *packed: op.get_reference()(x, *packed, *extra, None),
    )


def _xnor_pack(w: torch.Tensor) -> tuple:
    """XNOR-Net's binary weight: sign bits (N, K/32) and α_n = mean |W[n, :]| in fp16."""
    return pack_weight_signs(w), w.abs().mean(dim=1).half()


def xnor_provider(k: int, n: int) -> Provider:
    """Binary activations × binary weights: pack sign(x) (one pass), then the XOR/popcount GEMM."""
    return Provider(
        "ours xnor-1bit",
        _xnor_pack,
        lambda x, w_bits, alpha: xnor_mm.launcher(pack_signs.launcher(x), w_bits, k, alpha, None, None),
        n * k / 8 + 2 * n,
        lambda x, w_bits, alpha: xnor_mm_reference(pack_signs_reference(x), w_bits, k, alpha),
    )


# Binary 3x3 convolutions of a ResNet-18-style BNN (Bi-Real / XNOR-Net body) at 224²: (C, H = W, O, stride)
XNOR_CONV_SHAPES = ((64, 56, 64, 1), (128, 28, 128, 1), (256, 14, 256, 1), (256, 28, 256, 2), (512, 7, 512, 1))


def xnor_conv_run(batch: int, c: int, size: int, o: int, stride: int, device: torch.device | str) -> torch.Tensor:
    """One binary 3x3 conv (padding 1) on packed NHWC signs: xnor_conv2d's launcher, as a layer runs it."""
    from slimtorch.quant.xnor_mm import words_for, xnor_conv2d

    cw = words_for(c)
    a_bits = torch.zeros(batch, size, size, cw, dtype=torch.int32, device=device)
    w_bits = torch.zeros(o, 3, 3, cw, dtype=torch.int32, device=device)
    alpha = torch.ones(o, dtype=torch.float16, device=device)
    beta = torch.ones(batch, (size - 1) // stride + 1, (size - 1) // stride + 1, dtype=torch.float16, device=device)
    return xnor_conv2d.launcher(a_bits, w_bits, c, [stride, stride], [1, 1], alpha, beta, None)


PQ_SUB_DIM, PQ_CENTROIDS = 4, 16  # Q-CNN-style: 4-weight sub-vectors, 16 centroids (1 bit per weight in codes)


def _pq_pack(w: torch.Tensor) -> tuple:
    """A product-quantized weight of W's shape: random codes and centroids (the LUT GEMM's speed does
    not depend on their values; k-means of an 8192² weight would dominate the set-up)."""
    n, k = w.shape
    s = -(-k // PQ_SUB_DIM)
    codes = torch.randint(0, PQ_CENTROIDS, (n, s), device=w.device)
    codebooks = torch.randn(1, s, PQ_CENTROIDS, PQ_SUB_DIM, device=w.device) / math.sqrt(k)
    return formats.pack_codes(codes, pq_code_bits(PQ_CENTROIDS)), codebooks


def pq_provider(k: int, n: int) -> Provider:
    """Product quantization (one codebook per subspace): the table, then the gather-add (pq_mm)."""
    s = -(-k // PQ_SUB_DIM)
    weight_bytes = 4 * n * -(-s // 8) + 4 * s * PQ_CENTROIDS * PQ_SUB_DIM  # 4-bit codes + fp32 codebooks
    return ours(f"ours pq-d{PQ_SUB_DIM}-c{PQ_CENTROIDS}", _pq_pack, pq_mm, (n,), weight_bytes)


def pow2_provider(k: int, n: int) -> Provider:
    """INQ 5-bit power-of-two weights (8-bit codes, decoded by exponent arithmetic) and n1."""
    return ours("ours pow2-5bit", lambda w: tuple(quantize_pow2(w, 5)[:2]), pow2_weight_mm, (5,), n * k + 4)


def providers(k: int, n: int) -> list[Provider]:
    """Every provider that applies to a K×N weight (int4 needs a group size dividing K)."""
    int8 = lambda w: tuple(formats.quantize_int8(w))
    found = [
        Provider(BASELINE, lambda w: (w.half(),), lambda x, w: torch.matmul(x, w.t()), 2 * n * k),
        ours("ours int8", int8, int8_weight_mm, (), n * k + 4 * n),
        ours("ours w8a8", int8, w8a8_linear, (), n * k + 4 * n),
        ours(
            "ours ternary-2bit",
            lambda w: tuple(formats.quantize_ternary(w)[:3]),
            lowbit_weight_mm,
            (2,),
            n * k / 4 + 8 * n,
        ),
        ours(
            "ours binary-1bit",
            lambda w: tuple(formats.quantize_binary(w)[:3]),
            lowbit_weight_mm,
            (1,),
            n * k / 8 + 8 * n,
        ),
        ours(
            "ours codebook-4bit",
            lambda w: tuple(formats.quantize_codebook(w, 4)[:2]),
            codebook_mm,
            (4,),
            n * k / 2 + 64,
        ),
        xnor_provider(k, n),
        pq_provider(k, n),
        pow2_provider(k, n),
        Provider(
            "torch _weight_int8pack_mm",
            lambda w: _torch_int8_pack(formats.quantize_int8(w)),
            lambda x, q, s: torch._weight_int8pack_mm(x, q, s),
            n * k + 2 * n,
        ),
        Provider(
            "torch _int_mm (int8 GEMM only)",
            lambda w: (formats.quantize_int8(w).qweight.t(),),
            lambda qx, qt: torch._int_mm(qx, qt),
            n * k,
            x_dtype=torch.int8,
            min_m=17,
        ),
    ]
    group = int4_group_size(k)
    if group is not None:
        int4 = lambda w: tuple(formats.quantize_int4(w, group)[:3])
        found.insert(2, ours(f"ours int4-g{group}", int4, int4_weight_mm, (group,), n * k / 2 + 3 * n * k / group))
        found.append(
            Provider(
                f"torch _weight_int4pack_mm g{group} (bf16)",
                lambda w: _tinygemm_pack(w, group),
                lambda x, p, sz: torch._weight_int4pack_mm(x, p, group, sz),
                n * k / 2 + 4 * n * k / group,
                x_dtype=torch.bfloat16,
            ),
        )
    return found


def _activations(m: int, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.randn(m, k, device=device)
    return quantize_per_token_reference(x)[0] if dtype == torch.int8 else x.to(dtype)


def add_case(
    runner: bench.Bench, label: str, k: int, n: int, m_values: Sequence[int], device: torch.device
) -> list[tuple[str, int, Callable[[], torch.Tensor]]]:
    """Register every provider × M of one K×N case; returns (provider, M, fn) for smoke checks."""
    weight = torch.randn(n, k, device=device) / math.sqrt(k)
    added = []
    for provider in providers(k, n):
        try:
            packed = provider.pack(weight)
        except Exception as err:  # torch's private ops differ across versions and devices
            packed, pack_error = (), f"{type(err).__name__}: {err}"
        else:
            pack_error = None
        for m in m_values:
            if m < provider.min_m:
                continue
            shape = {"M": m, "K": k, "N": n}
            nbytes = provider.weight_bytes + 2 * m * k + 2 * m * n
            fn = bench.failing(pack_error) if pack_error is not None else _timed_call(provider, packed, m, k, device)
            runner.add(
                label,
                x=m,
                provider=provider.name,
                fn=fn,
                shape=shape,
                dtype="float16",
                flops=2 * m * n * k,
                nbytes=nbytes,
            )
            added.append((provider.name, m, fn))
    return added


def _timed_call(provider: Provider, packed: tuple, m: int, k: int, device: torch.device) -> Callable[[], object]:
    """The provider's call on rotating copies of its inputs, verified against its reference first."""

    def make() -> tuple:
        return (_activations(m, k, provider.x_dtype, device), *(t.clone() for t in packed))

    rotating = bench.RotatingInputs(make, device=device)
    timed = lambda: provider.run(*rotating())
    if provider.reference is None:
        return timed
    x = _activations(m, k, provider.x_dtype, device)
    # the kernel and its reference see the same x and packed weights; both outputs are rounded to
    # x's dtype, which rel_bound's 2·u_dtype term allows (plus tf32 for fp32 on a GPU)
    bound = rel_bound(provider.x_dtype, k, device=device)
    return bench.verified(timed, lambda: provider.run(x, *packed), lambda: provider.reference(x, *packed), bound)


# ----------------------------------------------------------------------------- goals

# (provider prefix, case label, M predicate, target speedup over fp16 cuBLAS): the speed goals
GOALS = [
    ("ours int4-g128", "llm", lambda m: m == 1, 3.0),
    ("ours int4-g128", "llm", lambda m: m == 16, 2.5),
    ("ours int4-g128", "llm", lambda m: m == 64, 1.5),
    ("ours int4-g128", "llm", lambda m: m >= 1024, 0.9),
    ("ours int8", "llm", lambda m: m == 1, 1.8),
    ("ours w8a8", "llm", lambda m: m >= 2048, 1.5),
    ("ours ternary-2bit", "llm", lambda m: m == 1, 5.0),
    ("ours codebook-4bit", "llm", lambda m: m == 1, 2.5),
    ("ours xnor-1bit", "llm", lambda m: m <= 16, 8.0),  # M >= 256: reported, fp16 tensor cores may win
]


def goals_markdown(results: Sequence[bench.BenchResult]) -> str:
    lines = ["", "## Goals (speedup over fp16 torch.matmul)", "", "| provider | case | M | goal | measured | met |"]
    lines.append("|---|---|---:|---:|---:|---|")
    for provider, case_prefix, wants_m, target in GOALS:
        for r in results:
            if r.provider == provider and r.case.startswith(case_prefix) and wants_m(r.x):
                measured = "" if r.speedup is None else f"{r.speedup:.2f}"
                met = "" if r.speedup is None else ("yes" if r.speedup >= target else "no")
                lines.append(f"| {provider} | {r.case} | {r.x} | ≥ {target} | {measured} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench.common_arguments("Quantized GEMMs (int8, int4, W8A8, ternary, binary, codebook) vs fp16 cuBLAS.")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda":
        raise SystemExit("slimtorch.quant.bench measures GPU kernels: run it on a CUDA device (--device cuda)")
    torch.manual_seed(0)
    shapes = QUICK_SHAPES if args.quick else LLM_SHAPES + CONV_SHAPES
    m_values = QUICK_M_VALUES if args.quick else M_VALUES
    runner = bench.Bench(FAMILY, device=device, baseline=BASELINE)
    for label, k, n in shapes:
        add_case(runner, label, k, n, m_values, device)
    ceil = bench.ceilings(device)
    results = runner.run(ceil=ceil)
    env = bench.Environment.collect(device, ceilings=ceil)
    paths = bench.write_results(results, env, args.out, FAMILY)
    goals = goals_markdown(results)
    paths["md"].write_text(paths["md"].read_text() + goals)
    print(paths["md"].read_text())
    print("wrote", ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()

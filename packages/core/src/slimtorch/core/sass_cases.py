"""The kernels and real shapes the static SASS report (:mod:`slimtorch.core.sass`) compiles.

Each :class:`Case` calls one public launcher (``op.launcher``, the code a CUDA tensor runs) on
fake CUDA tensors of a real layer's shape inside :func:`slimtorch.core.capture.capture`; the
launches it records (every autotune config) are what gets compiled. Weight formats are built by
the packages' own benchmark helpers (``slimtorch.<pkg>.bench``), so the report follows the
packages' launchers and formats without a copy of their argument lists here.

Shapes: LLM linears (K×N = 4096×4096, 8192×8192, 4096→11008) at M = 1, 16, 64, 256, 2048 for the
quant and sparse GEMMs; the 1x1, depthwise and shuffle layers of MobileNetV2, MobileNetV3-Large
and ShuffleNetV2-1.0x (224², torchvision definitions) at batch 1 and 256 for convops. A package
that is not installed contributes no cases.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from slimtorch.core.capture import on_fake_device

LLM_SHAPES = ((4096, 4096), (8192, 8192), (4096, 11008))  # (K, N)
LLM_M = (1, 16, 64, 256, 2048)
QUICK_M = (1, 16, 2048)
CNN_BATCHES = (1, 256)
GEMV_MAX_M = 16  # rows at or below: the "gemv" budget regime

# 1x1 convolutions (in, out, H = W at the layer, activation) of torchvision's mobilenet_v2,
# mobilenet_v3_large and shufflenet_v2_x1_0 at 224² (a representative subset of each network).
POINTWISE_SHAPES: tuple[tuple[str, int, int, int, str], ...] = (
    ("mobilenet_v2 expand", 24, 144, 56, "relu6"),
    ("mobilenet_v2 project", 144, 24, 56, "none"),
    ("mobilenet_v2 expand", 96, 576, 14, "relu6"),
    ("mobilenet_v2 project", 960, 320, 7, "none"),
    ("mobilenet_v2 head", 320, 1280, 7, "relu6"),
    ("mobilenet_v3_large expand", 40, 120, 28, "relu"),
    ("mobilenet_v3_large expand", 112, 672, 14, "hardswish"),
    ("mobilenet_v3_large head", 160, 960, 7, "hardswish"),
    ("shufflenet_v2_x1_0 branch", 58, 58, 28, "relu"),
    ("shufflenet_v2_x1_0 branch", 116, 116, 14, "relu"),
    ("shufflenet_v2_x1_0 branch", 232, 232, 7, "relu"),
    ("shufflenet_v2_x1_0 conv5", 464, 1024, 7, "relu"),
)


@dataclass
class Case:
    """One (op, shape): ``run()`` calls the launcher inside ``capture()``."""

    family: str  # quant | sparse | convops
    op: str  # e.g. "int4-g128", "2:4", "depthwise"
    shape: str
    dims: dict
    run: Callable[[], None]
    regime: str  # gemv | gemm | conv: which budget row applies
    weights: float = 0.0  # weight elements the main loop streams (dense-equivalent; stored for BSR)
    weight_bytes: float = 0.0
    nbytes: float = 0.0  # minimum traffic: activations + weight format + output
    flops: float = 0.0
    outputs: int = 0
    dot_dtype: str = "float16"  # operand type of the products (tensor-core peak)
    tags: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.family} {self.op}"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def quant_cases(quick: bool = False) -> Iterator[Case]:
    if not _installed("slimtorch.quant"):
        return
    from slimtorch.quant import bench as qb

    shapes = LLM_SHAPES[:1] if quick else LLM_SHAPES
    for k, n in shapes:
        for provider in qb.providers(k, n):
            if not provider.name.startswith("ours"):
                continue
            op = provider.name.removeprefix("ours ")
            state: dict = {}

            def pack(provider=provider, k=k, n=n, state=state):
                if "packed" not in state:
                    state["packed"] = on_fake_device(
                        lambda device: provider.pack(torch.randn(n, k, device=device) / math.sqrt(k))
                    )
                return state["packed"]

            for m in QUICK_M if quick else LLM_M:
                x_dtype = torch.float16

                def run(provider=provider, m=m, k=k, pack=pack, x_dtype=x_dtype):
                    provider.run(torch.randn(m, k, device="cuda", dtype=x_dtype), *pack())

                yield Case(
                    "quant",
                    op,
                    f"M={m} K={k} N={n}",
                    {"M": m, "K": k, "N": n},
                    run,
                    "gemv" if m <= GEMV_MAX_M else "gemm",
                    weights=float(n * k),
                    weight_bytes=float(provider.weight_bytes),
                    nbytes=float(provider.weight_bytes + 2 * m * k + 2 * m * n),
                    flops=2.0 * m * n * k,
                    outputs=m * n,
                    dot_dtype={"w8a8": "int8", "xnor-1bit": "b1"}.get(op, "float16"),
                )


def xnor_conv_cases(quick: bool = False) -> Iterator[Case]:
    """slimtorch.quant's binary implicit-GEMM conv on a BNN ResNet-18's 3x3 layers (quant.bench shapes)."""
    if not _installed("slimtorch.quant"):
        return
    from slimtorch.quant import bench as qb

    for c, size, o, stride in qb.XNOR_CONV_SHAPES[:2] if quick else qb.XNOR_CONV_SHAPES:
        out_hw = (size - 1) // stride + 1
        for batch in CNN_BATCHES:

            def run(c=c, size=size, o=o, stride=stride, batch=batch):
                qb.xnor_conv_run(batch, c, size, o, stride, "cuda")

            pixels = batch * out_hw**2
            yield Case(
                "quant",
                "xnor-conv",
                f"bnn resnet18 3x3/s{stride} {c}->{o} {size}² batch {batch}",
                {"batch": batch, "M": pixels, "K": 9 * c, "N": o},
                run,
                "conv",
                weights=9.0 * c * o,
                weight_bytes=9.0 * c * o / 8,
                nbytes=batch * size * size * c / 8 + 9.0 * c * o / 8 + 2.0 * pixels * (o + 1),
                flops=2.0 * pixels * o * 9 * c,
                outputs=pixels * o,
                dot_dtype="b1",
            )


def sparse_cases(quick: bool = False) -> Iterator[Case]:
    if not _installed("slimtorch.sparse"):
        return
    from slimtorch.sparse import bench as sb

    shapes = LLM_SHAPES[:1] if quick else LLM_SHAPES
    for k, n in shapes:
        state: dict = {}

        def formats(k=k, n=n, state=state):
            if "fmt" not in state:
                state["fmt"] = on_fake_device(
                    lambda device: sb._weight_formats(
                        sb._pruned_weight(n, k, torch.device(device)), sb.LLM_BSR_BLOCK, True
                    )
                )
            return state["fmt"]

        for name, op in (("ours 2:4", "2:4"), ("ours 2:4 mma.sp", "2:4 mma.sp"), ("ours BSR 50%", "bsr-50%")):
            for m in QUICK_M if quick else LLM_M:

                def run(name=name, m=m, k=k, formats=formats):
                    fn = sb._providers(formats())[name][0]
                    fn(torch.randn(m, k, device="cuda", dtype=sb.DTYPE))

                if op == "bsr-50%":
                    weights = 0.5 * n * k  # stored blocks: half of them
                    weight_bytes = 2 * weights + 4 * (n // sb.LLM_BSR_BLOCK + 1 + weights / sb.LLM_BSR_BLOCK**2)
                else:
                    weights = float(n * k)
                    weight_bytes = n * k + n * k / 8  # fp16 values (N, K/2) + int32 meta (N, K/32)
                yield Case(
                    "sparse",
                    op,
                    f"M={m} K={k} N={n}",
                    {"M": m, "K": k, "N": n},
                    run,
                    "gemv" if m <= GEMV_MAX_M else "gemm",
                    weights=weights,
                    weight_bytes=weight_bytes,
                    nbytes=weight_bytes + 2 * m * k + 2 * m * n,
                    flops=2.0 * m * n * k * (0.5 if op == "bsr-50%" else 1.0),
                    outputs=m * n,
                )


def convops_cases(quick: bool = False) -> Iterator[Case]:
    if not _installed("slimtorch.convops"):
        return
    from slimtorch.convops import bench as cb
    from slimtorch.convops.depthwise import depthwise_conv2d
    from slimtorch.convops.pointwise import pointwise_conv2d

    batches = CNN_BATCHES
    dtype = torch.float16
    depthwise = cb.DEPTHWISE_SHAPES[::6] if quick else cb.DEPTHWISE_SHAPES
    for s in depthwise:
        out_hw = (s.size - 1) // s.stride + 1
        for batch in batches:

            def run(s=s, batch=batch):
                x = torch.randn(batch, s.channels, s.size, s.size, device="cuda", dtype=dtype)
                depthwise_conv2d.launcher(
                    x.contiguous(memory_format=torch.channels_last),
                    torch.randn(s.channels, 1, s.kernel, s.kernel, device="cuda", dtype=dtype),
                    scale=None,
                    shift=torch.randn(s.channels, device="cuda", dtype=dtype),  # the folded BN's shift
                    offsets=None,
                    stride=[s.stride] * 2,
                    padding=[s.kernel // 2] * 4,
                    dilation=[1, 1],
                    activation=s.activation,
                )

            outputs = batch * s.channels * out_hw**2
            yield Case(
                "convops",
                "depthwise",
                f"{s.model} dw{s.kernel}x{s.kernel}/s{s.stride} C{s.channels} {s.size}² batch {batch}",
                {"batch": batch, "C": s.channels, "H": s.size, "kernel": s.kernel, "stride": s.stride},
                run,
                "conv" if s.kernel <= 3 else "conv-k5",  # 5x5 layers: 25 taps, their own budget row
                nbytes=2.0 * (batch * s.channels * s.size**2 + outputs + s.channels * (s.kernel**2 + 1)),
                flops=2.0 * outputs * s.kernel**2,
                outputs=outputs,
            )
    for label, c_in, c_out, size, activation in POINTWISE_SHAPES[::4] if quick else POINTWISE_SHAPES:
        for batch in batches:

            def run(c_in=c_in, c_out=c_out, size=size, activation=activation, batch=batch):
                x = torch.randn(batch, c_in, size, size, device="cuda", dtype=dtype)
                x = x.contiguous(memory_format=torch.channels_last)
                weight = torch.randn(c_out, c_in, 1, 1, device="cuda", dtype=dtype)
                bias = torch.randn(c_out, device="cuda", dtype=dtype)
                pointwise_conv2d.launcher(
                    x,
                    weight,
                    scale=None,
                    shift=bias,
                    offsets=None,
                    groups=1,
                    in_shuffle=1,
                    out_shuffle=1,
                    stride=1,
                    activation=activation,
                )

            pixels = batch * size * size
            yield Case(
                "convops",
                "pointwise",
                f"{label} 1x1 {c_in}->{c_out} {size}² batch {batch}",
                {"batch": batch, "M": pixels, "K": c_in, "N": c_out},
                run,
                "conv",
                weights=float(c_in * c_out),
                weight_bytes=2.0 * c_in * c_out,
                nbytes=2.0 * (pixels * (c_in + c_out) + c_in * c_out + c_out),
                flops=2.0 * pixels * c_in * c_out,
                outputs=pixels * c_out,
            )
    for channels, size in cb.SHUFFLE_SHAPES[:1] if quick else cb.SHUFFLE_SHAPES:
        for batch in batches:
            for which, op in ((0, "shuffle_concat"), (1, "channel_shuffle")):

                def run(channels=channels, size=size, batch=batch, which=which):
                    entries = [
                        e for e in cb.shuffle_group((channels, size), batch, device="cuda", dtype=dtype, compile_=False)
                    ]
                    [e for e in entries if e.provider == "ours"][which].fn()

                outputs = batch * channels * size * size
                yield Case(
                    "convops",
                    op,
                    f"shufflenet_v2_x1_0 C{channels} {size}² batch {batch}",
                    {"batch": batch, "C": channels, "H": size},
                    run,
                    "conv",
                    nbytes=4.0 * outputs,
                    outputs=outputs,
                )
    for channels, size in cb.SHIFT_SHAPES[:1] if quick else cb.SHIFT_SHAPES:  # the grouped 3x3 shift (Triton)
        for batch in batches:

            def shift(channels=channels, size=size, batch=batch):
                entries = cb.shift_group((channels, size), batch, device="cuda", dtype=dtype, compile_=False)
                next(e for e in entries if e.provider == "ours (triton)").fn()

            outputs = batch * channels * size * size
            yield Case(
                "convops",
                "shift",
                f"grouped shift 3x3 C{channels} {size}² batch {batch}",
                {"batch": batch, "C": channels, "H": size},
                shift,
                "conv",
                nbytes=4.0 * outputs,
                outputs=outputs,
            )


STRUCTURED_D = 4096  # the block-circulant, low-rank and hashed shape (d x d)
STRUCTURED_M = (1, 1024)
CIRCULANT_SHAPES = ((1024, 8192), (1, 8192))  # (rows, d): the CirculantLinear goal, and batch 1
FWHT_SHAPES = ((1024, 8192), (1024, 1024))  # (rows, N): Fastfood's d = 8192 (two passes) and one pass


def structured_cases(quick: bool = False) -> Iterator[Case]:
    """slimtorch.structured's kernels at the issue's shapes (d = 4096 block-circulant b = 64 on both
    paths and the HashedNets GEMM, FWHT of 8192 and 1024 points), fp16 activations."""
    if not _installed("slimtorch.structured"):
        return
    from slimtorch.structured import block_circulant as bc
    from slimtorch.structured.circulant_fft import circulant_fft_mm
    from slimtorch.structured.hadamard import fwht
    from slimtorch.structured.hashing import hashed_mm

    d, b, dtype = STRUCTURED_D, 64, torch.float16
    p = q = d // b
    f = b // 2 + 1
    buckets = d * d // 64  # HashedNets at 1/64 of the virtual weights
    for m in STRUCTURED_M[1:] if quick else STRUCTURED_M:
        regime = "gemv" if m <= GEMV_MAX_M else "gemm"

        def spectral(m=m):
            x = torch.randn(m, d, device="cuda", dtype=dtype)
            spectrum = torch.randn(2, f, p, q, device="cuda", dtype=torch.float32)
            bc.block_circulant_fft_mm.launcher(x, spectrum, b, torch.randn(d, device="cuda", dtype=dtype))

        # the spectral kernel alone: X (M, q, 2F) and Y (M, p, 2F) in fp16, the fp32 spectrum, per frequency
        # a complex (M x q)(q x p) product (4 real tf32 dots); the DFT GEMMs around it are cuBLAS
        yield Case(
            "structured",
            "block-circulant-b64 fft",
            f"M={m} d={d}",
            {"M": m, "K": d, "N": d},
            spectral,
            regime,
            weights=float(f * p * q),
            weight_bytes=8.0 * f * p * q,
            nbytes=2.0 * 2 * f * m * (p + q) + 8.0 * f * p * q + 8.0 * f * p,
            flops=8.0 * m * p * q * f,
            outputs=m * p * f,
            dot_dtype="float32",
        )

        def direct(m=m):
            x = torch.randn(m, d, device="cuda", dtype=dtype)
            weight = torch.randn(p, q, b, device="cuda", dtype=dtype)
            bc.block_circulant_direct_mm.launcher(x, weight, torch.randn(d, device="cuda", dtype=dtype))

        yield Case(
            "structured",
            "block-circulant-b64 direct",
            f"M={m} d={d}",
            {"M": m, "K": d, "N": d},
            direct,
            regime,
            # M > 16: every W tile is expanded in registers (dense-equivalent); M <= 16: the x-expansion GEMV
            # streams the stored weights once per row
            weights=float(d * d if m > bc.GEMV_MAX_M else m * p * q * b),
            weight_bytes=2.0 * p * q * b,
            nbytes=2.0 * (p * q * b + 2 * m * d),
            flops=2.0 * m * d * d,
            outputs=m * d,
        )

        def hashed(m=m):
            x = torch.randn(m, d, device="cuda", dtype=dtype)
            weight = torch.randn(buckets, device="cuda", dtype=dtype)
            hashed_mm.launcher(x, weight, d, 7, torch.randn(d, device="cuda", dtype=dtype))

        yield Case(
            "structured",
            "hashed-1/64",
            f"M={m} d={d}",
            {"M": m, "K": d, "N": d},
            hashed,
            regime,
            weights=float(d * d),  # virtual weights, each hashed and gathered in registers
            weight_bytes=2.0 * buckets,
            nbytes=2.0 * (buckets + 2 * m * d),
            flops=2.0 * m * d * d,
            outputs=m * d,
        )
    for rows, n in CIRCULANT_SHAPES[:1] if quick else CIRCULANT_SHAPES:

        def circulant(rows=rows, n=n):
            x = torch.randn(rows, n, device="cuda", dtype=dtype)
            spectrum = torch.randn(2, n // 2 + 1, device="cuda", dtype=torch.float32)
            circulant_fft_mm.launcher(x, spectrum, n, n, torch.randn(n, device="cuda", dtype=dtype))

        yield Case(
            "structured",
            "circulant fft",
            f"M={rows} d={n}",
            {"rows": rows, "N": n},
            circulant,
            "conv",
            nbytes=2.0 * (2 * rows * n + n) + 8.0 * (n // 2 + 1),  # x read and y written once, the spectrum
            flops=2 * 5.0 * (rows / 2) * n * math.log2(n),  # two complex FFTs per pair of rows, 5 N log2 N each
            outputs=rows * n,
            dot_dtype="float32",
        )
    for rows, n in FWHT_SHAPES[:1] if quick else FWHT_SHAPES:

        def transform(rows=rows, n=n):
            fwht.launcher(torch.randn(rows, n, device="cuda", dtype=dtype), 1.0)

        yield Case(
            "structured",
            "fwht",
            f"rows={rows} N={n}",
            {"rows": rows, "N": n},
            transform,
            "conv",
            nbytes=2.0 * 2 * rows * n,  # one read and one write of every element (the goal: copy bandwidth)
            outputs=rows * n,
        )


def all_cases(quick: bool = False) -> list[Case]:
    """Every family's cases; a family whose helpers fail to load gives one case that reports why."""
    cases: list[Case] = []
    makers = (
        ("quant", quant_cases),
        ("quant", xnor_conv_cases),
        ("sparse", sparse_cases),
        ("convops", convops_cases),
        ("structured", structured_cases),
    )
    for family, make in makers:
        try:
            cases.extend(make(quick))
        except Exception as err:  # a package changed its bench helpers: report it, keep the others

            def broken(err=err, family=family):
                raise RuntimeError(f"building the {family} cases failed: {type(err).__name__}: {err}")

            cases.append(Case(family, "cases", "-", {}, broken, "error"))
    return cases

"""Every Triton kernel of slimtorch.quant as AOT specialisations (see slimtorch.core.aot): every
weight format on both launch paths (split-K GEMV and tiles; dtypes in turn), the
per-token quantizer and the int8 GEMM, with the meta-parameters the launchers pass and the
arguments specialised as 16-divisible (as they are for aligned shapes). ``quick=False`` adds every
autotune config."""

import itertools

from slimtorch.core.aot import KernelSpec, _jit_function
from slimtorch.quant import dequant_mm, w8a8_mm

# format, bits, weight pointer, scale pointer, aux (zeros / codebook) pointer, group size
FORMATS = [
    ("int8", 8, "*i8", "*fp32", "*fp32", 0),
    ("int4", 4, "*i32", "*fp16", "*u8", 128),
    ("int4", 4, "*i32", "*bf16", "*u8", 32),
    ("lowbit", 1, "*i32", "*fp32", "*fp32", 0),
    ("lowbit", 2, "*i32", "*fp32", "*fp32", 0),
    ("codebook", 2, "*i32", "*fp32", "*fp32", 0),
    ("codebook", 4, "*i32", "*fp32", "*fp32", 0),
    ("codebook", 8, "*i32", "*fp32", "*fp32", 0),
]


def _aligned(kernel, constexprs, unaligned=("M", "M_BUCKET")):
    return tuple(n for n in _jit_function(kernel).arg_names if n not in constexprs and n not in unaligned)


def aot_specs(quick: bool):
    small = dequant_mm.SMALL_M_CONFIG_LIST[:1] if quick else dequant_mm.SMALL_M_CONFIG_LIST
    large = dequant_mm.LARGE_M_CONFIG_LIST[:1] if quick else dequant_mm.LARGE_M_CONFIG_LIST
    paths = [(c, 4) for c in small] + [(c, 1) for c in large]
    dtypes = itertools.cycle(["fp16", "bf16", "fp32"])
    for ((fmt, bits, w, scale, aux, group), (config, split)), x in zip(
        itertools.product(FORMATS, paths), dtypes, strict=False
    ):
        out = x if split == 1 else "fp32"
        pointers = dict(x_ptr="*" + x, w_ptr=w, scale_ptr=scale, aux_ptr=aux, bias_ptr="*fp32", out_ptr="*" + out)
        meta = dict(GROUP_SIZE=group, FORMAT=fmt, BITS=bits, HAS_BIAS=True, SPLIT_K=split, DOT_IN_FP32=False)
        yield KernelSpec.from_config(
            f"dequant_mm {fmt}{bits} g{group} x={x} split={split} {config.kwargs}",
            dequant_mm._dequant_mm_kernel,
            pointers,
            meta,
            config,
            aligned=_aligned(dequant_mm._dequant_mm_kernel, {**meta, **config.kwargs}),
        )
    meta = dict(BLOCK_M=4, BLOCK_K=1024)
    yield KernelSpec(
        "per-token quantizer",
        w8a8_mm._quantize_per_token_kernel,
        {"x_ptr": "*fp16", "q_ptr": "*i8", "scale_ptr": "*fp32"},
        meta,
        aligned=_aligned(w8a8_mm._quantize_per_token_kernel, meta),
    )
    for config in w8a8_mm.INT8_MM_CONFIG_LIST[:1] if quick else w8a8_mm.INT8_MM_CONFIG_LIST:
        pointers = {
            "qx_ptr": "*i8",
            "x_scale_ptr": "*fp32",
            "qw_ptr": "*i8",
            "w_scale_ptr": "*fp32",
            "bias_ptr": "*fp32",
            "out_ptr": "*bf16",
        }
        meta = dict(HAS_BIAS=True)
        yield KernelSpec.from_config(
            f"int8 mm {config.kwargs}",
            w8a8_mm._int8_mm_kernel,
            pointers,
            meta,
            config,
            aligned=_aligned(w8a8_mm._int8_mm_kernel, {**meta, **config.kwargs}),
        )

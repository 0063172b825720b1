"""Every Triton kernel of slimtorch.sparse as AOT specialisations (see slimtorch.core.aot):
``quick`` = the first autotune config(s) of each kernel in each dtype and mode; otherwise every
config (``python -m slimtorch.core.aot tests/sparse/aot_specs.py --all``)."""

from slimtorch.core.aot import KernelSpec
from slimtorch.sparse import bsr, sparse24

POINTER = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32"}


def aot_specs(quick: bool):
    for dtype, p in POINTER.items():
        mm_pointers = dict(x_ptr=p, values_ptr=p, meta_ptr="*i32", bias_ptr=p, out_ptr=p, partial_ptr="*fp32")
        gemv_configs = sparse24.GEMV_CONFIGS[:1] if quick else sparse24.GEMV_CONFIGS
        for config in gemv_configs:
            for split in (False, True):
                for block_m in (1, 4):
                    flags = dict(HAS_BIAS=True, ACTIVATION="gelu", SPLIT=split, BLOCK_M=block_m)
                    yield KernelSpec.from_config(
                        f"gemv {dtype} split={split} M<={block_m} {config.kwargs}",
                        sparse24._sparse24_gemv_kernel,
                        mm_pointers,
                        flags,
                        config,
                    )
        for config in sparse24.MM_CONFIGS[:2] if quick else sparse24.MM_CONFIGS:
            for split in (False, True):
                flags = dict(HAS_BIAS=True, ACTIVATION="silu", SPLIT=split, UPCAST=False)
                yield KernelSpec.from_config(
                    f"mm {dtype} split={split} {config.kwargs}",
                    sparse24._sparse24_mm_kernel,
                    mm_pointers,
                    flags,
                    config,
                )
        bsr_pointers = dict(x_ptr=p, crow_ptr="*i32", col_ptr="*i32", values_ptr=p, bias_ptr=p, out_ptr=p)
        for config in bsr.BSR_CONFIGS[:1] if quick else bsr.BSR_CONFIGS:
            for block in (16, 32, 64):
                flags = dict(HAS_BIAS=True, ACTIVATION="relu", BLOCK_SIZE=block, UPCAST=False)
                yield KernelSpec.from_config(
                    f"bsr {dtype} bs={block} {config.kwargs}", bsr._bsr_mm_kernel, bsr_pointers, flags, config
                )

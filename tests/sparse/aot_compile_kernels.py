"""Compile this package's Triton kernels ahead of time for a real GPU arch, without a GPU.

The interpreter is more permissive than the compiler (layouts, reshape/join, dtypes), so the
suite also builds every kernel to a cubin for sm_90 with Triton's own compiler and ptxas
(test_triton_compile.py runs ``--quick``: the first autotune config of each kernel in each dtype
and mode). ``python tests/sparse/aot_compile_kernels.py [arch]`` compiles every config. Must run
without TRITON_INTERPRET (the kernels must be real JITFunctions).
"""

import argparse
import time

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from slimtorch.sparse import _common, bsr, sparse24

POINTER = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32"}


def compile_kernel(jit, pointers: dict, constexprs: dict, config: triton.Config, arch: int) -> None:
    """One specialisation of ``jit`` (other arguments are i32) compiled to a cubin for sm_<arch>."""
    signature = {name: "constexpr" if name in constexprs else pointers.get(name, "i32") for name in jit.arg_names}
    source = ASTSource(jit, signature, constexprs=constexprs)
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    assert compiled.asm["cubin"][:4] == b"\x7fELF"


def specialisations(quick: bool):
    """(name, jit, pointers, constexprs, config) for every kernel, dtype and mode."""
    for dtype in ("fp16", "bf16", "fp32"):
        p = POINTER[dtype]
        mm_pointers = dict(x_ptr=p, values_ptr=p, meta_ptr="*i32", bias_ptr=p, out_ptr=p, partial_ptr="*fp32")
        gemv_configs = sparse24.GEMV_CONFIGS[:1] if quick else sparse24.GEMV_CONFIGS
        for config, split, block_m in [(c, s, m) for c in gemv_configs for s in (False, True) for m in (1, 4)]:
            flags = dict(HAS_BIAS=True, ACTIVATION="gelu", SPLIT=split, BLOCK_M=block_m, **config.kwargs)
            yield (
                f"gemv {dtype} split={split} M<={block_m}",
                sparse24._sparse24_gemv_kernel.fn,
                mm_pointers,
                flags,
                config,
            )
        mm_configs = sparse24.MM_CONFIGS[:2] if quick else sparse24.MM_CONFIGS
        for config, split in [(c, s) for c in mm_configs for s in (False, True)]:
            flags = dict(HAS_BIAS=True, ACTIVATION="silu", SPLIT=split, UPCAST=False, **config.kwargs)
            yield (
                f"mm {dtype} split={split} {config.kwargs}",
                sparse24._sparse24_mm_kernel.fn,
                mm_pointers,
                flags,
                config,
            )
        bsr_pointers = dict(x_ptr=p, crow_ptr="*i32", col_ptr="*i32", values_ptr=p, bias_ptr=p, out_ptr=p)
        bsr_configs = bsr.BSR_CONFIGS[:1] if quick else bsr.BSR_CONFIGS
        for config, block in [(c, b) for c in bsr_configs for b in (16, 32, 64)]:
            flags = dict(HAS_BIAS=True, ACTIVATION="relu", BLOCK_SIZE=block, UPCAST=False, **config.kwargs)
            yield f"bsr {dtype} bs={block}", bsr._bsr_mm_kernel.fn, bsr_pointers, flags, config
        flags = dict(
            HAS_BIAS=True, ACTIVATION="hardswish", BLOCK_M=_common.REDUCE_BLOCK_M, BLOCK_N=_common.REDUCE_BLOCK_N
        )
        pointers = dict(partial_ptr="*fp32", bias_ptr=p, out_ptr=p)
        yield f"splitk reduce {dtype}", _common._splitk_reduce_kernel, pointers, flags, triton.Config({}, num_warps=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", nargs="?", type=int, default=90)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    start = time.time()
    todo = list(specialisations(args.quick))
    for name, jit, pointers, constexprs, config in todo:
        try:
            compile_kernel(jit, pointers, constexprs, config, args.arch)
        except Exception as err:
            raise SystemExit(f"{name} failed to compile for sm_{args.arch}: {type(err).__name__}: {err}") from err
    print(f"compiled {len(todo)} kernel specialisations for sm_{args.arch} in {time.time() - start:.0f}s")


if __name__ == "__main__":
    main()

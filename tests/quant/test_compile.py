"""Every Triton kernel of the package compiles for sm_90 without a GPU.

The interpreter accepts programs the compiler rejects (layouts, reshapes, dtypes, missing
meta-parameters), so each kernel family is compiled ahead of time (triton's bundled ptxas, no
driver needed) in a subprocess without TRITON_INTERPRET: every weight format on both launch paths,
the split-K reduction, the per-token quantizer and the int8 GEMM, with the meta-parameters the
launchers pass and arguments specialised as 16-divisible, as they are for aligned shapes.
"""

import os
import subprocess
import sys
import textwrap

COMPILE_ALL = textwrap.dedent(
    """
    import itertools

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from slimtorch.quant import dequant_mm, w8a8_mm

    def compile_for_sm90(fn, types, constexprs, config=None):
        signature, consts = {}, {}
        for i, name in enumerate(fn.arg_names):
            if name in constexprs:
                signature[name], consts[(i,)] = "constexpr", constexprs[name]
            else:
                signature[name] = types[name]
        attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
                 if name not in constexprs and name not in ("M", "M_BUCKET")}
        options = {"num_warps": config.num_warps, "num_stages": config.num_stages} if config else {}
        triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs),
                       target=GPUTarget("cuda", 90, 32), options=options)

    SCALARS = {"M": "i32", "N": "i32", "K": "i32", "M_BUCKET": "i32", "stride_xm": "i32", "stride_xk": "i32",
               "stride_om": "i32"}
    FORMATS = [("int8", 8, "*i8", "*fp32", "*fp32", 0), ("int4", 4, "*i32", "*fp16", "*u8", 128),
               ("int4", 4, "*i32", "*bf16", "*u8", 32), ("lowbit", 1, "*i32", "*fp32", "*fp32", 0),
               ("lowbit", 2, "*i32", "*fp32", "*fp32", 0), ("codebook", 2, "*i32", "*fp32", "*fp32", 0),
               ("codebook", 4, "*i32", "*fp32", "*fp32", 0), ("codebook", 8, "*i32", "*fp32", "*fp32", 0)]
    PATHS = [(dequant_mm.SMALL_M_CONFIG_LIST[0], 4), (dequant_mm.LARGE_M_CONFIG_LIST[0], 1)]
    cases = list(itertools.product(FORMATS, PATHS))  # every format on both paths, dtypes in turn
    dtypes = itertools.cycle(["fp16", "bf16", "fp32"])
    for ((fmt, bits, w, scale, aux, group), (config, split)), x in zip(cases, dtypes):
        out = x if split == 1 else "fp32"
        types = dict(SCALARS, x_ptr="*" + x, w_ptr=w, scale_ptr=scale, aux_ptr=aux, bias_ptr="*fp32", out_ptr="*" + out)
        meta = dict(config.kwargs, GROUP_SIZE=group, FORMAT=fmt, BITS=bits, HAS_BIAS=True, SPLIT_K=split,
                    DOT_IN_FP32=False)
        compile_for_sm90(dequant_mm._dequant_mm_kernel, types, meta, config)
    compile_for_sm90(dequant_mm._split_k_sum_kernel,
                     {"partial_ptr": "*fp32", "bias_ptr": "*fp32", "out_ptr": "*bf16", "M": "i32", "N": "i32",
                      "stride_om": "i32"}, dict(HAS_BIAS=True, SPLIT_K=3, BLOCK_M=16, BLOCK_N=64))
    compile_for_sm90(w8a8_mm._quantize_per_token_kernel,
                     {"x_ptr": "*fp16", "q_ptr": "*i8", "scale_ptr": "*fp32", "M": "i32", "K": "i32",
                      "stride_xm": "i32", "stride_xk": "i32"}, dict(BLOCK_M=4, BLOCK_K=1024))
    config = w8a8_mm.INT8_MM_CONFIG_LIST[0]
    compile_for_sm90(w8a8_mm._int8_mm_kernel,
                     {"qx_ptr": "*i8", "x_scale_ptr": "*fp32", "qw_ptr": "*i8", "w_scale_ptr": "*fp32",
                      "bias_ptr": "*fp32", "out_ptr": "*bf16", "M": "i32", "N": "i32", "K": "i32", "M_BUCKET": "i32"},
                     dict(config.kwargs, HAS_BIAS=True), config)
    print("compiled")
    """
)


def test_every_kernel_compiles_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SLIMTORCH_FORCE_TRITON")}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_ALL], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-4000:]

"""Every Triton kernel of slimtorch.structured as AOT specialisations (see slimtorch.core.aot): the
spectral multiply-accumulate (fp32 planes; IEEE and tf32 dots), the direct block-circulant GEMM
(b = 8 and 64, fp16 / bf16 / fp32), the FWHT pass (one and two passes: N = 8192, 1024, 64) and the
HashedNets GEMM (both orientations), with the meta-parameters the launchers pass and the sizes and
strides specialised as 16-divisible. ``quick=False`` adds every autotune config."""

import itertools

from slimtorch.core.aot import KernelSpec, _jit_function
from slimtorch.structured import block_circulant, circulant_fft, hadamard, hashing


def _aligned(kernel, constexprs, unaligned=("M", "M_BUCKET", "R", "P", "Q", "F", "seed", "scale", "S")):
    return tuple(n for n in _jit_function(kernel).arg_names if n not in constexprs and n not in unaligned)


def aot_specs(quick: bool):
    spectral = block_circulant.SPECTRAL_CONFIG_LIST[:1] if quick else block_circulant.SPECTRAL_CONFIG_LIST
    # fp32 spectra (cuFFT path, IEEE dots) and 16-bit ones (DFT-GEMM path, tf32 dots, 16-bit Y)
    for config, (precision, dtype) in itertools.product(
        spectral, (("ieee", "fp32"), ("tf32", "fp16"), ("tf32", "bf16"))
    ):
        meta = dict(PRECISION=precision, HAS_BIAS=dtype != "fp32")  # the DFT-GEMM path adds the bias spectrum
        kernel = block_circulant._spectral_mac_kernel
        unaligned = ("M", "M_BUCKET", "P", "Q", "F", "stride_xf", "stride_xc", "stride_yf", "stride_yc", "stride_yp")
        yield KernelSpec.from_config(
            f"block-circulant spectral MAC {precision} {dtype} {config.kwargs}",
            kernel,
            {"x_ptr": f"*{dtype}", "w_ptr": "*fp32", "y_ptr": f"*{dtype}", "bias_ptr": "*fp32"},
            meta,
            config,
            aligned=_aligned(kernel, {**meta, **config.kwargs}, unaligned=unaligned),
        )
    direct = block_circulant.DIRECT_CONFIG_LIST[:2] if quick else block_circulant.DIRECT_CONFIG_LIST
    dtypes = itertools.cycle(["fp16", "bf16", "fp32"])
    for (config, b), dtype in zip(itertools.product(direct, (8, 64)), dtypes, strict=False):
        meta = dict(B=b, HAS_BIAS=True, UPCAST=False)
        kernel = block_circulant._direct_kernel
        pointers = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "bias_ptr": f"*{dtype}", "out_ptr": f"*{dtype}"}
        yield KernelSpec.from_config(
            f"block-circulant direct b={b} {dtype} {config.kwargs}",
            kernel,
            pointers,
            meta,
            config,
            aligned=_aligned(kernel, {**meta, **config.kwargs}),
        )
    gemv = block_circulant.GEMV_CONFIG_LIST[:2] if quick else block_circulant.GEMV_CONFIG_LIST
    # the x-expansion GEMV: split (aligned b = 64) and unsplit (b = 6: the per-tile gather pattern)
    for (config, (b, split)), dtype in zip(itertools.product(gemv, ((64, True), (6, False))), dtypes, strict=False):
        meta = dict(B=b, ALIGNED=True, HAS_BIAS=True, SPLIT=split, UPCAST=False)
        kernel = block_circulant._direct_gemv_kernel
        pointers = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "bias_ptr": f"*{dtype}", "out_ptr": f"*{dtype}"}
        pointers.update(partial_ptr="*fp32", counter_ptr="*i32")
        yield KernelSpec.from_config(
            f"block-circulant direct gemv b={b} split={split} {dtype} {config.kwargs}",
            kernel,
            pointers,
            meta,
            config,
            aligned=_aligned(kernel, {**meta, **config.kwargs}),
        )
    for n, dtype in ((8192, "fp16"), (1024, "fp32"), (64, "bf16")):  # the fused circulant FFT (no autotuning)
        meta = dict(N=n, LOG_N=n.bit_length() - 1, HAS_BIAS=True)
        kernel = circulant_fft._circulant_fft_kernel
        pointers = {
            "x_ptr": f"*{dtype}",
            "spec_ptr": "*fp32",
            "tw_ptr": "*fp32",
            "bias_ptr": f"*{dtype}",
            "out_ptr": f"*{dtype}",
        }
        yield KernelSpec(
            f"circulant fft N={n} {dtype}",
            kernel,
            pointers,
            meta,
            num_warps=circulant_fft.launch_meta(n)["num_warps"],
            aligned=_aligned(kernel, meta, unaligned=("R", "K", "OUT")),
        )
    for n, dtype in ((8192, "fp16"), (1024, "fp32"), (64, "bf16")):
        meta = dict(N=n, LOG_N=n.bit_length() - 1, BLOCK_R=hadamard.fwht_launch_meta(n)["BLOCK_R"])
        yield KernelSpec(
            f"fwht N={n} {dtype}",
            hadamard._fwht_kernel,
            {"x_ptr": f"*{dtype}", "out_ptr": f"*{dtype}"},
            meta,
            num_warps=hadamard.fwht_launch_meta(n)["num_warps"],
            scalars={"scale": "fp32"},
            aligned=_aligned(hadamard._fwht_kernel, meta),
        )
    hashed = hashing.HASHED_CONFIG_LIST[:1] if quick else hashing.HASHED_CONFIG_LIST
    for config, transposed in itertools.product(hashed, (False, True)):
        meta = dict(TRANSPOSED=transposed, HAS_BIAS=not transposed, UPCAST=False)
        kernel = hashing._hashed_mm_kernel
        pointers = {"x_ptr": "*fp16", "w_ptr": "*fp16", "bias_ptr": "*fp16", "out_ptr": "*fp16"}
        yield KernelSpec.from_config(
            f"hashed mm transposed={transposed} {config.kwargs}",
            kernel,
            pointers,
            meta,
            config,
            aligned=_aligned(kernel, {**meta, **config.kwargs}),
        )

"""The CUDA-core weight-only GEMV (``slimtorch.quant.dequant_gemv``, M <= GEMV_MAX_M) for int8, 1/2-bit,
codebook (2..8 bits) and power-of-two weights: through each op (its routing) against the op's pure-torch
reference by rel_bound(dtype, K); the launcher against its own reference on raw words (every code value);
NaN rows, single-launch split-K, every autotune config, the codebook's two addressings, and the ops'
dispatch by measurement (fake timers). Outputs are poisoned by the suite's SLIMTORCH_POISON_OUTPUTS=1."""

import importlib

import pytest
import torch

from slimtorch.core import measured
from slimtorch.core.testing import assert_rel_close, order_measurer, randn, rel_bound
from slimtorch.core.tuning import all_configs, use_config
from slimtorch.quant import dequant_gemv, formats, pow2
from slimtorch.quant.dequant_mm import split_plan

from .helpers import activations, assert_matches_reference

# the op modules by importlib (the package exports some ops under the module names)
MODULES = {
    fmt: importlib.import_module(f"slimtorch.quant.{name}")
    for fmt, name in [("int8", "int8_mm"), ("lowbit", "lowbit_mm"), ("codebook", "codebook_mm"), ("pow2", "pow2_mm")]
}
OPS = {
    "int8": MODULES["int8"].int8_weight_mm,
    "lowbit": MODULES["lowbit"].lowbit_weight_mm,
    "codebook": MODULES["codebook"].codebook_mm,
    "pow2": MODULES["pow2"].pow2_weight_mm,
}
codebook_mm = MODULES["codebook"]


def _weights(fmt: str, bits: int, n: int, k: int, seed: int) -> tuple:
    """The op's weight arguments after x (``bits``: the op's own, e.g. codebook index bits)."""
    w = randn((n, k), seed=seed)
    if fmt == "int8":
        return tuple(formats.quantize_int8(w))
    if fmt == "lowbit":
        lb = formats.quantize_binary(w) if bits == 1 else formats.quantize_ternary(w, asymmetric=True)
        return lb.qweight, lb.pos_scale, lb.neg_scale, bits
    if fmt == "codebook":
        cb = formats.quantize_codebook(w, bits)
        return cb.qweight, cb.codebook, bits
    p = pow2.quantize_pow2(w, bits)
    return p.qweight, p.exponent, bits


# (format, bits, M, K, N, dtype, bias). The interpreter runs the first config: BLOCK_N = 64, BLOCK_K = 64;
# K % 64 == 0, N % 64 == 0 and M in (1, 2) run the mask-free (EVEN) tiles. K = 520 plans 2 splits.
CASES = [
    ("int8", 8, 1, 77, 45, torch.float32, True),
    ("int8", 8, 2, 128, 64, torch.float16, False),  # EVEN
    ("int8", 8, 1, 520, 37, torch.bfloat16, True),  # split-K
    ("lowbit", 1, 1, 70, 37, torch.float32, True),  # K: no multiple of the 32-code word
    ("lowbit", 1, 2, 128, 64, torch.bfloat16, False),  # EVEN
    ("lowbit", 2, 2, 45, 33, torch.float16, True),
    ("lowbit", 2, 1, 520, 37, torch.float32, False),  # split-K, TTQ (pos != neg)
    ("codebook", 2, 1, 61, 19, torch.float32, True),
    ("codebook", 3, 2, 37, 45, torch.bfloat16, False),  # 3-bit indices stored in 4 bits
    ("codebook", 4, 1, 520, 37, torch.float16, True),  # split-K
    ("codebook", 4, 2, 128, 64, torch.float32, False),  # EVEN
    ("codebook", 6, 2, 29, 26, torch.float16, False),  # 8-bit storage
    ("codebook", 8, 1, 43, 21, torch.float32, True),
    ("pow2", 3, 2, 35, 27, torch.float16, True),
    ("pow2", 4, 1, 64, 64, torch.float32, False),  # EVEN
    ("pow2", 5, 1, 520, 37, torch.bfloat16, True),  # split-K, 8-bit storage
]


@pytest.mark.parametrize(("fmt", "bits", "m", "k", "n", "dtype", "with_bias"), CASES)
def test_gemv_matches_the_op_reference(device, monkeypatch, fmt, bits, m, k, n, dtype, with_bias):
    # the kernel serves any M; M = 2 for int8 / pow2 (GEMV_MAX_M 1) still runs it here (routing: below)
    monkeypatch.setitem(dequant_gemv.GEMV_MAX_M, fmt, max(m, dequant_gemv.GEMV_MAX_M[fmt]))
    calls = []
    launch = dequant_gemv.launch_dequant_gemv
    monkeypatch.setattr(MODULES[fmt], "launch_dequant_gemv", lambda *a: calls.append(a[1]) or launch(*a))
    if k == 520:  # the split-K cases really split (the interpreter's 4 SMs)
        assert split_plan(m, n, k, torch.device(device)).splits > 1
    weights = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in _weights(fmt, bits, n, k, seed=k))
    bias = randn((n,), device=device, seed=n) if with_bias else None
    x = activations(m, k, dtype, device, seed=m + k)
    assert_matches_reference(OPS[fmt], x, *weights, bias=bias)
    assert calls == [fmt]


def _raw_words(fmt: str, bits: int, n: int, k: int, gen: torch.Generator) -> tuple:
    """Launcher arguments with random words: every code value in every position (lowbit's unused code 2,
    pow2's unused exponents, the sign bit set in half of the words)."""
    if fmt == "int8":
        return torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=gen), torch.rand(n, generator=gen), None
    words = torch.randint(-(2**31), 2**31 - 1, (formats.words_per_column(k, bits), n), dtype=torch.int32, generator=gen)
    if fmt == "lowbit":
        return words, torch.rand(n, generator=gen) + 0.5, torch.rand(n, generator=gen) + 0.5
    if fmt == "codebook":
        return words, torch.randn(2**bits, generator=gen), None
    return words, torch.tensor([-3], dtype=torch.int32), None


@pytest.mark.parametrize(("fmt", "bits"), [("int8", 8), ("lowbit", 1), ("lowbit", 2), ("codebook", 2),
                                           ("codebook", 4), ("codebook", 8), ("pow2", 4), ("pow2", 8)])  # fmt: skip
def test_launcher_decodes_every_code(monkeypatch, fmt, bits):
    monkeypatch.setitem(dequant_gemv.GEMV_MAX_M, fmt, 2)
    gen = torch.Generator().manual_seed(bits)
    k, n = 96, 40
    w, scale, aux = _raw_words(fmt, bits, n, k, gen)
    x = randn((2, k), seed=bits)
    out = dequant_gemv.launch_dequant_gemv(x, fmt, bits, w, scale, aux, None, n)
    ref = dequant_gemv.dequant_gemv_reference(x.double(), fmt, bits, w, scale, aux, None, n)
    assert_rel_close(out, ref, rel_bound(torch.float32, k), name=f"{fmt} {bits}")


@pytest.mark.parametrize("fmt", sorted(OPS))
def test_gemv_nan_rows(device, monkeypatch, fmt):
    monkeypatch.setitem(dequant_gemv.GEMV_MAX_M, fmt, 2)
    bits = {"int8": 8, "lowbit": 2, "codebook": 4, "pow2": 5}[fmt]
    weights = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in _weights(fmt, bits, 33, 70, seed=3))
    x = activations(2, 70, torch.float16, device, seed=2)
    x[1, 7] = float("nan")
    out = OPS[fmt](x, *weights)
    ref = OPS[fmt].get_reference()(x.double(), *weights)
    assert out[1].isnan().all() and ref[1].isnan().all()
    assert_rel_close(out[:1], ref[:1], rel_bound(torch.float16, 70))


def test_gemv_routes_by_m_and_rejects_more_rows(monkeypatch):
    """M = GEMV_MAX_M + 1 goes to the tile kernel; the launcher refuses it, naming the limit."""
    tiles = []
    monkeypatch.setattr(codebook_mm, "launch_dequant_mm", lambda *a: tiles.append(a[0].shape[0]) or a[0][:, :1])
    qweight, codebook, bits = _weights("codebook", 4, 8, 64, seed=1)
    m = dequant_gemv.GEMV_MAX_M["codebook"] + 1
    codebook_mm.launch_codebook_mm(torch.zeros(m, 64), qweight, codebook, bits)
    assert tiles == [m]
    expected = rf"x: expected at most GEMV_MAX_M = {m - 1} rows for the codebook GEMV, got {m}"
    with pytest.raises(ValueError, match=expected):
        dequant_gemv.launch_dequant_gemv(torch.zeros(m, 64), "codebook", 4, qweight, codebook, None, None, 8)
    with pytest.raises(ValueError, match=r"fmt: expected one of \('int8', 'lowbit', 'codebook', 'pow2'\), got 'int4'"):
        dequant_gemv.launch_dequant_gemv(torch.zeros(1, 64), "int4", 4, qweight, codebook, None, None, 8)


@pytest.mark.parametrize("table_dtype", [torch.float32, torch.bfloat16])
def test_codebook_table_addressing_aligned_and_not(table_dtype):
    """8-bit storage gathers per code: a table at a multiple of its size takes the ORed-address gather
    (byte offsets c << log2(element size)); one at an odd offset the plain one."""
    qweight, codebook, bits = _weights("codebook", 5, 37, 61, seed=4)  # 32 entries, stored in 8 bits
    codebook = codebook.to(table_dtype)
    n = codebook.numel()
    span = n * codebook.element_size()  # a power of two
    buf = torch.zeros(4 * n, dtype=table_dtype)
    start = (-buf.data_ptr() % span) // codebook.element_size()
    aligned = buf[start : start + n].copy_(codebook)
    shifted = buf[start + n + 1 : start + 2 * n + 1].copy_(codebook)  # one element off the alignment
    assert dequant_gemv._aligned_table(aligned) and not dequant_gemv._aligned_table(shifted)
    codebook = aligned
    x = randn((1, 61), seed=5)
    ref = codebook_mm.codebook_mm.get_reference()(x.double(), qweight, codebook, bits)
    for table in (codebook, shifted):
        assert_rel_close(codebook_mm.codebook_mm(x, qweight, table, bits), ref, rel_bound(torch.float32, 61))


PACKED_CONFIGS = range(len(all_configs(dequant_gemv._dequant_gemv)))
INT8_CONFIGS = range(len(all_configs(dequant_gemv._int8_gemv)))


@pytest.mark.parametrize(
    ("kernel", "index"), [("packed", i) for i in PACKED_CONFIGS] + [("int8", i) for i in INT8_CONFIGS]
)
def test_gemv_every_config(monkeypatch, kernel, index):
    """Each autotune config (the interpreter keeps only the first), masked and EVEN shapes alternating;
    the packed configs over 1-bit, 2-bit and 8-bit codes in turn."""
    monkeypatch.setitem(dequant_gemv.GEMV_MAX_M, "int8", 2)
    monkeypatch.setitem(dequant_gemv.GEMV_MAX_M, "pow2", 2)
    tuner = dequant_gemv._int8_gemv if kernel == "int8" else dequant_gemv._dequant_gemv
    config = all_configs(tuner)[index]
    fmt, bits = ("int8", 8) if kernel == "int8" else [("lowbit", 1), ("codebook", 2), ("pow2", 5)][index % 3]
    k, n = (256, 512) if index % 2 else (97, 37)
    weights = _weights(fmt, bits, n, k, seed=index)
    x = randn((2, k), seed=index)
    with use_config(tuner, config):
        out = OPS[fmt](x, *weights)
        assert tuner.best_config == config
    ref = OPS[fmt].get_reference()(x.double(), *weights)
    assert_rel_close(out, ref, rel_bound(torch.float32, k), name=f"config {config}")


@pytest.mark.parametrize("fmt", ["lowbit", "codebook", "pow2"])
@pytest.mark.parametrize(("times", "expected"), [((2.0, 1.0), "torch dequant+F.linear"), ((1.0, 1.0), "triton")])
def test_measured_dispatch(device, fmt, times, expected):
    """Each op times our launcher against dequantize + F.linear once per bucket, runs the faster
    (ties: ours), and both paths match the reference; ``op.launcher`` stays our kernel."""
    op = OPS[fmt]
    assert op.launcher is getattr(MODULES[fmt], {"lowbit": "launch_lowbit_weight_mm", "codebook": "launch_codebook_mm",
                                                 "pow2": "launch_pow2_weight_mm"}[fmt])  # fmt: skip
    bits = {"lowbit": 2, "codebook": 4, "pow2": 4}[fmt]
    weights = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in _weights(fmt, bits, 21, 40, seed=7))
    m = order_measurer(*times)
    with measured.use_measurer(m), measured.use_dispatch("measure"):
        assert_matches_reference(op, activations(1, 40, torch.float32, device, seed=5), *weights)
        ((slot, choice),) = m.choices.items()
        assert choice.choice == expected and not choice.errors
        assert slot == (f"slimtorch::{op._name}", "fake", f"1,21,40,float32,{bits}", "measured")


@pytest.mark.parametrize(("fmt", "bits"), [("int8", 8), ("codebook", 4), ("lowbit", 2)])
def test_gemv_strided_x(fmt, bits):
    """x as a strided view (stride along K != 1): the kernel follows x's strides."""
    weights = _weights(fmt, bits, 19, 40, seed=9)
    x = randn((40, 3), seed=8).t()[:1]  # (1, 40), strides (1, 3)
    assert x.stride(1) != 1
    out = OPS[fmt](x, *weights)
    ref = OPS[fmt].get_reference()(x.double(), *weights)
    assert_rel_close(out, ref, rel_bound(torch.float32, 40))


@pytest.mark.gpu
@pytest.mark.parametrize(("fmt", "bits"), [("int8", 8), ("lowbit", 1), ("lowbit", 2), ("codebook", 2),
                                           ("codebook", 4), ("codebook", 8), ("pow2", 5)])  # fmt: skip
def test_gemv_on_gpu(fmt, bits):
    """The compiled kernel on a real GPU (many programs write the byte table concurrently; split-K on 132 SMs)."""
    weights = tuple(t.cuda() if isinstance(t, torch.Tensor) else t for t in _weights(fmt, bits, 1024 + 64, 4096, 3))
    x = activations(1, 4096, torch.float16, "cuda", seed=4)
    assert_matches_reference(OPS[fmt], x, *weights)

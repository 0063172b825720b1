"""The static SASS gate (slimtorch.core.sass): representative kernels compiled for sm_90a exactly as
the runtime specialises them (captured from their launchers), read from the cubin; fails on any
spill or local-memory use and on a regression past the budgets in ``slimtorch.core.sass.BUDGETS``."""

import json
import os
import subprocess
import sys

import pytest

from slimtorch.core import sass

# "family op shape" of the gated cases (every autotune config of each is compiled)
GATED = [
    "quant int4-g128 M=1 K=4096 N=4096",
    "sparse 2:4 M=1 K=4096 N=4096",
    "convops depthwise mobilenet_v3_large dw3x3/s1 C72 56² batch 1",  # C % 16 != 0: channel vectors (VEC = 8)
    "convops channel_shuffle shufflenet_v2_x1_0 C116 28² batch 1",
]


@pytest.fixture(scope="module")
def gate(tmp_path_factory):
    out = tmp_path_factory.mktemp("sass")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SLIMTORCH_BACKEND")}
    cmd = [sys.executable, "-m", "slimtorch.core.sass", "--out", str(out), "--cuda-sources", "--filter", *GATED]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    rows = json.loads((out / "sm_90a.json").read_text()) if (out / "sm_90a.json").is_file() else []
    return run, rows


def test_gated_kernels_within_budget(gate):
    run, rows = gate
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    problems = sass.check_budgets(rows)
    assert not problems, "\n".join(problems)
    for case in GATED:
        best = [r for r in rows if r.get("best") and f"{r['kernel'].split(' / ')[0]} {r['shape']}" == case]
        assert best, f"{case}: no best row in the report"
        assert all(r["budget_key"] in sass.BUDGETS for r in best), f"{case}: no budget"
        assert all(r["triton"] and r["arch"] == "sm_90a" for r in best)


def test_runtime_specialisation_is_captured(gate):
    _, rows = gate
    # every autotune config of the fp16 int4 GEMV (M = 1: CUDA cores, fp16x2 products, no tl.dot)
    gemv = [r for r in rows if r.get("function") == "_int4_gemv_f16_kernel"]
    assert len(gemv) == 3
    for row in gemv:  # aligned pointers and sizes get the runtime's 16-divisibility hints
        assert {"xw_ptr", "w_ptr", "K", "N"} <= set(row["divisible_by_16"])
        assert row["tensor_core"] == [] and row["loop_instructions"] > 0 and row["vector_loads"].get("LDG.128")
        assert row["spills"] == 0
    assert sum(r["best"] for r in gemv) == 1
    # ints equal to 1 become constants: the 2:4 GEMV's unit stride of x
    sparse = [r for r in rows if r["kernel"].startswith("sparse 2:4") and r.get("specialised_to_1")]
    assert sparse and all("stride_xk" not in r["divisible_by_16"] for r in sparse)


def test_convops_load_channel_vectors(gate):
    _, rows = gate  # C = 72 (no multiple of 16): 16-byte loads of x and of the fp32 (k, k, C) weight rows
    (depthwise,) = [r for r in rows if r.get("function") == "_depthwise_fwd_kernel" and r.get("best")]
    assert depthwise["vector_loads"].get("LDG.128") and depthwise["spills"] == 0
    (shuffle,) = [r for r in rows if r.get("function") == "_interleave_kernel" and r.get("best")]
    assert shuffle["vector_loads"].get("STG.64")  # 116 output channels: 8-byte stores of interleaved pairs


def test_cuda_sources_are_read(gate):
    _, rows = gate
    cuda = [r for r in rows if r.get("regime") == "cuda"]
    assert cuda and all(not r.get("error") and r["regs"] for r in cuda), cuda
    assert any("HMMA.SP" in r["tensor_core"] for r in cuda)  # the mma.sp 2:4 kernel


def test_hot_loop_is_the_heaviest_backward_branch():
    def ins(addr, op, target=None):
        return {"addr": addr, "op": op, "pred": "", "args": "", "target": None, "target_addr": target}

    inner = [ins(64, "IADD3"), ins(80, "LDG.E"), ins(96, "HMMA.16816.F32"), ins(112, "LDG.E.128"), ins(128, "BRA", 80)]
    code = [ins(0, "MOV"), ins(16, "LDG.E"), ins(32, "FADD"), ins(48, "BRA", 16), *inner, ins(144, "EXIT")]
    code.append(ins(160, "BRA", 160))  # the trap loop after EXIT
    assert sass.hot_loop(sass._useful(code)) == (5, 8)
    work = sass.analyse(code, warps=4, iter_weights=128, total_weights=4096, m_tiles=1, programs=2, outputs=0)
    assert work["loop_instructions"] == 4 and work["instr_per_weight"] == 4 * 32 * 4 / 128
    assert work["trips"] == 16 and work["instructions"] == 10


def test_occupancy_and_ceiling_models():
    assert sass.occupancy(regs=32, smem=0, warps=4) == 16  # 64 warps / 4
    assert sass.occupancy(regs=255, smem=0, warps=4) == 2  # 65536 / (8192 · 4)
    assert sass.occupancy(regs=64, smem=100 * 1024, warps=4) == 2  # 228 KB / 101 KB
    hbm = sass.ceiling(warp_instructions=0.0, nbytes=3.35e12, flops=0.0, dot_dtype="float16", tensor_core=["HMMA"])
    assert hbm["bound"] == "hbm" and hbm["static_ceiling"] == 1.0
    slow = sass.ceiling(2 * sass.ISSUE_RATE, nbytes=3.35e12, flops=0.0, dot_dtype="float16", tensor_core=[])
    assert slow["static_ceiling"] == 0.5


def test_budget_check_flags_spills_and_regressions():
    row = {"kernel": "k", "shape": "s", "config": {}, "best": True, "spills": 2, "instr_per_weight": 99.0,
           "regs": 64, "static_ceiling": 0.9, "budget_key": "quant int4-g128 gemv _dequant_mm_kernel"}  # fmt: skip
    problems = sass.check_budgets([row])
    assert any("spill" in p for p in problems) and any("instr_per_weight 99.0" in p for p in problems)
    assert not sass.check_budgets([{**row, "spills": 0, "instr_per_weight": 1.0}])

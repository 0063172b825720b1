"""The shared dequantising GEMM's dispatch: GEMV split-K for small M, tiles for large M."""

import torch

from slimtorch.core import gemm
from slimtorch.core.tuning import autotune_key
from slimtorch.quant import dequant_mm


def test_split_plan_by_shape():
    """dequant_mm's policy on core's planner (CPU tensors: the interpreter's documented SM count)."""
    cpu = torch.device("cpu")
    sms = gemm.sm_count(cpu)
    assert dequant_mm.split_plan(dequant_mm.SMALL_M_MAX + 1, 37, 4096, cpu).splits == 1  # tile path never splits
    assert dequant_mm.split_plan(1, 37, dequant_mm.MIN_K_PER_SPLIT - 1, cpu).splits == 1  # K too short to split
    assert dequant_mm.split_plan(1, 37, 3 * dequant_mm.MIN_K_PER_SPLIT, cpu) == (3, 256)  # limited by K
    assert dequant_mm.split_plan(16, 37, 10**6, cpu).splits == 2 * sms  # fills the SMs
    wide = 2 * sms * dequant_mm.PLANNING_BLOCK_N  # enough N tiles to fill the device alone
    assert dequant_mm.split_plan(1, wide, 10**6, cpu).splits == 1
    # 777 columns: 2 ranges of 512 (granule 256), i.e. 8 + 5 K tiles of 64 (a count that does not divide)
    assert dequant_mm.split_plan(1, 45, 777, cpu) == (2, 512)


def test_autotune_key_buckets_m(monkeypatch):
    """Batch sizes in one power-of-two bucket share the tuned config (no new tuning)."""
    keys = []
    kernel = dequant_mm._large_m_kernel
    monkeypatch.setattr(kernel, "run", lambda *a, **kw: keys.append(autotune_key(kernel, a, kw)))
    q, s = torch.zeros(5, 40, dtype=torch.int8), torch.ones(5)
    for m in (17, 31, 33):
        dequant_mm.launch_dequant_mm(torch.zeros(m, 40), "int8", 8, q, s, None, None, 5)
    assert keys[0] == keys[1] != keys[2]
    assert "M" not in kernel.keys


def test_empty_problems_launch_nothing(device):
    from slimtorch.quant.int8_mm import int8_weight_mm

    x = torch.zeros(0, 40, dtype=torch.float16, device=device)
    out = int8_weight_mm(x, torch.zeros(5, 40, dtype=torch.int8, device=device), torch.ones(5, device=device))
    assert out.shape == (0, 5)


def test_every_autotune_config_is_complete_and_compiler_friendly():
    """The interpreter only runs the first config of each list; the others must still name every
    meta-parameter, use power-of-two blocks and tl.dot tiles >= 16, and hold whole 1-bit words."""
    from slimtorch.quant import w8a8_mm

    lists = [dequant_mm.SMALL_M_CONFIG_LIST, dequant_mm.LARGE_M_CONFIG_LIST, w8a8_mm.INT8_MM_CONFIG_LIST]
    for configs in lists:
        keys = set(configs[0].kwargs)
        assert keys == {"BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"}
        for config in configs:
            assert set(config.kwargs) == keys, config
            blocks = [config.kwargs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")]
            assert all(b >= 16 and b & (b - 1) == 0 for b in blocks), config
            assert config.kwargs["BLOCK_K"] % 32 == 0, config  # 32 one-bit codes per packed word
    assert all(c.kwargs["BLOCK_M"] == 16 for c in dequant_mm.SMALL_M_CONFIG_LIST)

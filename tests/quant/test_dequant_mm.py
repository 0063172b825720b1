"""The shared dequantising GEMM's dispatch: GEMV split-K for small M, tiles for large M."""

import torch

from slimtorch.quant import dequant_mm


def test_plan_split_k_by_shape():
    cpu = torch.device("cpu")  # the interpreter pretends to have INTERPRETER_SM_COUNT SMs
    assert dequant_mm.plan_split_k(dequant_mm.SMALL_M_MAX + 1, 37, 4096, cpu) == 1  # tile path never splits
    assert dequant_mm.plan_split_k(1, 37, dequant_mm.MIN_K_PER_SPLIT - 1, cpu) == 1  # K too short to split
    assert dequant_mm.plan_split_k(1, 37, 3 * dequant_mm.MIN_K_PER_SPLIT, cpu) == 3  # limited by K
    assert dequant_mm.plan_split_k(16, 37, 10**6, cpu) == 2 * dequant_mm.INTERPRETER_SM_COUNT  # fills the SMs
    wide = 64 * dequant_mm.PLANNING_BLOCK_N  # enough N tiles to fill the device alone
    assert dequant_mm.plan_split_k(1, wide, 10**6, cpu) == 1


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

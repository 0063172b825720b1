"""Every autotune config of the 2:4 and BSR kernels, numerically, in the interpreter too
(core.tuning keeps only the first config there; ``use_config`` runs each other one). M <= GEMV_MAX_M
reaches the 2:4 GEMV kernel, larger M the per-slot tl.dot kernel."""

import pytest
import torch

from slimtorch.core.testing import assert_rel_close, randn, rel_bound
from slimtorch.core.tuning import all_configs, use_config
from slimtorch.sparse import bsr, sparse24
from slimtorch.sparse.formats import compress_24, prune_24, to_bsr

K, N = 72, 19
WEIGHT = randn((N, K), seed=3)
VALUES, META = compress_24(WEIGHT * prune_24(WEIGHT))
CROW, COL, BLOCKS = to_bsr(randn((32, 48), seed=4), torch.tensor([[True, False, True], [False, True, True]]))
KERNELS = {
    "2:4 gemv": (sparse24._sparse24_gemv_kernel, sparse24.GEMV_MAX_M - 1),
    "2:4 mm": (sparse24._sparse24_mm_kernel, 21),
    "bsr": (bsr._bsr_mm_kernel, 9),
}
CASES = [(name, i) for name, (kernel, _) in KERNELS.items() for i in range(len(all_configs(kernel)))]


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_every_config_matches_reference(name, index):
    kernel, m = KERNELS[name]
    config = all_configs(kernel)[index]
    if name == "bsr":
        x, op, args, k = randn((m, 48), seed=index), bsr.bsr_mm, (CROW, COL, BLOCKS), 48
    else:
        x, op, args, k = randn((m, K), seed=index), sparse24.sparse24_mm, (VALUES, META), K
    ref = op.get_reference()(x.double(), *(a.double() if a.dtype.is_floating_point else a for a in args))
    with use_config(kernel, config):
        out = op(x, *args)
        assert kernel.best_config == config
    assert_rel_close(out, ref, rel_bound(torch.float32, k), name=f"{name} config {config}")

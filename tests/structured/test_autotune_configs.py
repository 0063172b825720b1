"""Every autotune config of the structured kernels (block-circulant direct, its GEMV and the spectral
multiply-accumulate, hashed GEMM), numerically, in the interpreter too (core.tuning keeps only the
first config there; ``use_config`` runs each other one), against the references."""

import pytest
import torch

from slimtorch.core.testing import assert_rel_close, randn, rel_bound
from slimtorch.core.tuning import all_configs, use_config
from slimtorch.structured import block_circulant as bc
from slimtorch.structured import hashing

WEIGHT = randn((3, 2, 7), seed=1)  # p = 3, q = 2, b = 7: K = 14, N = 21
X = randn((5, 14), seed=2)
BUCKETS = randn((11,), seed=3)


X_TILE = randn((17, 14), seed=4)  # M > GEMV_MAX_M: the tile kernel; X (M = 5): the x-expansion GEMV


def _direct():
    return bc.block_circulant_direct_mm(X_TILE, WEIGHT), bc.block_circulant_direct_mm.get_reference()(
        X_TILE.double(), WEIGHT.double()
    )


def _direct_gemv():
    return bc.block_circulant_direct_mm(X, WEIGHT), bc.block_circulant_direct_mm.get_reference()(
        X.double(), WEIGHT.double()
    )


def _spectral():
    spectrum = bc.weight_spectrum(WEIGHT)
    return bc.block_circulant_fft_mm(X, spectrum, 7), bc.block_circulant_fft_mm.get_reference()(X.double(), spectrum, 7)


def _hashed():
    return hashing.hashed_mm(X, BUCKETS, 9, 5), hashing.hashed_mm.get_reference()(X.double(), BUCKETS.double(), 9, 5)


KERNELS = {
    "direct": (bc._direct_kernel, _direct),
    "direct-gemv": (bc._direct_gemv_kernel, _direct_gemv),
    "spectral": (bc._spectral_mac_kernel, _spectral),
    "hashed": (hashing._hashed_mm_kernel, _hashed),
}
CASES = [(name, i) for name, (kernel, _) in KERNELS.items() for i in range(len(all_configs(kernel)))]


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_every_config_matches_reference(name, index):
    kernel, case = KERNELS[name]
    config = all_configs(kernel)[index]
    with use_config(kernel, config):
        out, ref = case()
        assert kernel.best_config == config, "the op must have launched this kernel with this config"
    assert_rel_close(out, ref, rel_bound(torch.float32, 14 * 4), name=f"{name} config {config}")

"""Suite-wide settings. Imported by pytest before any test module, so the environment set here
is in place before a kernel module applies ``@triton.jit``.

Without a GPU every Triton kernel runs in the Triton interpreter on CPU tensors
(TRITON_INTERPRET=1 + SLIMTORCH_BACKEND=triton, core's backend rule); with one (ci/gpu) kernels run natively on
CUDA tensors. Outputs of every launcher start poisoned, so unwritten elements fail. Every test
is seeded from its node id; hypothesis runs derandomized, with a small example budget in CI.
"""

import os
import random
import tempfile
import zlib

import numpy as np
import pytest
import torch

from slimtorch.core.testing import default_device

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("SLIMTORCH_BACKEND", "triton")
os.environ.setdefault("SLIMTORCH_POISON_OUTPUTS", "1")
os.environ.setdefault("SLIMTORCH_CACHE_DIR", os.path.join(tempfile.gettempdir(), "slimtorch-test-cache"))


try:  # property-based suites (tests/*/test_properties.py): reproducible, sized for 2 CI cores
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", derandomize=True, max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def seeded_per_test(request):
    """Every test starts from its own fixed seed (from its node id): no unseeded randomness, and a
    failure reproduces alone or in any order (``pytest -n``)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    yield


@pytest.fixture
def device() -> str:
    """Where kernels run natively: "cuda" on a GPU machine, else "cpu" (Triton interpreter)."""
    return default_device()

"""Suite-wide settings. Imported by pytest before any test module, so the environment set here
is in place before a kernel module applies ``@triton.jit``.

Without a GPU every Triton kernel runs in the Triton interpreter on CPU tensors
(TRITON_INTERPRET=1 + SLIMTORCH_BACKEND=triton, core's backend rule); with one (ci/gpu) kernels run natively on
CUDA tensors. Outputs of every launcher start poisoned, so unwritten elements fail.
"""

import os
import tempfile

import pytest
import torch

from slimtorch.core.testing import default_device

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("SLIMTORCH_BACKEND", "triton")
os.environ.setdefault("SLIMTORCH_POISON_OUTPUTS", "1")
os.environ.setdefault("SLIMTORCH_CACHE_DIR", os.path.join(tempfile.gettempdir(), "slimtorch-test-cache"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def device() -> str:
    """Where kernels run natively: "cuda" on a GPU machine, else "cpu" (Triton interpreter)."""
    return default_device()

"""Zoo models on the convops kernels (Triton: natively on a GPU, in the interpreter on CPU) give
the outputs of the same models on the pure-torch references — one model per block family."""

import pytest
import torch

import slimtorch.zoo as zoo
from slimtorch.core import reference_only
from slimtorch.core.testing import assert_rel_close, randn


@pytest.mark.kernels
@pytest.mark.parametrize(
    "name, size",
    [("slim_shufflenetv2_x0_5", 32), ("slim_shufflenetv1_g3_050", 32), ("slim_shiftresnet20", 16)],
)
def test_model_on_kernels_matches_references(name, size, device):
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=7).eval().to(device)
    x = randn((1, 3, size, size), device=device, seed=1)
    with torch.no_grad():
        out = model(x)
        with reference_only():
            expected = model(x)
    assert_rel_close(out, expected.double(), 2e-3)  # fp32 1x1 GEMMs use tf32 on GPUs

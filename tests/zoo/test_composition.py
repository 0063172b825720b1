"""Conversions compose on every zoo family: fuse_, quantize_ and sparsify_ in any order keep each
module's whole computation or leave the module alone and say why (core's one eligibility rule).

The float model's weights are made 2:4 sparse first wherever sparsify_ can take them, so the 2:4
conversion is exact and any chain's error is int8's rounding alone: a conversion that dropped a
shift, a shuffle or a fused activation (relative error ~1) fails the SQNR bound by far.
"""

import copy

import pytest
import torch

import slimtorch.zoo as zoo
from slimtorch.convops import FuseConfig, ShiftConv2d, fuse_
from slimtorch.core.conversions import gemm_source
from slimtorch.core.testing import assert_sqnr_at_least, randn
from slimtorch.quant import Int8WeightOnlyConfig, quantize_
from slimtorch.sparse import Sparse24Config, prune_24, sparsify_

# the smallest model of each family
FAMILIES = [
    "slim_mobilenetv1_025",
    "slim_mobilenetv2_035",
    "slim_mobilenetv3_small_100",
    "slim_shufflenetv1_g3_050",
    "slim_shufflenetv2_x0_5",
    "slim_squeezenet1_1",
    "slim_shiftresnet20",
]
STEPS = {
    "fuse": lambda m: fuse_(m, FuseConfig()),
    "int8": lambda m: quantize_(m, Int8WeightOnlyConfig()),
    "sparse24": lambda m: sparsify_(m, Sparse24Config()),
}
ORDERS = [("fuse", "int8", "sparse24"), ("sparse24", "int8", "fuse"), ("int8", "fuse", "sparse24")]


def _sparse_float_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = zoo.create_model(name, num_classes=7).eval()
    for module in model.modules():
        source = gemm_source(module)
        # the module's own weight: our fused layers declare a plain copy of theirs as the source
        if isinstance(source, torch.nn.Module) and module.weight[0].numel() % 4 == 0:
            with torch.no_grad():
                flat = module.weight.reshape(module.weight.shape[0], -1)
                flat.mul_(prune_24(flat))
        if isinstance(module, torch.nn.BatchNorm2d):  # non-trivial statistics, so folding is tested
            with torch.no_grad():
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name", FAMILIES)
def test_conversions_compose_in_any_order(name):
    if name not in zoo.list_models():
        pytest.fail(f"{name} is not a zoo model: update FAMILIES")
    model = _sparse_float_model(name)
    x = randn((2, 3, 32, 32), seed=5)
    with torch.no_grad():
        expected = model(x)
    for order in ORDERS:
        converted = copy.deepcopy(model)
        report = None
        for step in order:
            step_report = STEPS[step](converted)
            converted = step_report.model
            report = step_report if report is None else report + step_report
        with torch.no_grad():
            out = converted(x)
        # int8 weights alone: ~30 dB through a whole random network
        assert_sqnr_at_least(expected, out, 22.0, name=f"{name} {' -> '.join(order)}")
        assert report.converted, f"{name} {order}: nothing converted"
        for fqn, module in model.named_modules():
            if isinstance(module, ShiftConv2d):
                assert "shifts its input" in report.skipped.get(fqn, ""), f"{fqn}: {report.skipped.get(fqn)}"

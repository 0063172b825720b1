"""Training under DistributedDataParallel (gloo, one process on CPU): a zoo model on the convops
layers, its 2:4 masked fine-tuning form (slimtorch.sparse) and its LSQ fake-quant form
(slimtorch.quant) each take a DDP step whose gradients equal those of the plain model."""

import copy

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import slimtorch.zoo as zoo
from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.quant import LSQConfig, prepare_qat
from slimtorch.sparse import Sparse24Config, sparsify_

FORMS = {
    "float (convops layers)": lambda m: m,
    "2:4 masked fine-tuning": lambda m: sparsify_(m, Sparse24Config(masked_training=True)).model,
    "LSQ int8 fake-quant": lambda m: prepare_qat(m, LSQConfig(bits=8)).model,
}


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    store = tmp_path_factory.mktemp("ddp") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("form", FORMS)
def test_ddp_step_matches_plain_training(process_group, form):
    torch.manual_seed(0)
    model = FORMS[form](zoo.create_model("slim_mobilenetv2_035", num_classes=5)).train()
    plain = copy.deepcopy(model)
    wrapped = DistributedDataParallel(model)
    x, target = randn((4, 3, 32, 32), seed=1), torch.tensor([0, 1, 2, 3])
    for net in (wrapped, plain):
        torch.manual_seed(2)  # the same dropout masks in both
        torch.nn.functional.cross_entropy(net(x), target).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads, "no parameter received a gradient"
    for name, p in plain.named_parameters():
        if p.grad is not None:
            assert_rel_close(grads[name], p.grad, 1e-5, name=name)

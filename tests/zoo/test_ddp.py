"""Training under DistributedDataParallel: two processes (gloo on CPU, torch.multiprocessing.spawn),
so the gradient all-reduce is real. A zoo model on the convops layers, its 2:4 masked fine-tuning
form (slimtorch.sparse) and its LSQ fake-quant form (slimtorch.quant) each take a DDP step whose
gradients equal the mean of the plain model's gradients over the two ranks' batch slices. One spawn
for all forms keeps it fast. The spawned ranks import this module by name (``tests.zoo.test_ddp``,
with the repository root on sys.path), since pytest imports test files by path."""

import copy
import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import slimtorch.zoo as zoo
from slimtorch.core import reference_only
from slimtorch.core.testing import assert_rel_close, randn
from slimtorch.quant import LSQConfig, prepare_qat
from slimtorch.sparse import Sparse24Config, sparsify_

WORLD_SIZE = 2

FORMS = {
    "float (convops layers)": lambda m: m,
    "2:4 masked fine-tuning": lambda m: sparsify_(m, Sparse24Config(masked_training=True)).model,
    "LSQ int8 fake-quant": lambda m: prepare_qat(m, LSQConfig(bits=8)).model,
}
BATCH = 4  # split evenly over the ranks


def _loss_backward(net, x, target, shard: int) -> None:
    torch.manual_seed(100 + shard)  # the same dropout masks for a shard in either path
    torch.nn.functional.cross_entropy(net(x), target).backward()


def run(rank: int, world_size: int, store: str, forms: list[str]) -> None:
    """Spawned entry point. Each rank takes a DDP step on its slice of the batch; DDP's all-reduced
    gradients must equal the mean over the ranks of the plain model's gradients on their slices
    (per-rank BatchNorm statistics, as DDP computes them) and differ from this rank's slice alone
    (the all-reduce is real). The convops layers run their references (the zoo's convention)."""
    with reference_only():
        _run(rank, world_size, store, forms)


def _run(rank: int, world_size: int, store: str, forms: list[str]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        x, target = randn((BATCH, 3, 32, 32), seed=1), torch.arange(BATCH) % 5
        per = BATCH // world_size
        mine = (x[rank * per : (rank + 1) * per], target[rank * per : (rank + 1) * per])
        for form in forms:
            torch.manual_seed(0)
            model = FORMS[form](zoo.create_model("slim_mobilenetv2_035", num_classes=5)).train()
            plain = copy.deepcopy(model)
            _loss_backward(DistributedDataParallel(model), *mine, shard=rank)
            _loss_backward(plain, *mine, shard=rank)
            grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
            assert grads, f"{form}: no parameter received a gradient"
            differs = False
            for name, p in plain.named_parameters():
                if p.grad is None:
                    continue
                own = p.grad.clone()
                mean = p.grad.clone()
                dist.all_reduce(mean)  # the plain gradients averaged over the ranks, by hand
                mean /= world_size
                assert_rel_close(grads[name], mean, 1e-5, name=f"{form}: {name}")
                differs |= not torch.allclose(grads[name], own, rtol=1e-3, atol=1e-6)
            assert differs, f"{form}: the DDP gradients equal this rank's own slice alone (no all-reduce?)"
    finally:
        dist.destroy_process_group()


@pytest.fixture
def this_module(monkeypatch):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.syspath_prepend(str(root))  # spawned children inherit sys.path and import by name
    module = importlib.import_module("tests.zoo.test_ddp")
    yield module
    sys.modules.pop("tests.zoo.test_ddp", None)


def test_ddp_two_processes_match_plain_training(this_module, tmp_path):
    forms = list(FORMS)
    mp.spawn(this_module.run, args=(WORLD_SIZE, str(tmp_path / "store"), forms), nprocs=WORLD_SIZE, join=True)

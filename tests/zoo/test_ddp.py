"""Training under DistributedDataParallel: two processes (gloo on CPU, torch.multiprocessing.spawn),
so the gradient all-reduce is real. A zoo model on the convops layers, its 2:4 masked fine-tuning
form (slimtorch.sparse) and its LSQ fake-quant form (slimtorch.quant) each take a DDP step whose
gradients equal the mean of the plain model's gradients over the two ranks' batch slices
(tests/zoo/ddp_worker.py). One spawn for all forms keeps it fast."""

import importlib
import sys
from pathlib import Path

import pytest
import torch.multiprocessing as mp

WORLD_SIZE = 2


@pytest.fixture
def worker(monkeypatch):
    root = Path(__file__).resolve().parents[2]
    monkeypatch.syspath_prepend(str(root))  # spawned children inherit sys.path and import by name
    module = importlib.import_module("tests.zoo.ddp_worker")
    yield module
    sys.modules.pop("tests.zoo.ddp_worker", None)


def test_ddp_two_processes_match_plain_training(worker, tmp_path):
    forms = list(worker.FORMS)
    mp.spawn(worker.run, args=(WORLD_SIZE, str(tmp_path / "store"), forms), nprocs=WORLD_SIZE, join=True)

"""tests/zoo runs whole networks on CPU: one intra-op thread per test process. With pytest -n 2
on a 2-core machine, torch's default (one OpenMP thread per core in every worker) makes the
threads spin against each other and the suite runs 10-20x slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

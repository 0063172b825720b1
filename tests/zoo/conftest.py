"""tests/zoo runs whole networks on CPU.

- One intra-op thread per test process: with pytest -n 2 on a 2-core machine, torch's default
  (one OpenMP thread per core in every worker) makes the threads spin against each other and the
  suite runs 10-20x slower.
- Every test runs the convops layers through their pure-torch references (the zoo's tests are
  about the models; the kernels are tested in tests/convops), except tests marked ``kernels``,
  which run the Triton kernels (natively on a GPU, in the interpreter on CPU).
"""

import pytest
import torch

from slimtorch.core import reference_only


@pytest.fixture(autouse=True)
def references_unless_marked_kernels(request):
    if request.node.get_closest_marker("kernels"):
        yield
    else:
        with reference_only():
            yield


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

import os

import pytest
import torch


def pytest_configure(config):
    """One torch thread per test process, and for the processes the tests start, unless
    OMP_NUM_THREADS says otherwise: the tensors are tiny, and `-n 2` on two cores with torch's
    default of a thread per core oversubscribes them (the suite took 18% longer)."""
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is faster and immune to oversubscribed CI cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

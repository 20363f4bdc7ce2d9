import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is faster and immune to oversubscribed CI cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

"""One torch thread per method test: tiny tensors gain nothing from two, and busy-waiting threads on a shared
2-core machine slow them down many times."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Suite-wide settings: one torch thread per test process.

On a loaded 2-core machine torch's default thread pool made small-tensor tests
25-30x slower (measured by the PC and TP tests); Ray trials set their own threads.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

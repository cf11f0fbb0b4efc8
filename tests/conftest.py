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


@pytest.fixture(autouse=True, scope="session")
def _own_overheads_cache(tmp_path_factory):
    """Commands remember their overheads per host (orchestrator/engine/overheads.py): the tests' go to a
    file of their own (CLI subprocesses inherit it), never into the user's cache."""
    import os

    path = tmp_path_factory.mktemp("overheads") / "overheads.json"
    before = os.environ.get("MUTRANSFER_OVERHEADS")
    os.environ["MUTRANSFER_OVERHEADS"] = str(path)
    yield path
    if before is None:
        os.environ.pop("MUTRANSFER_OVERHEADS", None)
    else:
        os.environ["MUTRANSFER_OVERHEADS"] = before

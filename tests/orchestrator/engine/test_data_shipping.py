"""orchestrator.engine.data_shipping: a shipped dataset is the same data a trial would read from disk,
and when no node can read the files the error says so once, naming where it looked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from orchestrator.engine.data_shipping import dataset_for_trial
from trainers import load_dataset

FMNIST = {"dataset": "fmnist", "subset": 500, "test_subset": 200}
ROOT = Path(__file__).resolve().parents[3]


def _same(a, b) -> bool:
    return (
        all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("x_train", "y_train", "x_test", "y_test"))
        and a.num_classes == b.num_classes
        and all(getattr(a, k).dtype == getattr(b, k).dtype for k in ("x_train", "y_train", "x_test", "y_test"))
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shipped_fmnist_is_what_the_trial_would_read(dtype):
    shipped = load_dataset("fmnist", 500, 200, device="cpu", dtype=torch.float32)  # what ship() puts
    got = dataset_for_trial(FMNIST, shipped, "cpu", dtype, seed=3)
    want = load_dataset("fmnist", 500, 200, device="cpu", dtype=dtype, seed=3)  # the trial's own read
    assert _same(got, want)
    assert got.x_train.dtype == dtype and len(got.x_train) == 500


def test_generated_dataset_is_made_from_the_trials_seed():
    data = {"dataset": "teacher", "subset": 64, "test_subset": 32}
    a = dataset_for_trial(data, None, "cpu", torch.float64, seed=1)
    assert _same(a, load_dataset("teacher", 64, 32, dtype=torch.float64, seed=1))
    assert not torch.equal(a.x_train, dataset_for_trial(data, None, "cpu", torch.float64, seed=2).x_train)


SHIP_NOWHERE = """
import ray
from orchestrator.engine.data_shipping import ship
from trainers import DataError
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
try:
    ship({"dataset": "fmnist", "subset": 500, "test_subset": 200})
except DataError as exc:
    print("DataError:", exc)
else:
    print("shipped")
ray.shutdown()
"""


@pytest.mark.slow
def test_no_node_can_read_it_is_one_clear_error(tmp_path):
    """Embedded Ray in a mount namespace where Fashion-MNIST's directory is empty (about 15 s; Linux, root)."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs Linux, root and unshare (a mount namespace hides the dataset)")
    short = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    script = tmp_path / "ship.py"
    script.write_text(textwrap.dedent(SHIP_NOWHERE))
    env = {k: v for k, v in os.environ.items() if k not in ("MUTRANSFER_DATA", "RAY_ADDRESS")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "empty"), RAY_TMPDIR=str(short), RAY_USAGE_STATS_ENABLED="0")
    cmd = f"mount -t tmpfs tmpfs /usr/share/datasets/fashion-mnist && exec {sys.executable} {script}"
    try:
        out = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", cmd],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        shutil.rmtree(short, ignore_errors=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith(("DataError", "shipped"))]
    assert len(lines) == 1, out.stdout + out.stderr
    line = lines[0]
    print(line)
    assert line.startswith("DataError: data.dataset=fmnist: no node can read it."), line
    assert "Fashion-MNIST not found" in line and "Cluster (1 nodes): node " in line
    assert line.count("fetch-data") == 1  # the advice once, not once per node

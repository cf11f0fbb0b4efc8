"""Fixtures for the orchestrator tests: a short RAY_TMPDIR, a tiny sweep file, a CLI runner."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

TINY = """
name: tiny
trainer: {algorithm: bp, depth: 3, activation: tanh, base_width: 16}
data: {dataset: fmnist, subset: 300, test_subset: 200}
train: {epochs: 2, batch_size: 50}
grid:
  width: [16, 32]
  lr: [0.015625, 0.0625, 0.25, 256.0]
metric: test_loss
mode: min
resources: {cpu: 1}
"""


@pytest.fixture
def ray_env(tmp_path):
    """Environment for a CLI process that starts Ray: its own short temp dir (Unix socket paths)."""
    short = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    env = dict(os.environ, RAY_TMPDIR=str(short), RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    yield env
    shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def tiny_space(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(TINY))
    return p


def _run_cli(args, env, timeout=600, **kw):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


@pytest.fixture
def run_cli():
    """``run_cli(args, env)``: run ``mutransfer ARGS`` in a fresh process; returns the CompletedProcess."""
    return _run_cli

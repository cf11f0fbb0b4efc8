"""`mutransfer ui` over HTTP on 127.0.0.1, and search_spaces/smoke.yaml as the README runs it (slow)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from orchestrator.stores.results_store import trial_row
from orchestrator.stores.tracking import Tracker

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_sweeps_runs_on_localhost(tmp_path):
    """About 20-40 s: a SQLite store with one sweep, then a real MLflow server."""
    results = tmp_path / "results"
    spec = {
        "trial_id": "abc123",
        "trainer": {
            "algorithm": "bp",
            "parametrization": "mup",
            "optimizer": "sgd",
            "model": "mlp",
            "width": 32,
            "base_width": 16,
            "depth": 3,
            "lr": 0.1,
            "inference_steps": 20,
            "seed": 0,
        },
        "data": {"dataset": "fmnist"},
        "train": {"epochs": 1},
        "swept": ["lr"],
    }
    hist = [{"epoch": 1, "train_loss": 0.5, "test_loss": 0.4, "test_acc": 0.8, "wall_s": 1.0}]
    tr = Tracker(f"sqlite:///{results.resolve() / 'mlflow.db'}", "uisweep")
    assert tr.start()
    tr.log_trial(trial_row("uisweep", spec, hist, "ok"), spec, hist)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "ui", "--results", str(results), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline, up = time.time() + 120, False
        while time.time() < deadline and proc.poll() is None and not up:
            try:
                up = urllib.request.urlopen(base + "/health", timeout=2).status == 200
            except OSError:
                time.sleep(0.5)
        assert up, proc.stdout.read().decode()[-2000:] if proc.poll() is not None else "no answer in 120 s"
        assert urllib.request.urlopen(base + "/", timeout=10).status == 200  # the UI page
        req = urllib.request.Request(base + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=uisweep")
        exp = json.load(urllib.request.urlopen(req, timeout=10))["experiment"]
        body = json.dumps({"experiment_ids": [exp["experiment_id"]]}).encode()
        req = urllib.request.Request(
            base + "/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"}
        )
        runs = json.load(urllib.request.urlopen(req, timeout=10))["runs"]
        assert sorted(r["info"]["run_name"] for r in runs) == ["bp-mup-w32-lr2^-3.32-s0", "uisweep"]
        # bound to 127.0.0.1 only: the listening socket is not on all interfaces
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        local = [line.split()[3] for line in listening.splitlines() if line.strip()]
        assert local and all(a == f"127.0.0.1:{port}" for a in local), listening
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_smoke_yaml_runs_as_the_readme_says(tmp_path, ray_env):
    """About 1-2 min on 2 CPUs (more when they are shared): the README's first sweep command."""
    from orchestrator.cli.cmd_sweep import SMOKE

    results = tmp_path / "results"
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(SMOKE), "--results", str(results)],
        env=ray_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.time() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    trials = pd.read_parquet(results / "smoke" / "trials.parquet")
    assert len(trials) == 16 and trials.trial_id.is_unique
    assert set(trials.parametrization) == {"sp", "mup"} and set(trials.width) == {64, 256}
    assert (trials.status == "ok").sum() >= 8 and "failed" not in set(trials.status)
    assert (trials[trials.lr == 0.25].status == "diverged").all()
    assert (results / "mlflow.db").exists() and "best final_train_loss" in proc.stdout
    print(f"smoke.yaml: {wall:.0f}s")

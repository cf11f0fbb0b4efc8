"""Real Ray Tune sweeps (embedded Ray, 2 CPUs): Parquet, MLflow, retries, divergence, SIGKILL resume.

Slow: each test starts Ray in a fresh `mutransfer sweep` process (about 30-60 s each on 2 busy CPUs).
"""

import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def _tables(results, name="tiny"):
    return pd.read_parquet(results / name / "trials.parquet"), pd.read_parquet(results / name / "history.parquet")


def _mlflow_trials(uri, sweep):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(sweep)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mutransfer.role") == "sweep"]
    nested = [r for r in runs if r.data.tags.get("mutransfer.role") == "trial"]
    return client, parents, nested


def test_sweep_writes_parquet_and_mlflow_retries_a_dead_worker_and_marks_divergence(
    tmp_path, tiny_space, ray_env, run_cli
):
    results = tmp_path / "results"
    marker = tmp_path / "crashed-once"
    env = dict(ray_env, MUTRANSFER_TEST_CRASH_ONCE=str(marker))
    t0 = time.time()
    proc = run_cli(["sweep", str(tiny_space), "--results", str(results)], env)
    wall = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials, hist = _tables(results)

    # exactly the 8 trials of the grid, once each, with the contract's columns
    from orchestrator.spec.config import load_sweep

    sweep = load_sweep(tiny_space)
    assert sorted(trials.trial_id) == sorted(t.trial_id for t in sweep.trials)
    from orchestrator.stores.results_store import HISTORY_COLUMNS, TRIAL_COLUMNS

    assert list(trials.columns[: len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    assert list(hist.columns[: len(HISTORY_COLUMNS)]) == HISTORY_COLUMNS
    assert trials.node.str.len().min() > 10  # Ray node id of the worker that ran it

    # lr = 256 diverges at once; the rest train both epochs with finite losses
    big = trials[trials.lr == 256.0]
    assert list(big.status) == ["diverged", "diverged"] and (big.epochs_done == 1).all()
    assert math.isinf(big.final_test_loss.iloc[0])
    small = trials[trials.lr < 0.1]
    assert (small.status == "ok").all() and (small.epochs_done == 2).all()
    assert small.final_test_loss.map(math.isfinite).all()
    assert "failed" not in set(trials.status)

    # history: one row per (trial, epoch), epochs 1..epochs_done, no duplicates
    assert not hist.duplicated(["trial_id", "epoch"]).any()
    per = hist.groupby("trial_id").epoch.agg(list)
    for row in trials.itertuples():
        assert per[row.trial_id] == list(range(1, row.epochs_done + 1))

    # the worker died once after its first epoch (test hook) and Tune ran that trial again
    assert marker.exists()
    assert trials.retries.sum() == 1
    crashed = trials[trials.retries == 1].iloc[0]
    assert crashed.status in ("ok", "diverged") and crashed.epochs_done >= 1

    # an ok trial's numbers are those of the plain library loop: Ray changes nothing
    import torch

    from trainers import TrainerConfig, load_dataset, make_trainer, train

    spec = next(t for t in sweep.trials if t.trial_id == small.trial_id.iloc[0])
    tc = TrainerConfig(**spec.trainer)
    data = load_dataset("fmnist", 300, 200)
    torch.manual_seed(tc.seed)
    ref = train(make_trainer(tc, data.input_dim, data.output_dim), data, 2, 50, seed=tc.seed)
    assert small.final_test_loss.iloc[0] == pytest.approx(ref[-1]["test_loss"], rel=1e-6)

    # MLflow: one parent, one nested run per trial (FINISHED, or KILLED when it diverged), its id a tag,
    # metrics per epoch
    client, parents, nested = _mlflow_trials(f"sqlite:///{results / 'mlflow.db'}", "tiny")
    assert len(parents) == 1
    assert sorted(r.data.tags["mutransfer.trial_id"] for r in nested) == sorted(trials.trial_id)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in nested)
    assert all(
        r.info.status == {"ok": "FINISHED", "diverged": "KILLED"}[r.data.tags["mutransfer.status"]] for r in nested
    )
    one = next(r for r in nested if r.data.tags["mutransfer.trial_id"] == small.trial_id.iloc[0])
    steps = client.get_metric_history(one.info.run_id, "test_loss")
    assert [m.step for m in sorted(steps, key=lambda m: m.step)] == [1, 2]
    assert one.data.params["lr"] == str(small.lr.iloc[0]) and one.data.params["width"] == str(small.width.iloc[0])
    assert one.data.tags["mutransfer.status"] == "ok" and parents[0].info.run_name == "tiny"
    # the parent's live counts (Recorder -> Tracker.log_progress), the last written when the stage ended
    live = parents[0].data.metrics
    assert live["progress/done"] == live["progress/total"] == len(trials) and live["progress/running"] == 0, live
    assert parents[0].data.tags["mutransfer.progress"].startswith(f"{len(trials)}/{len(trials)} done")
    div = next(r for r in nested if r.data.tags["mutransfer.trial_id"] == big.trial_id.iloc[0])
    assert div.data.tags["mutransfer.status"] == "diverged" and "final_test_loss" not in div.data.metrics

    # the live view printed counts and the best so far
    assert "[8/8 100%]" in proc.stderr and "best final_test_loss" in proc.stderr
    print(f"8-trial sweep with one worker death: {wall:.1f}s")

    # the same command again runs nothing and changes nothing
    before = trials.sort_values("trial_id").reset_index(drop=True)
    again = run_cli(["sweep", str(tiny_space), "--results", str(results)], ray_env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "skipped 8 already done" in again.stdout
    after, hist2 = _tables(results)
    pd.testing.assert_frame_equal(after.sort_values("trial_id").reset_index(drop=True), before)
    assert len(hist2) == len(hist)
    assert len(_mlflow_trials(f"sqlite:///{results / 'mlflow.db'}", "tiny")[2]) == 8


def test_sigkill_mid_sweep_then_rerun_records_every_trial_once(tmp_path, tiny_space, ray_env, run_cli):
    results = tmp_path / "results"
    args = [
        "sweep",
        str(tiny_space),
        "data.subset=2000",
        "train.epochs=3",
        "--max-concurrent",
        "1",
        "--results",
        str(results),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=ray_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    from orchestrator.stores.results_store import ResultsStore

    store = ResultsStore(results / "tiny")  # mid-sweep the trials are part files (trials/): read as one table
    deadline = time.time() + 300
    n = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            n = len(store.trials())
            if n >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray processes this driver started, if any are left
        except ProcessLookupError:
            pass
    killed_at = len(store.trials())
    assert 2 <= killed_at < 8
    rerun = run_cli(args, ray_env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"skipped {killed_at} already done" in rerun.stdout
    trials, hist = _tables(results)
    assert len(trials) == 8 and trials.trial_id.is_unique
    assert not hist.duplicated(["trial_id", "epoch"]).any()
    assert hist.groupby("trial_id").size().to_dict() == trials.set_index("trial_id").epochs_done.to_dict()
    _, parents, nested = _mlflow_trials(f"sqlite:///{results / 'mlflow.db'}", "tiny")
    assert len(parents) == 1
    assert sorted(r.data.tags["mutransfer.trial_id"] for r in nested) == sorted(trials.trial_id)


def test_unreachable_mlflow_then_sync_back_fills(tmp_path, tiny_space, ray_env, run_cli):
    results = tmp_path / "results"
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    proc = run_cli(
        [
            "sweep",
            str(tiny_space),
            "grid.width=[16]",
            "grid.lr=[0.0625,0.25]",
            f"tracking.uri=http://127.0.0.1:{port}",
            "--results",
            str(results),
        ],
        ray_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unreachable" in proc.stderr
    trials, hist = _tables(results)
    assert len(trials) == 2 and set(trials.status) <= {"ok", "diverged"}
    assert len(hist) == trials.epochs_done.sum()
    assert time.time() - t0 < 400  # MLflow retries would add minutes per call
    uri = f"sqlite:///{tmp_path / 'later.db'}"
    sync = run_cli(["sync", str(results / "tiny"), "--tracking-uri", uri], ray_env)
    assert sync.returncode == 0, sync.stderr[-2000:]
    assert "back-filled 2" in sync.stdout
    _, parents, nested = _mlflow_trials(uri, "tiny")
    assert len(parents) == 1 and sorted(r.data.tags["mutransfer.trial_id"] for r in nested) == sorted(trials.trial_id)
    again = run_cli(["sync", str(results / "tiny"), "--tracking-uri", uri], ray_env)
    assert "back-filled 0" in again.stdout
    assert len(_mlflow_trials(uri, "tiny")[2]) == 2


def test_a_trial_that_dies_with_no_retries_left_is_failed_then_rerun(tmp_path, tiny_space, ray_env, run_cli):
    results = tmp_path / "results"
    marker = tmp_path / "crashed-once"
    args = [
        "sweep",
        str(tiny_space),
        "grid.width=[16]",
        "grid.lr=[0.0625,0.125]",
        "max_failures=0",
        "--max-concurrent",
        "1",
        "--results",
        str(results),
    ]
    first = run_cli(args, dict(ray_env, MUTRANSFER_TEST_CRASH_ONCE=str(marker)))
    assert first.returncode == 1, first.stderr[-3000:]  # a failed trial: the sweep ran, and says so
    trials, hist = _tables(results)
    assert sorted(trials.status) == ["failed", "ok"]
    failed = trials[trials.status == "failed"].iloc[0]
    # it died after reporting epoch 1: that epoch is kept, and the error says what happened
    assert "actor died" in failed.error.lower() or "exit" in failed.error.lower(), failed.error
    assert failed.epochs_done == 1 and hist[hist.trial_id == failed.trial_id].epoch.tolist() == [1]
    again = run_cli(args, ray_env)  # the marker exists: no more deaths
    assert again.returncode == 0, again.stderr[-3000:]
    assert "skipped 1 already done" in again.stdout
    trials2, hist2 = _tables(results)
    assert sorted(trials2.status) == ["ok", "ok"] and trials2.trial_id.is_unique
    assert trials2.set_index("trial_id").loc[failed.trial_id, "epochs_done"] == 2
    assert len(hist2) == 4

"""Fixtures of the analysis tests: planted sweeps, and writing them into an MLflow store
following the sweep's MLflow layout (with mlflow's own client)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.io import write_parquet_atomic
from analysis.planted import planted_trials

RESULTS = ("status", "final_train_loss", "final_test_loss", "final_test_acc", "epochs_done", "wall_s", "node")
FINAL = ("final_train_loss", "final_test_loss", "final_test_acc", "epochs_done", "wall_s")


def log_sweep(trials: pd.DataFrame, history: pd.DataFrame, uri: str, name: str, artifacts: Path) -> str:
    """Parent run (role sweep) and one nested run per trial, with mlflow's own client; returns the parent id."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(name, artifact_location=Path(artifacts).resolve().as_uri())
    parent = client.create_run(exp, run_name=name, tags={"mutransfer.role": "sweep", "mutransfer.sweep": name})
    pid = parent.info.run_id
    now = int(time.time() * 1000)
    hist = {tid: g for tid, g in history.groupby("trial_id")}
    for row in trials.to_dict("records"):
        tid = row["trial_id"]
        run = client.create_run(
            exp,
            run_name=tid,
            tags={
                "mlflow.parentRunId": pid,
                "mutransfer.role": "trial",
                "mutransfer.sweep": name,
                "mutransfer.trial_id": tid,
                "mutransfer.status": row["status"],
            },
        )
        params = [Param(k, str(v)) for k, v in row.items() if k not in RESULTS]
        metrics = [Metric(k, float(row[k]), now, 0) for k in FINAL if math.isfinite(float(row[k]))]
        for h in hist.get(tid, pd.DataFrame()).to_dict("records"):
            metrics += [
                Metric(k, float(h[k]), now, int(h["epoch"]))
                for k in ("train_loss", "test_loss", "test_acc")
                if math.isfinite(float(h[k]))
            ]
        client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=[RunTag("mlflow.runName", tid)])
        client.set_terminated(run.info.run_id, "FAILED" if row["status"] == "failed" else "FINISHED")
    client.set_terminated(pid, "FINISHED")
    return pid


@pytest.fixture
def mlflow_log_sweep():
    """The function that writes trials/history into an MLflow store (see :func:`log_sweep`)."""
    return log_sweep


PLANTED = (("bp", "mup", 0.0), ("bp", "sp", -1.0), ("pc", "mup", 0.0), ("pc", "sp", -0.5))


def planted_sweep(groups=PLANTED, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials and history of several planted groups (algorithm, parametrization, k)."""
    ts, hs = [], []
    for i, (algo, par, k) in enumerate(groups):
        t, h = planted_trials(k, algorithm=algo, parametrization=par, rng_seed=i, **kw)
        ts.append(t)
        hs.append(h)
    return pd.concat(ts, ignore_index=True), pd.concat(hs, ignore_index=True)


@pytest.fixture
def planted_dir(tmp_path):
    """results/planted/ with sweep.yaml, trials.parquet and history.parquet of PLANTED."""
    d = tmp_path / "results" / "planted"
    d.mkdir(parents=True)
    trials, history = planted_sweep(name="planted")
    write_parquet_atomic(trials, d / "trials.parquet")
    write_parquet_atomic(history, d / "history.parquet")
    (d / "sweep.yaml").write_text(
        "name: planted\nobjective: {metric: final_train_loss, mode: min}\nverify: {max_drift: 0.2, max_regret: 0.05}\n"
    )
    return d


@pytest.fixture
def make_planted():
    """The function that builds several planted groups (see :func:`planted_sweep`)."""
    return planted_sweep

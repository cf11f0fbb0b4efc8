"""MLflow tracking: one parent run per sweep, one nested run per trial (named by its trial id).

Layout (the contract the analysis reads): experiment = sweep name (or ``tracking.experiment``);
parent run named after the sweep, tags ``mutransfer.role=sweep``, ``mutransfer.sweep``; one nested
run per trial (``mlflow.parentRunId``), named by its trial id, tags ``mutransfer.role=trial``,
``mutransfer.sweep``, ``mutransfer.trial_id``, ``mutransfer.status``; params = the config columns
of its trials.parquet row; metrics ``train_loss, test_loss, test_acc`` per epoch (step = epoch) and
``final_train_loss, final_test_loss, final_test_acc, epochs_done, wall_s``; non-finite values are
not logged. End status FINISHED (ok, diverged) or FAILED.

MLflow is for looking; Parquet is the truth. A :class:`Tracker` that cannot reach its
tracking store switches itself off with one warning, and the sweep goes on;
:meth:`Tracker.sync` back-fills every trial that Parquet has and MLflow lacks.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.schema import (EPOCH_METRICS, FINAL_METRICS, RESULT_COLUMNS, ROLE_SWEEP,  # noqa: F401
                             ROLE_TRIAL, STATUS_FAILED, TAG_ROLE, TAG_STATUS, TAG_SWEEP, TAG_TRIAL, tracking_uri)

# Fail fast when a tracking server is down (MLflow's defaults retry for minutes).
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
# Columns of a trials.parquet row that are not logged as params.
NOT_PARAMS = set(RESULT_COLUMNS)


def default_tracking_uri(results_dir: str | Path, configured: str | None = None) -> str:
    """The config's URI, else ``$MLFLOW_TRACKING_URI``, else SQLite at ``<results>/mlflow.db``."""
    return tracking_uri(results_dir, configured)


def _params(row: dict[str, Any]) -> dict[str, str]:
    """The config columns of a trials.parquet row (not status, final metrics or where it ran)."""
    return {k: str(v) for k, v in row.items() if k not in NOT_PARAMS and not k.startswith("final_")}


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


class Tracker:
    """Logs a sweep to MLflow from the driver; every call is a no-op once the store is unreachable."""

    def __init__(self, uri: str, sweep: str, experiment: str | None = None,
                 artifact_root: str | Path | None = None) -> None:
        self.uri, self.sweep = uri, sweep
        self.experiment = experiment or sweep
        self.artifact_root = Path(artifact_root).resolve() if artifact_root else None
        self.enabled = True
        self.client = None
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self._logged: dict[str, tuple[str, str]] = {}  # trial id -> (run id, status)

    @property
    def logged(self) -> int:
        """How many of the sweep's trials MLflow holds (as far as this tracker knows)."""
        return len(self._logged)

    def _off(self, exc: BaseException) -> None:
        if self.enabled:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            sys.stderr.write(f"warning: MLflow at {self.uri} unreachable ({first}); "
                             f"the sweep goes on and Parquet stays whole; run `mutransfer sync` later\n")
        self.enabled = False

    def start(self) -> bool:
        """Connect, find or create the experiment and the sweep's parent run. False if unreachable."""
        for k, v in _HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        try:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                loc = (self.artifact_root / self.experiment).as_uri() if self.artifact_root else None
                self.experiment_id = self.client.create_experiment(self.experiment, artifact_location=loc)
            else:
                self.experiment_id = exp.experiment_id
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
            parents = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_SWEEP}` = '{self.sweep}' and tags.`{TAG_ROLE}` = '{ROLE_SWEEP}'",
                max_results=1)
            if parents:
                self.parent_id = parents[0].info.run_id
            else:
                self.parent_id = self.client.create_run(
                    self.experiment_id, run_name=self.sweep,
                    tags={TAG_SWEEP: self.sweep, TAG_ROLE: ROLE_SWEEP}).info.run_id
            self._logged = self.logged_trials()
        except Exception as exc:  # any failure of the store: tracking off, sweep on
            self._off(exc)
        return self.enabled

    def logged_trials(self) -> dict[str, tuple[str, str]]:
        """``{trial id: (run id, status)}`` of the sweep's finished nested runs; half-logged ones are deleted."""
        ids, token = {}, None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_SWEEP}` = '{self.sweep}' and tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'",
                max_results=1000, page_token=token)
            for run in page:
                if run.info.status in ("FINISHED", "FAILED"):
                    ids[run.data.tags.get(TAG_TRIAL)] = (run.info.run_id, run.data.tags.get(TAG_STATUS, ""))
                else:  # half-logged by a driver that died: log it again
                    self.client.delete_run(run.info.run_id)
            token = page.token
            if not token:
                return ids

    def log_trial(self, row: dict[str, Any], spec: dict[str, Any], history: list[dict]) -> None:
        """One nested run: params once, metrics per epoch (step = epoch), status as a tag."""
        tid = row["trial_id"]
        if not self.enabled or self._logged.get(tid, ("", None))[1] == row["status"]:
            return
        from mlflow.entities import Metric, Param

        try:
            if tid in self._logged:  # an earlier run of this trial failed; this one replaces it
                self.client.delete_run(self._logged.pop(tid)[0])
            run = self.client.create_run(
                self.experiment_id, run_name=tid,
                tags={"mlflow.parentRunId": self.parent_id, TAG_SWEEP: self.sweep, TAG_ROLE: ROLE_TRIAL,
                      TAG_TRIAL: tid, TAG_STATUS: row["status"], "node": str(row.get("node", "")),
                      "device_used": str(row.get("device_used", "") or "")})
            rid = run.info.run_id
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(h[k]), now, int(h["epoch"]))
                       for h in history for k in EPOCH_METRICS if _finite(h.get(k))]
            last = max((int(h["epoch"]) for h in history), default=0)
            metrics += [Metric(k, float(row[k]), now, last) for k in FINAL_METRICS if _finite(row.get(k))]
            params = [Param(k, v) for k, v in _params(row).items()]
            for i in range(0, max(len(metrics), 1), 900):
                self.client.log_batch(rid, metrics=metrics[i:i + 900], params=params if i == 0 else [])
            self.client.set_terminated(rid, "FINISHED" if row["status"] != STATUS_FAILED else "FAILED")
            self._logged[tid] = (rid, row["status"])
        except Exception as exc:
            self._off(exc)

    def sync(self, trials: pd.DataFrame, history: pd.DataFrame, specs: dict[str, dict]) -> int:
        """Back-fill every trial in ``trials`` that MLflow lacks; returns how many were logged."""
        if not self.enabled or trials.empty:
            return 0
        n = 0
        groups = {tid: g.sort_values("epoch").to_dict("records") for tid, g in history.groupby("trial_id")} \
            if not history.empty else {}
        for row in trials.to_dict("records"):
            tid = row["trial_id"]
            if self._logged.get(tid, ("", None))[1] == row["status"] or tid not in specs:
                continue
            self.log_trial(row, specs[tid], groups.get(tid, []))
            n += self._logged.get(tid, ("", None))[1] == row["status"]
        return n

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        """Log sweep-level counts on the parent run and mark it finished (a re-run finds it by tag)."""
        if not self.enabled:
            return
        try:
            for k, v in (summary or {}).items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.client.log_metric(self.parent_id, k, float(v))
            self.client.set_terminated(self.parent_id, "FINISHED")
        except Exception as exc:
            self._off(exc)

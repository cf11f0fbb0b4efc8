"""MLflow tracking: one parent run per sweep, one nested run per trial (named by its trial id).

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

# Fail fast when a tracking server is down (MLflow's defaults retry for minutes).
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
TAG_SWEEP, TAG_ROLE, TAG_TRIAL = "mutransfer.sweep", "mutransfer.role", "mutransfer.trial_id"


def default_tracking_uri(results_dir: str | Path, configured: str | None = None) -> str:
    """The config's URI, else ``$MLFLOW_TRACKING_URI``, else SQLite at ``<results>/mlflow.db``."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(Path(results_dir).resolve() / 'mlflow.db')}"


def _params(spec: dict[str, Any]) -> dict[str, str]:
    out = {f"trainer.{k}": v for k, v in spec["trainer"].items()}
    out.update({f"data.{k}": v for k, v in spec["data"].items()})
    out.update({f"train.{k}": v for k, v in spec["train"].items()})
    return {k: str(v) for k, v in out.items()}


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
        self._logged: set[str] = set()

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
                filter_string=f"tags.`{TAG_SWEEP}` = '{self.sweep}' and tags.`{TAG_ROLE}` = 'parent'",
                max_results=1)
            if parents:
                self.parent_id = parents[0].info.run_id
            else:
                self.parent_id = self.client.create_run(
                    self.experiment_id, run_name=self.sweep,
                    tags={TAG_SWEEP: self.sweep, TAG_ROLE: "parent"}).info.run_id
            self._logged = self.logged_trials()
        except Exception as exc:  # any failure of the store: tracking off, sweep on
            self._off(exc)
        return self.enabled

    def logged_trials(self) -> set[str]:
        """Trial ids with a FINISHED nested run under this sweep's parent."""
        ids, token = set(), None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_SWEEP}` = '{self.sweep}' and tags.`{TAG_ROLE}` = 'trial'",
                max_results=1000, page_token=token)
            for run in page:
                if run.info.status == "FINISHED":
                    ids.add(run.data.tags.get(TAG_TRIAL))
                else:  # half-logged by a driver that died: log it again
                    self.client.delete_run(run.info.run_id)
            token = page.token
            if not token:
                return ids

    def log_trial(self, row: dict[str, Any], spec: dict[str, Any], history: list[dict]) -> None:
        """One nested run: params once, metrics per epoch (step = epoch), status as a tag."""
        if not self.enabled or row["trial_id"] in self._logged:
            return
        from mlflow.entities import Metric, Param, RunTag

        try:
            tid = row["trial_id"]
            run = self.client.create_run(
                self.experiment_id, run_name=tid,
                tags={"mlflow.parentRunId": self.parent_id, TAG_SWEEP: self.sweep, TAG_ROLE: "trial",
                      TAG_TRIAL: tid, "status": row["status"], "node": str(row.get("node", ""))})
            rid = run.info.run_id
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(h[k]), now, int(h["epoch"]))
                       for h in history for k in ("train_loss", "test_loss", "test_acc", "wall_s")
                       if h.get(k) is not None and not (isinstance(h[k], float) and math.isnan(h[k]))]
            params = [Param(k, v) for k, v in _params(spec).items()]
            for i in range(0, max(len(metrics), 1), 900):
                self.client.log_batch(rid, metrics=metrics[i:i + 900], params=params if i == 0 else [],
                                      tags=[RunTag("trial_status", row["status"])] if i == 0 else [])
            self.client.set_terminated(rid, "FINISHED" if row["status"] != "failed" else "FAILED")
            self._logged.add(tid)
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
            if tid in self._logged or tid not in specs:
                continue
            self.log_trial(row, specs[tid], groups.get(tid, []))
            n += tid in self._logged
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

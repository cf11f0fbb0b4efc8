"""The driver's recorder: receives trial events from Ray Tune and writes each finished trial once.

Parquet first (:class:`orchestrator.stores.results_store.ResultsStore`), then MLflow
(:class:`orchestrator.stores.tracking.Tracker`), then the progress line. Used by the grid sweep
(:mod:`orchestrator.studies.sweep`) and by tune-base, through the command's session (:mod:`orchestrator.engine.session`).
"""

from __future__ import annotations

import math
import time

from analysis.schema import HISTORY_COLUMNS, STATUS_DIVERGED, STATUS_FAILED, STATUS_OK
from orchestrator.engine.progress import Progress
from orchestrator.spec.config import Sweep
from orchestrator.stores.results_store import ResultsStore, trial_row
from orchestrator.stores.tracking import Tracker


class Recorder:
    """Receives trial events in the driver; writes each finished trial to Parquet, then MLflow.

    A trial is written once: from its result marked ``last`` (so before Tune tells a searcher
    such as Optuna that it completed), or on Tune's complete/error event if no such result came.
    Events for a trial already written (a retried pack's member that had finished) change nothing.
    """

    def __init__(self, sweep: Sweep, store: ResultsStore, tracker: Tracker | None, progress: Progress) -> None:
        self.sweep, self.store, self.tracker, self.progress = sweep, store, tracker, progress
        self.specs = {t.trial_id: t.to_dict() for t in sweep.trials}
        self.history: dict[str, dict[int, dict]] = {}
        self.where: dict[str, tuple[str, str]] = {}
        self.retries: dict[str, int] = {}
        self.devices: dict[str, str] = {}
        self.backends: dict[str, str] = {}  # trainers' matmul_backend: the product backends the trial used
        self.finished: set[str] = set()
        self.times: dict[str, tuple[float, float]] = {}  # the trial's own start and last report (epoch s)

    def started(self, trial_id: str) -> None:
        if trial_id in self.finished:
            return
        self.history[trial_id] = {}
        self.progress.started(trial_id)
        self._live()

    def result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.finished:
            return
        if result.get("started_at") is not None:
            self.times[trial_id] = (float(result["started_at"]), float(result.get("reported_at") or time.time()))
        if result.get("failed"):  # set-up failed in the worker: recorded once, not retried
            self.where[trial_id] = (str(result.get("node", "")), str(result.get("hostname", "")))
            self._finish(trial_id, STATUS_FAILED, str(result.get("error", "")))
            return
        if "epoch" not in result:
            return
        if result.get("device_used"):
            self.devices[trial_id] = str(result["device_used"])
        if result.get("matmul_backend"):
            self.backends[trial_id] = str(result["matmul_backend"])
        keep = (*HISTORY_COLUMNS[1:], "diverged")
        self.history.setdefault(trial_id, {})[int(result["epoch"])] = {k: result.get(k) for k in keep}
        self.where[trial_id] = (str(result.get("node", "")), str(result.get("hostname", "")))
        if result.get("last"):
            self._finish(trial_id, None)
        else:
            self.progress.render()

    def restarted(self, trial_id: str) -> None:
        if trial_id in self.finished:
            return
        self.history[trial_id] = {}  # the retried trial starts again from epoch 1
        self.retries[trial_id] = self.retries.get(trial_id, 0) + 1
        self.progress.retried(trial_id)

    def _finish(self, trial_id: str, status: str | None, error: str = "") -> None:
        if trial_id in self.finished:
            return
        self.finished.add(trial_id)
        rows = [self.history.get(trial_id, {})[e] for e in sorted(self.history.get(trial_id, {}))]
        if status is None:
            status = STATUS_DIVERGED if rows and rows[-1].get("diverged") else STATUS_OK
        node, host = self.where.get(trial_id, ("", ""))
        row = trial_row(self.sweep.name, self.specs[trial_id], rows, status, node, host, error)
        row["retries"] = self.retries.get(trial_id, 0)
        row["device_used"] = self.devices.get(trial_id, "")
        row["matmul_backend"] = self.backends.get(trial_id, "")
        row["started_at"], row["finished_at"] = self.times.get(trial_id, (math.nan, time.time()))
        self.store.record([row], {trial_id: rows})  # Parquet first: the truth
        if self.tracker is not None:
            self.tracker.log_trial(row, self.specs[trial_id], rows)
        self.progress.finished(trial_id, status, row)
        self._live()

    def _live(self) -> None:
        """The counts on the sweep's MLflow parent run (throttled there: ``Tracker.log_progress``)."""
        if self.tracker is not None:
            p = self.progress
            self.tracker.log_progress({**p.counts, "running": len(p.running), "skipped": p.skipped}, p.total)

    def completed(self, trial_id: str) -> None:
        self._finish(trial_id, None)

    def errored(self, trial_id: str, error: str) -> None:
        self._finish(trial_id, STATUS_FAILED, error)

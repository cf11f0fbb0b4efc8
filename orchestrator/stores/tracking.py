"""MLflow tracking: one parent run per sweep, one nested run per trial.

Layout (docs/ARCHITECTURE.md, "The results contract"): experiment = sweep name (or
``tracking.experiment``), tagged ``mlflow.experimentKind=custom_model_development`` (the UI opens
the runs table, not GenAI traces) and carrying the runs-table view ``mlflow.sharedViewState.mutransfer``.
Parent run named after the sweep: params = the resolved config, artifacts ``sweep.yaml`` (and
``base_lr.json``), the description a summary (:mod:`orchestrator.stores.run_summary`). One nested run per
trial, named readably (``pc-mup-w256-lr2^-6-T20-s0``), started and ended at the trial's own times,
status FINISHED (ok), KILLED (diverged: stopped early by the divergence check) or FAILED; tags
``mutransfer.*`` (trial id, sweep, status, format) and the trial's own numbers (:data:`SUMMARY_TAGS`:
``final_*``, ``epochs_done``, ``wall_s``, ``diverged``, where it diverged; 4 significant figures,
filterable as ``tags.final_test_loss``), params = the config columns plus ``log2_lr``, metrics only
the learning curves (per epoch: step = epoch, timestamp = when the epoch ended), so that a trial's chart
page shows them and no one-point charts of constants (MLflow 3.17 lays a run's charts out by key,
alphabetically). While a sweep runs, :meth:`Tracker.log_progress` keeps live counts on the parent run.

With the default store (SQLite in the results directory) the experiment's artifact location is
``mlflow-artifacts:/<experiment>``, written here under ``<results>/mlartifacts/<experiment>`` and
served by ``mutransfer ui`` (``--artifacts-destination <results>/mlartifacts``): a results
directory copied elsewhere keeps every artifact. MLflow is for looking; Parquet is the truth. A
:class:`Tracker` that cannot reach its store switches itself off with one warning, and the sweep
goes on; :meth:`Tracker.sync` back-fills (or re-logs in this format) every trial that Parquet has.

Several drivers may share one SQLite store (different sweeps in one results directory): MLflow
creates and migrates a new store's tables without a lock, so :meth:`Tracker.start` connects under
:func:`store_lock` (``flock`` on ``<db>.lock`` beside it) and the first of them creates the tables
while the others wait. :func:`check_store` tells a damaged SQLite file (cut short, overwritten) from
a good one before a command relies on it.
"""

from __future__ import annotations

import fcntl
import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from analysis.schema import (  # noqa: F401
    EPOCH_METRICS,
    FINAL_METRICS,
    MLFLOW_METRIC_KEYS,
    RESULT_COLUMNS,
    ROLE_SWEEP,
    ROLE_TRIAL,
    SGD_STEPS,
    STATUS_DIVERGED,
    STATUS_FAILED,
    STATUS_OK,
    TAG_COLUMNS,
    TAG_FORMAT,
    TAG_ROLE,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    TRACKING_FORMAT,
    tracking_uri,
)
from orchestrator.errors import BadInput
from orchestrator.stores import run_summary as rs

# Fail fast when a tracking server is down (MLflow's defaults retry for minutes).
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
# Columns of a trials.parquet row that are not logged as params (trial_id and sweep are tags).
NOT_PARAMS = set(RESULT_COLUMNS) | set(TAG_COLUMNS)
# MLflow run status per trial status: a diverged trial was stopped early by the divergence check.
RUN_STATUS = {STATUS_OK: "FINISHED", STATUS_DIVERGED: "KILLED", STATUS_FAILED: "FAILED"}
DONE_RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
NOTE = "mlflow.note.content"  # a run's description (markdown) in MLflow's UI
MAX_NOTE = 8000  # characters of a description (a tag value: MLflow's MAX_TAG_VAL_LENGTH)
TAG_REPORT = "mutransfer.report"  # on a parent run whose description is the verdict table
# The layout of the runs (tag ``mutransfer.format``): "3" logs a trial's own numbers as tags, not metrics;
# `mutransfer sync` re-logs runs of an older format (analysis.schema.TRACKING_FORMAT).
# A trial's own numbers, logged as tags (4 significant figures; ∞ as "inf"): results, not curves.
SUMMARY_TAGS = (*FINAL_METRICS, "diverged")
TAG_PROGRESS = "mutransfer.progress"  # on the parent run while its sweep runs: "12/40 done"
PROGRESS_INTERVAL_S = 10.0  # at most one progress write per this many seconds (and always the last)


def default_tracking_uri(results_dir: str | Path, configured: str | None = None) -> str:
    """The config's URI, else ``$MLFLOW_TRACKING_URI``, else SQLite at ``<results>/mlflow.db``."""
    return tracking_uri(results_dir, configured)


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "databricks"))


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (None for other stores and in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


LOCK_TIMEOUT_S = 120.0


@contextmanager
def store_lock(uri: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``<db>.lock`` beside a SQLite store (nothing for
    other stores): MLflow creates and migrates a new store's tables without one, and two processes
    doing it at once fail (``duplicate column name``). ``flock``: on one host every process sees it,
    on NFS (v4, or v3 with its lock manager) Linux turns it into a POSIX lock that other hosts see;
    a file system without locks (ENOLCK, EOPNOTSUPP) goes on without it.

    Raises:
        TimeoutError: another process held it for ``timeout_s`` seconds.
    """
    path = sqlite_path(uri)
    fd = None
    if path is not None:
        lock = path.with_name(path.name + ".lock")
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # a read-only directory: nobody can create the store there either
            fd = None
    try:
        if fd is not None:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{path}.lock: held by another process for {timeout_s:g} s") from None
                    time.sleep(0.05)
                except OSError:  # no locks on this file system
                    break
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def check_store(uri: str) -> None:
    """BadInput (one line: what is wrong, what to do) when ``uri`` is a SQLite file that is not a
    readable database (cut short, overwritten); nothing for other stores or a file not there yet."""
    path = sqlite_path(uri)
    if path is None or not path.is_file():
        return
    try:
        con = sqlite3.connect(str(path), timeout=30)  # read-write: a hot journal is rolled back, as MLflow would
        try:
            rows = con.execute("PRAGMA quick_check(1)").fetchall()
        finally:
            con.close()
        problem = None if rows == [("ok",)] else str(rows[0][0] if rows else "no answer")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "readonly" in str(exc) or "unable to open" in str(exc):
            return  # busy, or not writable here: not damaged; MLflow says what it finds
        problem = str(exc)
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        problem = str(exc) or type(exc).__name__
    if problem is not None:
        raise BadInput(
            f"{path}: the MLflow tracking store is damaged ({problem.splitlines()[0][:160]}); move it aside "
            f"(mv {path} {path}.broken) and run `mutransfer sync RESULTS/NAME` for each sweep: it rebuilds "
            "the MLflow runs from the Parquet results"
        )


def _params(row: dict[str, Any]) -> dict[str, str]:
    """The config columns of a trials.parquet row (not its id, sweep, status, results or where it ran),
    and ``log2_lr``."""
    out = {k: str(v) for k, v in row.items() if k not in NOT_PARAMS and not k.startswith("final_")}
    out["log2_lr"] = f"{rs.log2_lr(row['lr']):g}"
    return out


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def divergence(row: dict[str, Any], history: list[dict]) -> dict[str, float]:
    """Where a diverged trial diverged, from its history (empty for other trials): ``diverged_at_epoch``
    (the epoch whose row is marked ``diverged``), ``diverged_at_step`` (the optimizer updates applied
    before it, the row's ``sgd_steps``, when the history has them) and ``loss_at_divergence`` (that
    row's ``train_loss``: ∞ when a step's loss was not finite or above ``diverge_loss``, finite when
    the test loss diverged; the step's own loss is not recorded) and ``last_finite_train_loss`` (the
    epoch before's, when there is one)."""
    if row.get("status") != STATUS_DIVERGED or not history:
        return {}
    rows = sorted(history, key=lambda h: int(h["epoch"]))
    hit = next((h for h in rows if _finite(h.get("diverged")) and bool(h["diverged"])), rows[-1])
    out: dict[str, float] = {"diverged_at_epoch": float(hit["epoch"])}
    if _finite(hit.get(SGD_STEPS)):
        out["diverged_at_step"] = float(hit[SGD_STEPS])
    try:
        out["loss_at_divergence"] = float(hit.get("train_loss"))
    except (TypeError, ValueError):
        pass
    before = [h for h in rows if int(h["epoch"]) < int(hit["epoch"]) and _finite(h.get("train_loss"))]
    if before:
        out["last_finite_train_loss"] = float(before[-1]["train_loss"])
    return out


class Tracker:
    """Logs a sweep to MLflow from the driver; every call is a no-op once the store is unreachable."""

    def __init__(
        self, uri: str, sweep: str, experiment: str | None = None, artifact_root: str | Path | None = None
    ) -> None:
        self._starter: threading.Thread | None = None  # start(background=True)'s thread, until joined
        self.uri, self.sweep = uri, sweep
        self.experiment = experiment or sweep
        self.artifact_root = Path(artifact_root).resolve() if artifact_root else None
        self.proxied = self.artifact_root is not None and not is_remote(uri)  # mlflow-artifacts:/ under results
        self.enabled = True
        self.client = None
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.repaired: str | None = None  # the name the experiment of an older layout was moved to
        self.times: dict[str, tuple[float, float]] = {}  # trial id -> (start, end), for rows without them
        self._logged: dict[str, tuple[str, str]] = {}  # trial id -> (run id, status), current format only
        self._stale: dict[str, list[str]] = {}  # trial id -> run ids logged in an older format
        self._param_keys: dict[str, set[str]] = {}  # trial id -> the params its run holds (current format)
        self._progress: tuple[dict[str, int], int] | None = None  # the latest counts not yet written
        self._progress_at = -math.inf  # time.monotonic() of the last progress write

    def _wait(self) -> None:
        """Wait for a background :meth:`start` to end (not from its own thread)."""
        starter = self._starter
        if starter is not None and starter is not threading.current_thread():
            starter.join()
            self._starter = None

    @property
    def enabled(self) -> bool:
        """Whether MLflow takes calls; waits for a background :meth:`start` (every call asks this first)."""
        self._wait()
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = value

    @property
    def logged(self) -> int:
        """How many of the sweep's trials MLflow holds in this format (as far as this tracker knows)."""
        self._wait()
        return len(self._logged)

    def _off(self, exc: BaseException) -> None:
        if self.enabled:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            sys.stderr.write(
                f"warning: MLflow at {self.uri} unreachable or refused a call ({first}); "
                f"the sweep goes on and Parquet stays whole; run `mutransfer sync` later\n"
            )
        self.enabled = False

    # ---- connecting ------------------------------------------------------------------------
    def start(self, repair: bool = False, create: bool = True, background: bool = False) -> bool:
        """Connect, find or create the experiment and the sweep's parent run. False if unreachable
        (or, with ``create=False``, if either does not exist).

        ``background``: do it in a thread and return True at once; the first call that needs the store
        waits for it (a new SQLite store's tables take seconds to create: meanwhile Ray Tune starts).

        With ``repair`` an experiment whose artifacts are stored by absolute path (written before
        artifacts were served from the results directory) is renamed and deleted (restorable with
        MLflow's ``restore_experiment``) and created again; :meth:`sync` then re-logs its trials.
        """
        for k, v in _HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        if background:
            self._starter = threading.Thread(target=self.start, args=(repair, create), name="mlflow-start", daemon=True)
            self._starter.start()
            return True
        try:
            with store_lock(self.uri):  # the first driver on a new SQLite store creates its tables alone
                self._connect(repair, create)
            if self.enabled:
                self._logged = self.logged_trials()
        except Exception as exc:  # any failure of the store: tracking off, sweep on
            self._off(exc)
        return self.enabled

    def _connect(self, repair: bool, create: bool) -> None:
        """:meth:`start`'s work: the client, the experiment, the parent run, the trials logged."""
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None and repair and self.proxied and not exp.artifact_location.startswith("mlflow-artifacts:"):
            self.repaired = f"{self.experiment}.before-sync-{time.strftime('%Y%m%d-%H%M%S')}"
            self.client.rename_experiment(exp.experiment_id, self.repaired)
            self.client.delete_experiment(exp.experiment_id)
            exp = None
        if exp is None and not create:
            self.enabled = False
            return
        self._open_experiment(exp)
        self.client.set_experiment_tag(self.experiment_id, *EXPERIMENT_KIND)
        self.client.set_experiment_tag(self.experiment_id, f"mlflow.sharedViewState.{rs.VIEW_KEY}", rs.view_state())
        parents = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_SWEEP}` = '{self.sweep}' and tags.`{TAG_ROLE}` = '{ROLE_SWEEP}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if parents:
            self.parent_id = parents[0].info.run_id
            if create and parents[0].data.tags.get(TAG_FORMAT) != TRACKING_FORMAT:  # its trials are re-logged
                self.client.set_tag(self.parent_id, TAG_FORMAT, TRACKING_FORMAT)
        elif not create:
            self.enabled = False
            return
        else:
            self.parent_id = self.client.create_run(
                self.experiment_id,
                run_name=self.sweep,
                tags={TAG_SWEEP: self.sweep, TAG_ROLE: ROLE_SWEEP, TAG_FORMAT: TRACKING_FORMAT},
            ).info.run_id

    def _open_experiment(self, exp) -> None:
        """``self.experiment_id``: ``exp``'s (restored if deleted), or a new experiment's when ``exp`` is None
        (its artifacts served from the results directory when the store is local)."""
        if exp is None:
            loc = f"mlflow-artifacts:/{self.experiment}" if self.proxied else None
            self.experiment_id = self.client.create_experiment(self.experiment, artifact_location=loc)
        else:
            self.experiment_id = exp.experiment_id
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)

    def logged_trials(self) -> dict[str, tuple[str, str]]:
        """``{trial id: (run id, status)}`` of the sweep's finished nested runs in this format;
        half-logged ones (a driver died while logging) are deleted, older formats left for :meth:`log_trial`
        to replace."""
        ids, token = {}, None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{TAG_SWEEP}` = '{self.sweep}' and tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'",
                max_results=1000,
                page_token=token,
            )
            for run in page:
                tid = run.data.tags.get(TAG_TRIAL)
                if run.info.status not in DONE_RUN_STATUSES:
                    self.client.delete_run(run.info.run_id)
                elif run.data.tags.get(TAG_FORMAT) == TRACKING_FORMAT:
                    ids[tid] = (run.info.run_id, run.data.tags.get(TAG_STATUS, ""))
                    self._param_keys[tid] = set(run.data.params)
                else:
                    self._stale.setdefault(tid, []).append(run.info.run_id)
            token = page.token
            if not token:
                return ids

    # ---- trial runs ------------------------------------------------------------------------
    def _times(self, row: dict[str, Any]) -> tuple[float, float]:
        """The trial's own (start, end) in epoch seconds: the row's, else Tune's records, else its
        wall time ending now."""
        start, end = row.get("started_at"), row.get("finished_at")
        if not _finite(start) and row["trial_id"] in self.times:
            start, end = self.times[row["trial_id"]]
        wall = float(row["wall_s"]) if _finite(row.get("wall_s")) else 0.0
        if not _finite(start):
            end = float(end) if _finite(end) else time.time()
            return end - wall, end
        start = float(start)
        return start, float(end) if _finite(end) and float(end) >= start else start + wall

    def log_trial(self, row: dict[str, Any], spec: dict[str, Any], history: list[dict]) -> None:
        """One nested run: params and tags once, metrics per epoch (step = epoch), the trial's own times."""
        tid = row["trial_id"]
        if not self.enabled or self._logged.get(tid, ("", None))[1] == row["status"]:
            return
        from mlflow.entities import Metric, Param

        try:
            if tid in self._logged:  # an earlier run of this trial failed; this one replaces it
                self.client.delete_run(self._logged.pop(tid)[0])
            for old in self._stale.pop(tid, []):  # logged in an older format: replaced
                self.client.delete_run(old)
            start, end = self._times(row)
            start_ms, end_ms = int(start * 1000), int(end * 1000)
            tags = {
                "mlflow.parentRunId": self.parent_id,
                TAG_SWEEP: self.sweep,
                TAG_ROLE: ROLE_TRIAL,
                TAG_TRIAL: tid,
                TAG_STATUS: row["status"],
                TAG_FORMAT: TRACKING_FORMAT,
            }
            tags.update(
                {
                    k: str(row[k])
                    for k in ("node", "hostname", "device_used", "matmul_backend", "retries")
                    if row.get(k) not in (None, "") and not (isinstance(row[k], float) and math.isnan(row[k]))
                }
            )
            # the trial's own numbers (final values, epochs, time, where it diverged) are tags, not metrics:
            # MLflow would chart each, one point apiece, ahead of the learning curves
            tags.update(rs.trial_summary(row, SUMMARY_TAGS, divergence(row, history)))
            if row.get("error"):
                tags["error"] = str(row["error"])[:5000]
                tags[NOTE] = f"**failed**: {row['error']}"[:5000]
            run = self.client.create_run(
                self.experiment_id, start_time=start_ms, tags=tags, run_name=rs.run_name(row, spec.get("swept", ()))
            )
            rid = run.info.run_id
            metrics = [
                Metric(
                    MLFLOW_METRIC_KEYS.get(k, k),  # train_loss as "loss": the first chart
                    float(h[k]),
                    min(end_ms, start_ms + int(1000 * float(h.get("wall_s") or 0))),
                    int(h["epoch"]),
                )
                for h in history
                for k in (*EPOCH_METRICS, SGD_STEPS)  # sgd_steps: an x axis for the charts besides the epoch
                if _finite(h.get(k))
            ]
            params = [Param(k, v) for k, v in _params(row).items()]
            for i in range(0, max(len(metrics), 1), 900):
                self.client.log_batch(rid, metrics=metrics[i : i + 900], params=params if i == 0 else [])
            self.client.set_terminated(rid, RUN_STATUS.get(row["status"], "FAILED"), end_time=end_ms)
            self._logged[tid] = (rid, row["status"])
            self._param_keys[tid] = {p.key for p in params}
        except Exception as exc:
            self._off(exc)

    def sync(
        self, trials: pd.DataFrame, history: pd.DataFrame, specs: dict[str, dict], tune_dir: str | Path | None = None
    ) -> int:
        """Back-fill every trial in ``trials`` that MLflow lacks (or holds in an older format); returns
        how many were logged. ``tune_dir``: Tune's storage, for the times of rows that lack them."""
        if not self.enabled or trials.empty:
            return 0
        if tune_dir is not None and ("started_at" not in trials or trials["started_at"].isna().any()):
            from orchestrator.engine.recover import tune_times

            self.times.update(tune_times(tune_dir))
        n = 0
        groups = (
            {tid: g.sort_values("epoch").to_dict("records") for tid, g in history.groupby("trial_id")}
            if not history.empty
            else {}
        )
        for row in trials.to_dict("records"):
            tid = row["trial_id"]
            if self._logged.get(tid, ("", None))[1] == row["status"]:
                self._add_params(tid, row)  # a key that became a grid axis: its value joins the run's params
                continue
            if tid not in specs:
                continue
            self.log_trial(row, specs[tid], groups.get(tid, []))
            n += self._logged.get(tid, ("", None))[1] == row["status"]
        return n

    def _add_params(self, tid: str, row: dict[str, Any]) -> None:
        """Log the params of ``row`` that its run lacks (MLflow params cannot change, but new ones may be
        added): a study grown by an axis (``ResultsStore.restate_axes``) groups its old runs by it too."""
        from mlflow.entities import Param

        have = self._param_keys.get(tid)
        if have is None:
            return
        new = {k: v for k, v in _params(row).items() if k not in have and v not in ("nan", "None", "")}
        if not new:
            return
        try:
            self.client.log_batch(self._logged[tid][0], params=[Param(k, v) for k, v in new.items()])
            have |= set(new)
        except Exception as exc:
            self._off(exc)

    # ---- artifacts and the parent run ------------------------------------------------------
    def log_artifacts(self, run_id: str, paths: Iterable[str | Path], artifact_path: str | None = None) -> None:
        """Log files (or a directory's files) to ``run_id``; under ``mlflow-artifacts:/`` with a local
        store they are written to the results directory's ``mlartifacts/``, which ``mutransfer ui`` serves."""
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

        uri = self.client.get_run(run_id).info.artifact_uri
        repo = None
        if uri.startswith("mlflow-artifacts:") and self.proxied:
            repo = LocalArtifactRepository((self.artifact_root / urlparse(uri).path.lstrip("/")).as_uri())
        for p in map(Path, paths):
            if p.is_dir():
                (
                    repo.log_artifacts(str(p), artifact_path)
                    if repo
                    else self.client.log_artifacts(run_id, str(p), artifact_path)
                )
            elif p.is_file():
                (
                    repo.log_artifact(str(p), artifact_path)
                    if repo
                    else self.client.log_artifact(run_id, str(p), artifact_path)
                )

    def describe(
        self,
        config: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
        description: str | None = None,
    ) -> None:
        """On the parent run: ``config`` as params (keys it already has are kept: MLflow params are
        immutable), metrics, tags and the description (markdown)."""
        if not self.enabled:
            return
        from mlflow.entities import Metric, Param, RunTag

        try:
            have = self.client.get_run(self.parent_id).data.params
            params = [Param(k, v) for k, v in rs.config_params(config or {}).items() if k not in have]
            now = int(time.time() * 1000)
            ms = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if _finite(v)]
            ts = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
            if description is not None:
                ts.append(RunTag(NOTE, description))
            for i in range(0, max(len(params), len(ms), len(ts), 1), 100):
                self.client.log_batch(
                    self.parent_id, metrics=ms[i : i + 100], params=params[i : i + 100], tags=ts[i : i + 100]
                )
        except Exception as exc:
            self._off(exc)

    def log_series(self, points: Iterable[tuple[str, float, int]]) -> None:
        """Metric series on the parent run, ``(key, value, step)`` (:func:`run_summary.transfer_series`):
        the chart view draws each key as a line against its step. A key logged before is replaced
        (its old points deleted), so a re-analysis does not mix two studies."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        try:
            now = int(time.time() * 1000)
            ms = [Metric(k, float(v), now, int(step)) for k, v, step in points if _finite(v)]
            have = set(self.client.get_run(self.parent_id).data.metrics)
            stale = {m.key for m in ms} & have
            if stale:
                self._delete_metric_history(stale)
            for i in range(0, len(ms), 900):
                self.client.log_batch(self.parent_id, metrics=ms[i : i + 900])
        except Exception as exc:
            self._off(exc)

    def _delete_metric_history(self, keys: set[str]) -> None:
        """Forget the parent run's points of ``keys`` (SQLite store only; elsewhere the new points add
        to the old ones, which at the same step the chart view shows as the latest)."""
        path = sqlite_path(self.uri)
        if path is None:
            return
        try:
            con = sqlite3.connect(str(path), timeout=30)
        except sqlite3.Error:
            return
        try:
            with con:
                for k in keys:
                    con.execute("DELETE FROM metrics WHERE run_uuid = ? AND key = ?", (self.parent_id, k))
                    con.execute("DELETE FROM latest_metrics WHERE run_uuid = ? AND key = ?", (self.parent_id, k))
        except sqlite3.Error:  # another schema: the new points add to the old
            pass
        finally:
            con.close()

    def log_progress(self, counts: dict[str, int], total: int, force: bool = False) -> None:
        """Live counts on the parent run while its sweep runs: metrics ``progress/<name>`` for each of
        ``counts`` (the progress line's ``ok``, ``diverged``, ``failed``, ``running``, ``skipped``, ...),
        ``progress/done`` (every count but ``running``) and ``progress/total``, and the tag
        ``mutransfer.progress`` (``12/40 done: ok 10, diverged 2, ... running 4``), in one request.
        At most one write every :data:`PROGRESS_INTERVAL_S` seconds (unless ``force``); the counts held
        back are written by the next call after it, by :meth:`flush_progress` or by :meth:`finish`.
        Step 0: the runs table shows the latest write."""
        if not self.enabled:
            return
        self._progress = ({str(k): int(v) for k, v in counts.items()}, int(total))
        if force or time.monotonic() - self._progress_at >= PROGRESS_INTERVAL_S:
            self.flush_progress()

    def flush_progress(self) -> None:
        """Write the counts :meth:`log_progress` held back (nothing when none are)."""
        if not self.enabled or self._progress is None:
            return
        from mlflow.entities import Metric, RunTag

        counts, total = self._progress
        self._progress, self._progress_at = None, time.monotonic()
        done = sum(v for k, v in counts.items() if k not in ("running", "retries", "done", "total"))
        values = {**counts, "done": done, "total": total}
        now = int(time.time() * 1000)
        text = f"{done}/{total} done: " + ", ".join(f"{k} {v}" for k, v in counts.items() if k != "done")
        try:
            self.client.log_batch(
                self.parent_id,
                metrics=[Metric(f"progress/{k}", float(v), now, 0) for k, v in values.items()],
                tags=[RunTag(TAG_PROGRESS, text)],
            )
        except Exception as exc:
            self._off(exc)

    def set_experiment_description(self, text: str) -> None:
        """The experiment's description (markdown; MLflow's experiment page shows the tag ``mlflow.note.content``)."""
        if not self.enabled:
            return
        try:
            self.client.set_experiment_tag(self.experiment_id, NOTE, text)
        except Exception as exc:
            self._off(exc)

    def finish(
        self,
        summary: dict[str, Any] | None = None,
        files: Iterable[str | Path] = (),
        config: dict[str, Any] | None = None,
        description: str | None = None,
    ) -> None:
        """The parent run: counts as metrics, ``config`` as params, ``files`` as artifacts, the
        description (kept when it is already the verdict table of a report); then marked finished."""
        if not self.enabled:
            return
        self.flush_progress()  # the last counts, held back by the throttle
        try:
            counts = {
                k.removeprefix("trials_"): int(v)
                for k, v in (summary or {}).items()
                if k.startswith("trials_") and _finite(v)
            }
            if description is None and counts and TAG_REPORT not in self.client.get_run(self.parent_id).data.tags:
                description = rs.sweep_description(self.sweep, counts)
            self.describe(config, {k: v for k, v in (summary or {}).items() if _finite(v)}, None, description)
            if self.enabled:
                self.log_artifacts(self.parent_id, files)
                self.client.set_terminated(self.parent_id, "FINISHED")
        except Exception as exc:
            self._off(exc)


def log_report(
    report_dir: str | Path, uri: str, experiment: str, sweep: str, artifact_root: str | Path | None = None
) -> str | None:
    """Log ``report_dir`` under ``report/`` of the sweep's parent run; its description becomes the
    verdict table (from ``summary.json``) with links to the report, its tags ``verdict/<group>``,
    its metrics ``drift_k/<group>``, ``max_regret/<group>``, ... (:func:`run_summary.verdict_summary`).

    ``report.md`` is logged with its image links pointing at the server's artifacts, so that
    MLflow's markdown viewer shows the plots. ``artifact_root`` defaults to ``mlartifacts/`` beside
    a SQLite store.

    Returns:
        The parent run's id, or None when the experiment or the run does not exist (or MLflow is unreachable).
    """
    import tempfile

    report_dir = Path(report_dir)
    if artifact_root is None and uri.startswith("sqlite:///"):
        artifact_root = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    tr = Tracker(uri, sweep, experiment, artifact_root=artifact_root)
    if not tr.start(create=False):
        return None
    rid = tr.parent_id
    with tempfile.TemporaryDirectory() as tmp:
        md = report_dir / "report.md"
        files = [p for p in report_dir.iterdir() if p.is_file() and p.name != "report.md"]
        if md.is_file():
            (Path(tmp) / "report.md").write_text(rs.md_for_mlflow(md.read_text(), rid))
            files.append(Path(tmp) / "report.md")
        tr.log_artifacts(rid, files, "report")
        previews = _previews(report_dir, Path(tmp) / "preview")
        tr.log_artifacts(rid, [Path(tmp) / "preview" / p for p in previews], "report/preview")
    summary = rs.read_json(report_dir / "summary.json")
    if summary is not None:
        text, metrics, tags = rs.verdict_summary(summary, rid, {p: f"report/preview/{p}" for p in previews})
        tr.describe(metrics=metrics, tags={**tags, TAG_REPORT: "report/report.html"}, description=text)
        trials = _read_trials(report_dir.parent)
        tr.log_series(rs.transfer_series(summary, trials))
        config = _read_yaml(report_dir.parent / "sweep.yaml")
        tr.set_experiment_description(rs.experiment_description(summary, config, trials, rid))
    return rid if tr.enabled else None


COMPARISONS = "comparisons"  # the MLflow experiment of `mutransfer analyze A B ... --out DIR`
ROLE_COMPARISON, TAG_COMPARISON = "comparison", "mutransfer.comparison"


def log_comparison(
    out_dir: str | Path, uri: str, sweeps: list[str], artifact_root: str | Path | None = None
) -> str | None:
    """Log a comparison report (``analysis.compare.write_comparison``'s ``out_dir``) as one run of the
    :data:`COMPARISONS` experiment: its files under ``comparison/``, ``report.md`` as its description (the
    figure shown from the server), tag ``mutransfer.sweeps``. A second comparison into the same directory
    updates that run. ``artifact_root`` defaults to ``mlartifacts/`` beside a SQLite store.

    Returns:
        The run's id, or None when MLflow is unreachable (a warning says so).
    """
    import tempfile

    from mlflow.entities import RunTag

    out_dir = Path(out_dir).resolve()
    if artifact_root is None and uri.startswith("sqlite:///"):
        artifact_root = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    tr = Tracker(uri, out_dir.name, COMPARISONS, artifact_root=artifact_root)
    try:
        from mlflow.tracking import MlflowClient

        with store_lock(uri):
            tr.client = client = MlflowClient(tracking_uri=uri)
            tr._open_experiment(client.get_experiment_by_name(COMPARISONS))
        eid = tr.experiment_id
        found = client.search_runs(
            [eid],
            filter_string=f"tags.`{TAG_ROLE}` = '{ROLE_COMPARISON}' and tags.`{TAG_COMPARISON}` = '{out_dir}'",
            max_results=1,
        )
        if found:
            rid = found[0].info.run_id
        else:
            rid = client.create_run(
                eid, run_name=out_dir.name, tags={TAG_ROLE: ROLE_COMPARISON, TAG_COMPARISON: str(out_dir)}
            ).info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            files = [f for f in out_dir.iterdir() if f.is_file() and f.name != "report.md"]
            text = ""
            if (out_dir / "report.md").is_file():
                text = rs.md_for_mlflow((out_dir / "report.md").read_text(), rid, "comparison")
                (Path(tmp) / "report.md").write_text(text)
                files.append(Path(tmp) / "report.md")
            tr.log_artifacts(rid, files, "comparison")
        if len(text) > MAX_NOTE:
            tail = "\n\n… (cut here: the whole report is the artifact comparison/report.md)"
            text = text[: MAX_NOTE - len(tail)] + tail
        client.log_batch(rid, tags=[RunTag("mutransfer.sweeps", ", ".join(sweeps)), RunTag(NOTE, text)])
        client.set_terminated(rid)
        return rid
    except Exception as exc:  # the report is written; MLflow is for looking
        tr._off(exc)
        return None


def _previews(report_dir: Path, out: Path, max_px: int = rs.PREVIEW_PX) -> list[str]:
    """Copies at most ``max_px`` wide, in ``out``, of the description's figures (:data:`run_summary.DESCRIPTION_IMAGES`)
    that are wider; returns their file names (none when Pillow cannot read a figure: the original is shown)."""
    names = []
    for png, _ in rs.DESCRIPTION_IMAGES:
        try:
            from PIL import Image

            with Image.open(report_dir / png) as im:
                if im.width <= max_px:
                    continue
                out.mkdir(parents=True, exist_ok=True)
                small = im.resize((max_px, max(1, round(im.height * max_px / im.width))), Image.Resampling.LANCZOS)
                small.save(out / png, optimize=True)
            names.append(png)
        except (OSError, ValueError, ImportError):
            continue
    return names


def _read_trials(sweep_dir: Path) -> pd.DataFrame | None:
    """The sweep's trials table (None when it cannot be read: the series from it are left out)."""
    from analysis.parts import read_trials

    try:
        return read_trials(sweep_dir)
    except Exception:
        return None


def _read_yaml(path: Path) -> dict[str, Any] | None:
    """``sweep.yaml`` as a dict (None when missing or unreadable)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None

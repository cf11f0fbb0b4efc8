"""The sweep driver: validate, skip what is done, run the rest on Ray Tune, record Parquet and MLflow.

Usable from Python as well as from ``mutransfer sweep``::

    from orchestrator.config import load_sweep
    from orchestrator.sweep import run_sweep
    result = run_sweep(load_sweep("search_spaces/smoke.yaml"), results_dir="results")
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from analysis.schema import DEFAULT_MODE, DEFAULT_OBJECTIVE_METRIC, STATUS_OK

from .config import Sweep, check_runnable, to_yaml
from .errors import BadInput
from .paths import check_results_dir, inside
from .preflight import check_fit, check_local_device, check_local_resources, probe_address
from .progress import Progress
from .results_store import ResultsStore, trial_row
from .tracking import Tracker, default_tracking_uri


@dataclass
class SweepResult:
    """What a sweep run did: counts by status (this run and in total) and where the results are."""

    sweep_dir: Path
    total: int
    skipped: int
    counts: dict[str, int] = field(default_factory=dict)
    tracking_uri: str = ""
    tracked: bool = False

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


class Recorder:
    """Receives trial events in the driver; writes each finished trial to Parquet, then MLflow.

    A trial is written once: from its result marked ``last`` (so before Tune tells a searcher
    such as Optuna that it completed), or on Tune's complete/error event if no such result came.
    """

    def __init__(self, sweep: Sweep, store: ResultsStore, tracker: Tracker | None, progress: Progress) -> None:
        self.sweep, self.store, self.tracker, self.progress = sweep, store, tracker, progress
        self.specs = {t.trial_id: t.to_dict() for t in sweep.trials}
        self.history: dict[str, dict[int, dict]] = {}
        self.where: dict[str, tuple[str, str]] = {}
        self.retries: dict[str, int] = {}
        self.devices: dict[str, str] = {}
        self.finished: set[str] = set()

    def started(self, trial_id: str) -> None:
        self.history[trial_id] = {}
        self.progress.started(trial_id)

    def result(self, trial_id: str, result: dict) -> None:
        if result.get("failed"):  # set-up failed in the worker: recorded once, not retried
            self.where[trial_id] = (str(result.get("node", "")), str(result.get("hostname", "")))
            self._finish(trial_id, "failed", str(result.get("error", "")))
            return
        if "epoch" not in result:
            return
        if result.get("device_used"):
            self.devices[trial_id] = str(result["device_used"])
        keep = ("epoch", "train_loss", "test_loss", "test_acc", "wall_s", "diverged")
        self.history.setdefault(trial_id, {})[int(result["epoch"])] = {k: result.get(k) for k in keep}
        self.where[trial_id] = (str(result.get("node", "")), str(result.get("hostname", "")))
        if result.get("last"):
            self._finish(trial_id, None)
        else:
            self.progress.render()

    def restarted(self, trial_id: str) -> None:
        self.history[trial_id] = {}  # the retried trial starts again from epoch 1
        self.retries[trial_id] = self.retries.get(trial_id, 0) + 1
        self.progress.retried(trial_id)

    def _finish(self, trial_id: str, status: str | None, error: str = "") -> None:
        if trial_id in self.finished:
            return
        self.finished.add(trial_id)
        rows = [self.history.get(trial_id, {})[e] for e in sorted(self.history.get(trial_id, {}))]
        if status is None:
            status = "diverged" if rows and rows[-1].get("diverged") else "ok"
        node, host = self.where.get(trial_id, ("", ""))
        row = trial_row(self.sweep.name, self.specs[trial_id], rows, status, node, host, error)
        row["retries"] = self.retries.get(trial_id, 0)
        row["device_used"] = self.devices.get(trial_id, "")
        self.store.record([row], {trial_id: rows})          # Parquet first: the truth
        if self.tracker is not None:
            self.tracker.log_trial(row, self.specs[trial_id], rows)
        self.progress.finished(trial_id, status, row)

    def completed(self, trial_id: str) -> None:
        self._finish(trial_id, None)

    def errored(self, trial_id: str, error: str) -> None:
        self._finish(trial_id, "failed", error)


def embedded(address: str | None) -> bool:
    """True when ``ray.init(address)`` starts Ray here rather than joining a cluster."""
    import os

    return (address or os.environ.get("RAY_ADDRESS") or "local") == "local"


def preflight(sweep: Sweep, results_dir: str | Path, address: str | None) -> Path:
    """Checks that answer in seconds, before Ray starts or anything is written; the resolved results dir.

    Raises:
        BadInput: ``--results`` is a file; a path built from the sweep's name or experiment would
            lie outside it; nothing listens at ``address``; this machine cannot give the device
            or the GPUs asked for (embedded Ray).
    """
    results_dir = check_results_dir(results_dir)
    inside(results_dir / sweep.name / "tune", results_dir, f"{sweep.source}: name={sweep.name!r}:")
    experiment = sweep.config.tracking.experiment or sweep.name
    inside(results_dir / "mlartifacts" / experiment, results_dir, f"{sweep.source}: tracking.experiment:")
    probe_address(address)
    if embedded(address):
        check_local_device({t.trainer["device"] for t in sweep.trials}, f"{sweep.source}: trainer.device")
        check_local_resources(float(sweep.config.resources.cpu), float(sweep.config.resources.gpu), sweep.source)
    return results_dir


def start_ray(address: str | None, cpu: float, gpu: float, src: str) -> tuple[bool, str | None]:
    """Connect (or start embedded Ray) and check that a trial's resources can be met.

    Returns:
        ``(started, note)``: whether this call started Ray, and a note when trials must wait for
        nodes that the autoscaler may add (None when some node can run a trial now).
    """
    from . import tune_runner  # imports Ray: only once the input is known to be good

    shown = f"--address {address}" if address else "embedded Ray"
    try:
        started = tune_runner.connect(address)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        why = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise BadInput(f"{shown}: cannot connect to Ray ({why})") from None
    try:
        return started, check_fit(cpu, gpu, tune_runner.cluster_offer(), src, embedded(address))
    except BadInput:
        if started:
            tune_runner.shutdown()
        raise


def run_sweep(sweep: Sweep, results_dir: str | Path = "results", address: str | None = None,
              max_concurrent: int | None = None, track: bool = True, stream: TextIO | None = None) -> SweepResult:
    """Run the trials of ``sweep`` that ``results_dir/<name>/trials.parquet`` does not hold yet.

    Validation (a different sweep in the directory, no trainer for an algorithm, no dataset,
    an unreachable ``address``) happens before anything is written and raises :class:`BadInput`.
    """
    results_dir = preflight(sweep, results_dir, address)
    store = ResultsStore(results_dir / sweep.name)
    store.check_owner(sweep.identity())
    check_runnable(sweep)
    done = store.done_ids()
    store.history()  # a corrupt table: BadInput now, not after the trials ran
    rebuilt: tuple[list, dict] = ([], {})
    if not store.trials_path.exists():  # moved aside (corrupt) or never written: Tune's storage may hold trials
        from .recover import tune_records

        rebuilt = tune_records(store.dir, sweep.name, {t.trial_id: t.to_dict() for t in sweep.trials})
        done |= {r["trial_id"] for r in rebuilt[0]}
    todo = [t for t in sweep.trials if t.trial_id not in done]
    cfg = sweep.config
    started_ray, waiting = False, None
    from . import tune_runner

    if todo:
        started_ray, waiting = start_ray(address, cfg.resources.cpu, cfg.resources.gpu, sweep.source)
    try:
        store.write_config(to_yaml(sweep))
        if rebuilt[0]:
            store.record(*rebuilt)
            (stream or sys.stderr).write(f"rebuilt {len(rebuilt[0])} finished trial(s) of {store.trials_path} "
                                         f"from Tune's storage {store.dir / 'tune'}\n")
        uri = default_tracking_uri(results_dir, cfg.tracking.uri)
        tracker = Tracker(uri, sweep.name, cfg.tracking.experiment, artifact_root=results_dir / "mlartifacts") \
            if track else None
        if tracker is not None and tracker.start():
            specs = {t.trial_id: t.to_dict() for t in sweep.trials}
            tracker.sync(store.trials(), store.history(), specs)  # back-fill what an earlier run missed
        progress = Progress(len(sweep.trials), len(sweep.trials) - len(todo), cfg.objective.metric,
                            cfg.objective.mode, stream)
        progress.waiting = waiting
        recorder = Recorder(sweep, store, tracker, progress)
        progress.render(force=True)
        if todo:
            tune_runner.run_trials([t.to_dict() for t in todo], recorder, store.dir / "tune", sweep.name,
                                   cpu=cfg.resources.cpu, gpu=cfg.resources.gpu,
                                   max_concurrent=cfg.max_concurrent if max_concurrent is None else max_concurrent,
                                   max_failures=cfg.max_failures)
        progress.close()
    finally:
        if started_ray:
            tune_runner.shutdown()
    counts = dict(progress.counts)
    table = store.trials()
    totals = table.status.value_counts().to_dict() if not table.empty else {}
    if tracker is not None:
        tracker.sync(table, store.history(), {t.trial_id: t.to_dict() for t in sweep.trials})
        tracker.finish({f"trials_{k}": float(v) for k, v in totals.items()})
    return SweepResult(store.dir, len(sweep.trials), len(sweep.trials) - len(todo), counts,
                       tracker.uri if tracker else "", bool(tracker and tracker.enabled))


def best_row(trials, metric: str = DEFAULT_OBJECTIVE_METRIC, mode: str = DEFAULT_MODE) -> dict[str, Any] | None:
    """The best ``ok`` trial by the ``final_*`` column ``metric`` (None if there is none)."""
    if trials.empty:
        return None
    ok = trials[(trials.status == STATUS_OK) & trials[metric].map(lambda v: math.isfinite(v))]
    if ok.empty:
        return None
    idx = ok[metric].idxmin() if mode == "min" else ok[metric].idxmax()
    return ok.loc[idx].to_dict()

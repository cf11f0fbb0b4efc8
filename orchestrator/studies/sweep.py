"""The sweep driver: validate, skip what is done, run the rest on Ray Tune, record Parquet and MLflow.

Usable from Python as well as from ``mutransfer sweep``::

    from orchestrator.spec.config import load_sweep
    from orchestrator.studies.sweep import run_sweep
    result = run_sweep(load_sweep("search_spaces/smoke.yaml"), results_dir="results")
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from analysis.schema import DEFAULT_MODE, DEFAULT_OBJECTIVE_METRIC, STATUS_OK
from orchestrator.engine.driver import embedded, preflight, start_ray  # noqa: F401  (re-exported)
from orchestrator.engine.session import Session, Stage, open_session
from orchestrator.spec.config import Sweep, TrialSpec, to_yaml
from orchestrator.stores.results_store import ResultsStore


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


def run_sweep(
    sweep: Sweep,
    results_dir: str | Path = "results",
    address: str | None = None,
    max_concurrent: int | None = None,
    track: bool = True,
    stream: TextIO | None = None,
    compact: bool = True,
) -> SweepResult:
    """Run the trials of ``sweep`` that ``results_dir/<name>/`` does not hold yet.

    Each finished trial is recorded as part files; with ``compact`` (the default) they are folded
    into ``trials.parquet`` and ``history.parquet`` when the sweep ends.

    Validation (a different sweep in the directory, no trainer for an algorithm, no dataset,
    an unreachable ``address``, the sweep's lock held by another driver) happens before anything is
    written and raises :class:`BadInput`.
    """
    if max_concurrent is not None:
        cfg = sweep.config.copy()
        cfg.max_concurrent = max_concurrent
        sweep = Sweep(sweep.name, sweep.source, cfg, sweep.trials)
    check_stores(sweep, results_dir)
    with open_session(sweep, results_dir, address, "mutransfer sweep") as session:
        with sweep_stage(session, sweep, track, stream, compact=compact) as stage:
            stage.run(sweep.trials)
        return finish_sweep(stage, sweep, len(sweep.trials))


def check_stores(sweep: Sweep, results_dir: str | Path) -> None:
    """Before the lock is taken (nothing written yet): the directory holds this sweep or none, and its
    tables (and tune-base's in ``base/``) are readable; else :class:`BadInput`."""
    from orchestrator.stores.paths import check_results_dir

    store = ResultsStore(check_results_dir(results_dir) / sweep.name)
    store.check_owner(sweep.identity())
    for s in (store, ResultsStore(store.dir / "base")):
        s.trials()
        s.history()


@contextmanager
def sweep_stage(
    session: Session,
    sweep: Sweep,
    track: bool,
    stream: TextIO | None,
    compact: bool = True,
    specs: list[TrialSpec] | None = None,
) -> Iterator[Stage]:
    """The sweep's own results store opened in ``session``: its owner checked, its tables readable,
    rows that only Tune's storage holds (a table moved aside) recorded again, MLflow back-filled.
    A fixed key that became a grid axis: the recorded rows get the value they ran with in its column
    (:meth:`ResultsStore.restate_axes`, under the lock, before ``sweep.yaml`` is replaced), so the
    analysis groups them with that value.

    ``specs``: the trials this command will submit first (default the grid's; verify's bracket)."""
    specs = sweep.trials if specs is None else specs
    store = ResultsStore(session.results_dir / sweep.name)
    store.check_owner(sweep.identity())
    done = store.done_ids()
    store.history()  # a corrupt table: BadInput now, not after the trials ran
    restated = store.restate_axes(sweep.identity(), [*sweep.trials, *specs])  # before sweep.yaml is replaced
    if restated:
        (stream or sys.stderr).write(
            f"{restated} recorded trial(s) of {store.trials_path} given the value they ran with in the "
            "column of a key that is now a grid axis\n"
        )
    rebuilt: tuple[list, dict] = ([], {})
    if not store.trials_path.exists():  # moved aside (corrupt) or never written: Tune's storage may hold trials
        from orchestrator.engine.recover import tune_records

        rows, histories = tune_records(store.dir, sweep.name, {t.trial_id: t.to_dict() for t in specs})
        rows = [r for r in rows if r["trial_id"] not in done]  # part files already hold the others
        rebuilt = (rows, {r["trial_id"]: histories[r["trial_id"]] for r in rows})
    with session.stage(
        store,
        to_yaml(sweep),
        recorded_as=sweep,
        track=track,
        tracked_name=sweep.name,
        experiment=sweep.config.tracking.experiment,
        stream=stream,
        known=specs,
        compact=compact,
        needs_ray=any(t.trial_id not in done | {r["trial_id"] for r in rebuilt[0]} for t in specs),
    ) as stage:
        if rebuilt[0]:
            stage.record(*rebuilt)
            (stream or sys.stderr).write(
                f"rebuilt {len(rebuilt[0])} finished trial(s) of {store.trials_path} "
                f"from Tune's storage {store.dir / 'tune'}\n"
            )
        yield stage


def finish_sweep(stage: Stage, sweep: Sweep, total: int) -> SweepResult:
    """After the stage closed: MLflow synced with the table and the parent run ended; the result."""
    store, tracker = stage.store, stage.tracker
    table = store.trials()
    totals = table.status.value_counts().to_dict() if not table.empty else {}
    if tracker is not None:
        from omegaconf import OmegaConf

        tracker.sync(table, store.history(), stage.specs, tune_dir=store.dir / "tune")
        tracker.finish(
            {f"trials_{k}": float(v) for k, v in totals.items()},
            files=[store.config_path, store.dir / "base_lr.json"],
            config=OmegaConf.to_container(sweep.config, resolve=True),
        )
    return SweepResult(
        store.dir,
        total,
        total - stage.submitted,
        dict(stage.counts),
        stage.tracking_uri,
        bool(tracker and tracker.enabled),
    )


def best_row(trials, metric: str = DEFAULT_OBJECTIVE_METRIC, mode: str = DEFAULT_MODE) -> dict[str, Any] | None:
    """The best ``ok`` trial by the ``final_*`` column ``metric`` (None if there is none)."""
    if trials.empty:
        return None
    ok = trials[(trials.status == STATUS_OK) & trials[metric].map(lambda v: math.isfinite(v))]
    if ok.empty:
        return None
    idx = ok[metric].idxmin() if mode == "min" else ok[metric].idxmax()
    return ok.loc[idx].to_dict()

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
from .driver import driver_session, embedded, preflight, start_ray  # noqa: F401  (re-exported)
from .recorder import Recorder
from .results_store import ResultsStore


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
    an unreachable ``address``) happens before anything is written and raises :class:`BadInput`.
    """
    results_dir = preflight(sweep, results_dir, address)
    store = ResultsStore(results_dir / sweep.name)
    store.check_owner(sweep.identity())
    check_runnable(sweep)
    done = store.done_ids()
    store.history()  # a corrupt table: BadInput now, not after the trials ran
    rebuilt: tuple[list, dict] = ([], {})
    specs = {t.trial_id: t.to_dict() for t in sweep.trials}
    if not store.trials_path.exists():  # moved aside (corrupt) or never written: Tune's storage may hold trials
        from .recover import tune_records

        rows, histories = tune_records(store.dir, sweep.name, specs)
        rows = [r for r in rows if r["trial_id"] not in done]  # part files already hold the others
        rebuilt = (rows, {r["trial_id"]: histories[r["trial_id"]] for r in rows})
        done |= {r["trial_id"] for r in rows}
    todo = [t for t in sweep.trials if t.trial_id not in done]
    cfg = sweep.config
    with driver_session(
        sweep,
        results_dir,
        store,
        to_yaml(sweep),
        address=address,
        needs_ray=bool(todo),
        track=track,
        tracked_name=sweep.name,
        experiment=cfg.tracking.experiment,
        total=len(sweep.trials),
        skipped=len(sweep.trials) - len(todo),
        stream=stream,
    ) as session:
        if rebuilt[0]:
            store.record(*rebuilt)
            (stream or sys.stderr).write(
                f"rebuilt {len(rebuilt[0])} finished trial(s) of {store.trials_path} "
                f"from Tune's storage {store.dir / 'tune'}\n"
            )
        tracker = session.tracker
        if tracker is not None and tracker.enabled:
            tracker.sync(
                store.trials(), store.history(), specs, tune_dir=store.dir / "tune"
            )  # back-fill what an earlier run missed
        if todo:
            from . import tune_runner

            tune_runner.run_trials(
                [t.to_dict() for t in todo],
                Recorder(sweep, store, tracker, session.progress),
                store.dir / "tune",
                sweep.name,
                cpu=cfg.resources.cpu,
                gpu=cfg.resources.gpu,
                max_concurrent=cfg.max_concurrent if max_concurrent is None else max_concurrent,
                max_failures=cfg.max_failures,
                plugins=list(cfg.plugins),
            )
        if compact:
            store.compact()
    counts = dict(session.progress.counts)
    table = store.trials()
    totals = table.status.value_counts().to_dict() if not table.empty else {}
    if tracker is not None:
        from omegaconf import OmegaConf

        tracker.sync(table, store.history(), specs, tune_dir=store.dir / "tune")
        tracker.finish(
            {f"trials_{k}": float(v) for k, v in totals.items()},
            files=[store.config_path, store.dir / "base_lr.json"],
            config=OmegaConf.to_container(cfg, resolve=True),
        )
    return SweepResult(
        store.dir,
        len(sweep.trials),
        len(sweep.trials) - len(todo),
        counts,
        session.tracking_uri,
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

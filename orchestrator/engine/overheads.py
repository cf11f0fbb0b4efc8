"""What earlier commands on this host really spent besides training, for the plan's wall time.

A finished command leaves what this needs in its results directory, nothing added:

- every trial's row (``trials.parquet``, :mod:`analysis.schema`): ``started_at`` (epoch seconds, taken
  in the worker when the member starts), ``finished_at`` (taken in the driver when it is recorded),
  ``wall_s`` (its training seconds), ``hostname``;
- ``status.json`` (:mod:`orchestrator.engine.progress`): ``started`` (the stage's start, once Ray is up
  and MLflow's parent run open) and, once ``state`` is ``closed``, ``updated`` (the stage's end:
  trials run and tables compacted) and ``host``.

:func:`derive` reads one directory (``<results>/<name>`` or its ``base/``) and returns a
:class:`RunTimes`: the stage's lead (its start to the first trial's start: the Tune run's set-up and
the first workers), each trial's overhead on its slot (the seconds between trials on one worker slot
plus each trial's seconds not in ``wall_s``), the same per pack where the command's Tune directory
(``tune/<name>-<date>-<time>-<pid>/pack-*/params.json``) tells which packs ran them, the idle gaps in which no trial ran (Tune runs ending and
starting: verify's rounds), the tail (the last trial recorded to the stage's end) and the trials'
real cost per kind (ok and diverged alike: a diverged trial stops early, and that is its real cost).
The seconds before the stage (python, imports, checks, the lock, Ray's start) and after it (MLflow,
Ray's shutdown, exit) are not in the store: a caller that timed the command (``benchmarks/plan_bench.py``,
or the session at its end) passes ``command_started`` / ``command_ended`` to :func:`remember`.

The **per-host cache** is one JSON file, ``$XDG_CACHE_HOME/mutransfer/overheads-<host>.json``
(``~/.cache/...`` without ``XDG_CACHE_HOME``; ``$MUTRANSFER_OVERHEADS`` names another file): a list of
:class:`RunTimes` as dicts, the newest :data:`KEEP` kept, one per (directory, stage start).
:func:`remember` adds to it; :func:`measured` (what the plan reads; it writes nothing) combines the cache
with what the closed stages of ``results_dir``'s sweeps on this host show, into :class:`Measured`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

KEEP = 30  # runs kept in the per-host cache
SCAN = 12  # sweeps of a results directory read by measured() (the most recently closed)
ROUND_GAP_S = 2.0  # an idle gap (no trial running) at least this long is a Tune run's end and the next's start
STATUS_NAME = "status.json"
FREE_KEYS = ("lr", "seed", "parametrization")  # do not change a trial's cost (as plan.FREE_KEYS)


@dataclass
class RunTimes:
    """The non-training seconds of one stage of one command, and its trials' real cost per kind."""

    dir: str
    host: str
    stage_started: float
    trials: int = 0
    slots: int = 0
    lead_s: float | None = None  # stage start -> first trial start
    per_trial_s: float | None = None  # non-training seconds per trial on its slot
    packs: int | None = None  # Tune trials (packs) that ran them, where the Tune directory tells
    per_pack_s: float | None = None  # the same non-training seconds per pack
    round_gaps: list[float] = field(default_factory=list)  # idle gaps >= ROUND_GAP_S between trials
    tail_s: float | None = None  # last trial recorded -> stage end
    train_s: float = 0.0  # the trials' summed wall_s
    kinds: dict[str, float] = field(default_factory=dict)  # kind -> mean wall_s (ok and diverged)
    pre_s: float | None = None  # command start -> stage start (when the command was timed)
    post_s: float | None = None  # stage end -> command end (when the command was timed)
    calibration_ratio: float | None = None  # real mean wall_s / calibrated seconds (when given)
    load: float | None = None  # runnable processes per CPU meanwhile (load average / CPUs), when remembered

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunTimes:
        """A cache entry back (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def kind_of(row: dict[str, Any], keys: list[str]) -> str:
    """A trial's kind: its values of ``keys`` (config columns except lr, seed, parametrization)."""
    return ";".join(f"{k}={row[k]}" for k in sorted(keys) if k not in FREE_KEYS)


def slot_chains(intervals: list[tuple[float, float]], slack: float = 0.05) -> list[list[int]]:
    """Assign ``(start, end)`` intervals to worker slots, as few as their overlaps allow: in start order
    each goes to the free slot that was freed last (within ``slack`` seconds), else a new slot.
    Returns the indices of each slot's intervals in order."""
    order = sorted(range(len(intervals)), key=lambda i: intervals[i][0])
    chains: list[list[int]] = []
    for i in order:
        start = intervals[i][0]
        free = [c for c in chains if intervals[c[-1]][1] <= start + slack]
        if free:
            max(free, key=lambda c: intervals[c[-1]][1]).append(i)
        else:
            chains.append([i])
    return chains


def idle_gaps(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The ``(start, end)`` gaps in which no interval runs, between the first start and the last end."""
    gaps, end = [], None
    for s, e in sorted(intervals):
        if end is not None and s > end:
            gaps.append((end, s))
        end = e if end is None else max(end, e)
    return gaps


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def count_packs(sweep_dir: str | Path, pid: int, trial_ids: set[str]) -> int | None:
    """How many Tune trials (packs) of the command ``pid`` ran any of ``trial_ids``: the ``pack-*``
    directories of its Tune runs (``tune/<name>-<date>-<time>-<pid>/``, in ``sweep_dir`` or the one above
    it) whose ``params.json`` names one of them. None when no such run is there."""
    sweep_dir = Path(sweep_dir)
    runs = [e for t in (sweep_dir / "tune", sweep_dir.parent / "tune") for e in t.glob(f"*-{pid}") if e.is_dir()]
    if not runs:
        return None
    n = 0
    for pack in (p for e in runs for p in e.glob("pack-*")):
        try:
            members = json.loads((pack / "params.json").read_text())["pack"]["members"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        n += any(isinstance(m, dict) and m.get("trial_id") in trial_ids for m in members)
    return n or None


def _read_status(sweep_dir: Path) -> dict[str, Any] | None:
    try:
        status = json.loads((sweep_dir / STATUS_NAME).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and status.get("started") is not None else None


def derive(sweep_dir: str | Path, trials: pd.DataFrame | None = None) -> RunTimes | None:
    """The overheads of the last command's stage in ``sweep_dir`` (None when it ran no trial or has no
    closed ``status.json``). Reads only; ``trials``: the directory's table when already read."""
    from analysis.parts import read_trials

    sweep_dir = Path(sweep_dir)
    status = _read_status(sweep_dir)
    if status is None or status.get("state") != "closed":
        return None
    started, ended = float(status["started"]), float(status.get("updated") or math.nan)
    if trials is None:
        try:
            trials = read_trials(sweep_dir)
        except Exception:  # an unreadable table tells nothing about overheads
            return None
    need = {"started_at", "finished_at", "wall_s"}
    if trials.empty or not need <= set(trials.columns):
        return None
    rows = trials[pd.to_numeric(trials.started_at, errors="coerce") >= started - 1.0]
    rows = rows[rows.status.isin(["ok", "diverged"])] if "status" in rows.columns else rows
    rows = rows.dropna(subset=sorted(need))
    if rows.empty:
        return None
    spans = [(float(s), float(f)) for s, f in zip(rows.started_at, rows.finished_at, strict=True)]
    walls = [float(w) for w in rows.wall_s]
    chains = slot_chains(spans)
    within = sum(max(0.0, f - s - w) for (s, f), w in zip(spans, walls, strict=True))
    rounds = [g for g in idle_gaps(spans) if g[1] - g[0] >= ROUND_GAP_S]  # Tune runs' boundaries
    between = 0.0  # seconds on a slot between its trials, less the Tune runs' boundaries
    for chain in chains:
        for a, b in zip(chain, chain[1:], strict=False):
            gap = (spans[a][1], spans[b][0])
            between += max(0.0, gap[1] - gap[0] - sum(_overlap(gap, r) for r in rounds))
    first, last = min(s for s, _ in spans), max(f for _, f in spans)
    keys = [c for c in rows.columns if c in _CONFIG_COLUMNS]
    kinds = rows.assign(_kind=[kind_of(r, keys) for r in rows[keys].to_dict("records")]).groupby("_kind").wall_s
    host = str(status.get("host") or (rows.hostname.iloc[0] if "hostname" in rows.columns else ""))
    packs = count_packs(sweep_dir, int(status.get("pid") or 0), set(rows.trial_id)) if "trial_id" in rows else None
    return RunTimes(
        dir=str(sweep_dir.resolve()),
        host=host,
        stage_started=started,
        trials=len(rows),
        slots=len(chains),
        lead_s=first - started,
        per_trial_s=(within + between) / len(rows),
        packs=packs,
        per_pack_s=(within + between) / packs if packs else None,
        round_gaps=[e - s for s, e in rounds],
        tail_s=ended - last if math.isfinite(ended) else None,
        train_s=float(sum(walls)),
        kinds={k: float(v) for k, v in kinds.mean().items()},
    )


# config columns that decide a kind (trials.parquet's, analysis.schema); results and where-it-ran excluded
_CONFIG_COLUMNS = (
    "algorithm",
    "optimizer",
    "dataset",
    "model",
    "width",
    "base_width",
    "depth",
    "inference_steps",
    "activation",
    "epochs",
    "batch_size",
    "subset",
    "test_subset",
    "dtype",
    "device",
    "loss",
)


# ---- the per-host cache --------------------------------------------------------------------------
def cache_path(host: str | None = None) -> Path:
    """``$MUTRANSFER_OVERHEADS``, else ``$XDG_CACHE_HOME/mutransfer/overheads-<host>.json`` (``~/.cache``)."""
    if os.environ.get("MUTRANSFER_OVERHEADS"):
        return Path(os.environ["MUTRANSFER_OVERHEADS"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mutransfer" / f"overheads-{host or socket.gethostname()}.json"


def load_cache(path: str | Path | None = None) -> list[RunTimes]:
    """The cache's runs (empty when it is absent or unreadable)."""
    try:
        entries = json.loads(Path(path or cache_path()).read_text())
        return [RunTimes.from_dict(e) for e in entries if isinstance(e, dict)]
    except (OSError, ValueError, TypeError):
        return []


def remember(
    sweep_dir: str | Path,
    command_started: float | None = None,
    command_ended: float | None = None,
    planned_train_s: float | None = None,
    path: str | Path | None = None,
    load: float | None = None,
) -> RunTimes | None:
    """Add the last command's stage of ``sweep_dir`` to the per-host cache (atomically; a write that fails
    is ignored: the cache only improves plans). ``command_started``/``command_ended``: the command's own
    epoch seconds, when the caller timed it; ``planned_train_s``: the trial-seconds a plan calibrated for
    the trials this command ran (the run keeps the ratio real / calibrated: :attr:`Measured.calibration_ratio`);
    ``load``: the load average per CPU while it ran (default: the 5-minute one now, :func:`load_now`)."""
    from analysis.io import write_json_atomic

    run = derive(sweep_dir)
    if run is None:
        return None
    status = _read_status(Path(sweep_dir)) or {}
    if command_started is not None:
        run.pre_s = run.stage_started - float(command_started)
    if command_ended is not None and status.get("updated") is not None:
        run.post_s = float(command_ended) - float(status["updated"])
    if planned_train_s:
        run.calibration_ratio = run.train_s / float(planned_train_s)
    run.load = load_now(minutes=5) if load is None else float(load)
    target = Path(path or cache_path(run.host))
    runs = [r for r in load_cache(target) if (r.dir, r.stage_started) != (run.dir, run.stage_started)] + [run]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic([asdict(r) for r in runs[-KEEP:]], target)
    except OSError:
        pass
    return run


def process_started() -> float | None:
    """This process's start in epoch seconds, from ``/proc`` (Linux): a command's ``command_started`` for
    :func:`remember`, python's own start and imports included. None where ``/proc`` has no answer."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        boot = next(int(ln.split()[1]) for ln in Path("/proc/stat").read_text().splitlines() if ln.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def load_now(minutes: int = 1) -> float | None:
    """The load average over 1, 5 or 15 ``minutes`` per CPU (None where the OS has none)."""
    try:
        return os.getloadavg()[{1: 0, 5: 1, 15: 2}[minutes]] / (os.cpu_count() or 1)
    except (OSError, AttributeError):
        return None


def contention(load: float | None) -> float:
    """How much slower a process runs than alone: ``load`` runnable processes per CPU share it (at least 1)."""
    return 1.0 if load is None else max(1.0, float(load))


# ---- what the plan reads -------------------------------------------------------------------------
@dataclass
class Measured:
    """Medians over earlier runs on this host; None where no run measured that part. With ``load`` (now)
    each run's seconds are scaled by :func:`contention` now / then, for the runs that know their load."""

    runs: int = 0
    pre_s: float | None = None
    lead_s: float | None = None
    per_trial_s: float | None = None
    per_pack_s: float | None = None
    round_gap_s: float | None = None
    tail_s: float | None = None
    post_s: float | None = None
    calibration_ratio: float | None = None
    calibration_runs: int = 0  # runs that measured calibration_ratio
    load: float | None = None  # the load per CPU the seconds were scaled to
    scale: float = 1.0  # the median scale applied (contention now / then)

    @classmethod
    def of(cls, runs: list[RunTimes], load: float | None = None) -> Measured:
        """Combine runs: the median of each part over the runs that measured it, each scaled to ``load``."""
        scales = [
            contention(load) / contention(r.load) if load is not None and r.load is not None else 1.0 for r in runs
        ]

        def med(values: list[float | None]) -> float | None:
            vals = [float(v) * k for v, k in zip(values, scales, strict=True) if v is not None and math.isfinite(v)]
            return statistics.median(vals) if vals else None

        gaps = [statistics.fmean(r.round_gaps) if r.round_gaps else None for r in runs]
        ratios = [r.calibration_ratio for r in runs if r.calibration_ratio is not None]
        return cls(
            runs=len(runs),
            pre_s=med([r.pre_s for r in runs]),
            lead_s=med([r.lead_s for r in runs]),
            per_trial_s=med([r.per_trial_s for r in runs]),
            per_pack_s=med([r.per_pack_s for r in runs]),
            round_gap_s=med(gaps),
            tail_s=med([r.tail_s for r in runs]),
            post_s=med([r.post_s for r in runs]),
            calibration_ratio=statistics.median(ratios) if ratios else None,  # a ratio: not scaled
            calibration_runs=sum(r.calibration_ratio is not None for r in runs),
            load=load,
            scale=statistics.median(scales) if scales else 1.0,
        )


def scan(results_dir: str | Path, host: str | None = None) -> list[RunTimes]:
    """:func:`derive` over the sweeps of ``results_dir`` (and their ``base/``) whose last command closed on
    ``host`` (default this one): the :data:`SCAN` most recently closed. Reads only."""
    host = host or socket.gethostname()
    root = Path(results_dir)
    found: list[tuple[float, Path]] = []
    try:
        candidates = [p for d in root.iterdir() if d.is_dir() for p in (d, d / "base")]
    except OSError:
        return []
    for d in candidates:
        status = _read_status(d)
        if status and status.get("state") == "closed" and status.get("host") == host:
            found.append((float(status.get("updated") or 0.0), d))
    runs = [derive(d) for _, d in sorted(found, reverse=True)[:SCAN]]
    return [r for r in runs if r is not None]


def measured(
    results_dir: str | Path | None = None, path: str | Path | None = None, at_load: float | None = None
) -> Measured:
    """What earlier runs on this host measured: the cache's runs, plus those in ``results_dir`` not in it
    (a run the cache holds keeps its command timing), scaled to ``at_load`` (per CPU; e.g. :func:`load_now`)
    where they know theirs. Reads only."""
    host = socket.gethostname()
    runs = [r for r in load_cache(path or cache_path(host)) if r.host == host]
    seen = {(r.dir, r.stage_started) for r in runs}
    if results_dir is not None:
        runs += [r for r in scan(results_dir, host) if (r.dir, r.stage_started) not in seen]
    runs.sort(key=lambda r: r.stage_started)
    return Measured.of(runs, at_load)


__all__ = [
    "Measured",
    "RunTimes",
    "cache_path",
    "derive",
    "contention",
    "count_packs",
    "idle_gaps",
    "load_now",
    "load_cache",
    "measured",
    "process_started",
    "remember",
    "scan",
]

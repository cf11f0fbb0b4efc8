"""Sub-command `status`: a running or finished sweep's counts and ETA, from another terminal.

``mutransfer status RESULTS/NAME`` reads, without taking anything:

- the sweep's lock ``<dir>/.lock`` (:mod:`.lock`: host, pid, since, command): whether a driver holds
  the sweep now and whether that process is alive (on this host; another host's cannot be checked);
- ``<dir>/status.json`` (:mod:`.progress`, written by the driver's progress line): running trials,
  the total the driver submitted, its rate and ETA;
- the trials table (``trials.parquet`` and its part files): done trials by status, counted from
  what is recorded, so a driver that left no status.json (or died) is still counted right.

It says the same for tune-base's ``<dir>/base/`` when there is one (a verify). Exit 0; 2 when the
directory is no sweep's.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from pathlib import Path
from typing import Any

from orchestrator.engine.lock import LOCK_NAME
from orchestrator.engine.progress import STATUS_NAME, duration
from orchestrator.errors import BadInput

STALE_S = 60.0  # a status.json older than this while its driver lives: the line says how old


def read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON file, None when absent or unreadable (being replaced, damaged)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def driver_state(sweep_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """``(lock holder or None, one of "alive", "dead", "unknown", "none")``: who holds the sweep now."""
    from orchestrator.engine.lock import _alive

    holder = read_json(sweep_dir / LOCK_NAME)
    if holder is None:
        return None, "none"
    if holder.get("host") != socket.gethostname() or not holder.get("pid"):
        return holder, "unknown"
    return holder, "alive" if _alive(holder) else "dead"


def recorded_counts(store_dir: Path, ids: set[str] | None = None) -> tuple[dict[str, int], Any, int]:
    """Trials recorded per status in ``store_dir`` (base file and part files), the table, and how many
    recorded trials lie outside ``ids`` (a grid narrowed since they ran; None: count every trial)."""
    from orchestrator.stores.results_store import ResultsStore

    table = ResultsStore(store_dir).trials()
    counts = {k: 0 for k in ("ok", "diverged", "failed")}
    outside = 0
    mine = table
    if ids is not None and not table.empty and "trial_id" in table.columns:
        inside = table.trial_id.isin(ids)
        outside, mine = int((~inside).sum()), table[inside]
    if not mine.empty and "status" in mine.columns:
        for k, v in mine.status.value_counts().items():
            counts[str(k)] = int(v)
    return counts, table, outside


def planned_ids(store_dir: Path) -> set[str] | None:
    """The trial ids of a grid sweep's ``sweep.yaml`` (None for a verify or tune-base, whose trials grow)."""
    if (store_dir / "base").is_dir() or (store_dir / "base_lr.json").exists() or store_dir.name == "base":
        return None
    try:
        from orchestrator.spec.config import load_sweep

        return {t.trial_id for t in load_sweep(store_dir / "sweep.yaml").trials}
    except Exception:  # an unreadable or foreign sweep.yaml: the counts still say what is done
        return None


def _recent_rate(table, since: float, now: float) -> float:
    """Trials per minute finished since ``since`` (epoch seconds), from the table's ``finished_at``."""
    if table.empty or "finished_at" not in table.columns or now <= since:
        return 0.0
    finished = table.finished_at.astype(float)
    n = int(((finished >= since) & (finished <= now + 1)).sum())
    return 60.0 * n / (now - since) if n else 0.0


def stage_lines(store_dir: Path, label: str, state: str, holder: dict[str, Any] | None) -> list[str]:
    """The lines of one results store: done by status, running, total, ETA, how fresh."""
    ids = planned_ids(store_dir)
    counts, table, outside = recorded_counts(store_dir, ids)
    done = counts["ok"] + counts["diverged"]
    status = read_json(store_dir / STATUS_NAME)
    now = time.time()
    live = state in ("alive", "unknown") and status is not None and status.get("state") == "running"
    if status is not None and holder is not None and status.get("pid") != holder.get("pid"):
        live = False  # an earlier driver's file
    total = int(status["total"]) if live and status.get("total") else (len(ids) if ids else None)
    of = f" of {total}" if total else ""
    lines = [
        f"{label}: done {done}{of} (ok {counts['ok']}, diverged {counts['diverged']}), failed {counts['failed']} "
        f"(rerun runs failed trials again) [{store_dir}]"
    ]
    if outside:
        lines.append(f"  (+{outside} recorded outside this sweep.yaml's grid: kept, not counted above)")
    if live:
        age = now - float(status.get("updated", now))
        eta = status.get("eta_s")
        rate = float(status.get("rate_per_min") or 0.0)
        if eta is None and total and holder is not None:  # no trial finished in this run yet
            eta_text = "ETA - (no trial finished yet in this run)"
        else:
            eta_text = f"ETA {duration(float(eta))}" if eta is not None else "ETA -"
        waiting = f"; waiting: {status['waiting']}" if status.get("waiting") and not status.get("running") else ""
        lines.append(
            f"  running {int(status.get('running', 0))}, retries {int(status.get('retries', 0))}; "
            f"{rate:.3g} trials/min, {eta_text}; elapsed {duration(float(status.get('elapsed_s', 0)))}; "
            f"updated {duration(age)} ago" + (" (stale?)" if age > STALE_S else "") + waiting
        )
        best = status.get("best")
        if best:
            lines.append(f"  best {best['metric']} so far: {float(best['value']):.4g} ({best['trial']})")
    elif state in ("alive", "unknown") and holder is not None and (status is None or status.get("state") != "closed"):
        lock = (store_dir.parent if store_dir.name == "base" else store_dir) / LOCK_NAME
        try:
            start = lock.stat().st_mtime
        except OSError:
            start = now
        rate = _recent_rate(table, start, now)
        left = (total - done - counts["failed"]) if total else None
        eta = f"ETA {duration(60.0 * left / rate)}" if rate > 0 and left is not None else "ETA -"
        lines.append(
            f"  running: not reported (no live {STATUS_NAME}); {rate:.3g} trials/min since the driver started, {eta}"
        )
    return lines


def status_lines(sweep_dir: str | Path) -> list[str]:
    """What ``mutransfer status`` prints for ``sweep_dir`` (a sweep's results directory).

    Raises:
        BadInput: ``sweep_dir`` holds no sweep (no sweep.yaml, no trials, no lock).
    """
    d = Path(sweep_dir)
    if d.name == "base" and (d.parent / LOCK_NAME).exists() | (d.parent / "base_lr.json").exists():
        d = d.parent  # tune-base's store: shown with its sweep
    if not d.is_dir() or not any(
        (d / f).exists() for f in ("sweep.yaml", LOCK_NAME, STATUS_NAME, "trials.parquet", "trials")
    ):
        raise BadInput(f"{sweep_dir}: not a sweep's results directory (no sweep.yaml, trials or {LOCK_NAME})")
    holder, state = driver_state(d)
    if holder is None:
        head = f"{d.name}: no driver holds it (finished, or stopped: rerunning its command resumes it)"
    else:
        who = f"{holder.get('command') or 'a driver'} (pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')})"
        head = {
            "alive": f"{d.name}: running: {who}",
            "dead": f"{d.name}: its driver is gone: {who} no longer runs; rerun its command to resume",
            "unknown": f"{d.name}: held by {who}: another host, not checked from here",
        }[state]
    lines = [head]
    if (d / "base").is_dir():
        lines += stage_lines(d / "base", "tune-base (base/)", state, holder)
    has_own = (d / "trials.parquet").exists() or (d / "trials").is_dir() or (d / STATUS_NAME).exists()
    if has_own or not (d / "base").is_dir():
        lines += stage_lines(d, "trials" if not (d / "base").is_dir() else "transfer trials", state, holder)
    if holder is None:
        lines += next_lines(d)
    return lines


def next_lines(sweep_dir: Path) -> list[str]:
    """What to run next on a sweep no driver holds."""
    results = sweep_dir.parent
    if (sweep_dir / "report" / "report.md").exists():
        first = f"report: {sweep_dir / 'report' / 'report.md'}"
    else:
        first = f"next: mutransfer analyze {sweep_dir}"
    return [first, f"next: mutransfer ui --results {results}"]


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", help="a sweep's results directory, e.g. results/smoke (running or finished)")


def _run(args: argparse.Namespace) -> int:
    print("\n".join(status_lines(args.sweep_dir)))
    return 0


COMMANDS = {
    "status": (
        "Show a sweep's progress from another terminal: done, running, failed, diverged, ETA, and whether "
        "its driver is alive (reads the lock, status.json and the trials table; takes nothing).",
        _add,
        _run,
    ),
}

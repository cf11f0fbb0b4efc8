"""Rebuild a sweep's Parquet rows from Tune's storage (``<results>/<name>/tune/``), without Ray.

Tune's JSON logger writes every result a trial reported to ``tune/<run>/<pack>/result.json``.
A command runs one Tune run for all its stages (``tune_runner.Runner``), in the sweep's own
``<results>/<name>/tune/``: tune-base's trials (``<name>/base/``) are found in the parent's
``tune/`` (and in ``base/tune/``, where runs before issue 27 wrote them). When ``trials.parquet`` is gone (moved aside because it
was corrupt or truncated), a rerun of the sweep records again, from there, every trial whose
last attempt reported its last epoch and that no part file (``trials/``) holds as done, and runs
only the others.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from analysis.schema import HISTORY_COLUMNS
from orchestrator.engine.packs import member_results
from orchestrator.stores.results_store import trial_row

KEEP = (*HISTORY_COLUMNS[1:], "diverged")


def _results(path: Path) -> list[dict[str, Any]]:
    """The results in one result.json (a torn last line, from a killed driver, ends the list)."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def _by_trial(path: Path) -> dict[str, list[dict[str, Any]]]:
    """One result.json's results by our trial id (:func:`packs.member_results`: a pack's events by member,
    a lone trial's results of the format before packs by its trial id)."""
    return member_results(_results(path), path.parent.name)


def _result_files(sweep_dir: Path) -> list[Path]:
    """Every result.json of the runs that may hold this store's trials, oldest first (by write time)."""
    paths = {p for d in (sweep_dir, sweep_dir.parent) for p in d.glob("tune/*/*/result.json")}

    def written(p: Path) -> tuple[float, str]:
        try:
            return (p.stat().st_mtime, str(p))
        except OSError:
            return (0.0, str(p))

    return sorted(paths, key=written)


def tune_records(
    sweep_dir: str | Path, sweep_name: str, specs: dict[str, dict]
) -> tuple[list[dict[str, Any]], dict[str, list[dict]]]:
    """``(rows, histories)`` of the trials in ``specs`` that Tune's storage holds as finished (ok or diverged).

    Later files (by write time) replace earlier ones; within a result.json, a retried trial's last
    attempt starts at its last epoch-1 result. Trials not in ``specs`` are ignored.
    """
    found: dict[str, tuple[dict, list[dict]]] = {}
    for path in _result_files(Path(sweep_dir)):
        for tid, results in _by_trial(path).items():
            if tid not in specs or not results or not results[-1].get("last") or results[-1].get("failed"):
                continue
            starts = [i for i, r in enumerate(results) if r.get("epoch") == 1]
            history = [{k: r.get(k) for k in KEEP} for r in results[starts[-1] if starts else 0 :] if "epoch" in r]
            if history:
                found[tid] = (results[-1], history)
    rows, histories = [], {}
    for tid, (last, history) in found.items():
        status = "diverged" if history[-1].get("diverged") else "ok"
        row = trial_row(
            sweep_name, specs[tid], history, status, str(last.get("node", "")), str(last.get("hostname", ""))
        )
        row.update(
            retries=0, device_used=str(last.get("device_used", "")), matmul_backend=str(last.get("matmul_backend", ""))
        )
        rows.append(row)
        histories[tid] = history
    return rows, histories


def tune_times(tune_dir: str | Path) -> dict[str, tuple[float, float]]:
    """``{trial id: (start, end)}`` in epoch seconds from Tune's storage: the last attempt's
    ``started_at`` and its last ``reported_at`` (what the trainable reports with every epoch); the
    session's run one level up included (``base/tune`` -> ``tune``)."""
    out: dict[str, tuple[float, float]] = {}
    for path in _result_files(Path(tune_dir).parent):
        for tid, found in _by_trial(path).items():
            results = [r for r in found if r.get("started_at") is not None]
            if results:
                last = results[-1]
                out[tid] = (
                    float(last["started_at"]),
                    float(last.get("reported_at") or last.get("timestamp") or last["started_at"]),
                )
    return out

"""Recording cost per trial against the number of trials already recorded: whole-file rewrite vs part files.

The driver records each finished trial (its ``trials`` row and its history). Until part files,
``ResultsStore.record`` read both tables and rewrote them whole (:func:`old_record`, kept here as
it was, to measure against); now it writes one part file per table
(:meth:`orchestrator.stores.results_store.ResultsStore.record`). For each size N the store is first
filled with N trials of ``EPOCHS`` epochs (untimed: the old layout as one compacted file pair,
the new one as N part pairs, as a live sweep leaves them), then the next ``PROBES`` trials are
recorded one by one and timed; the median per trial is reported. Every store (each size, old
and new) is measured in the same run, round-robin, probe by probe.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd

SIZES = (100, 1000, 5000)
EPOCHS = 20
PROBES = 15


def old_record(store, rows: list[dict[str, Any]], histories: dict[str, list[dict]]) -> None:
    """The whole-table rewrite that ``ResultsStore.record`` did before part files (for measurement)."""
    from analysis.io import read_parquet, write_parquet_atomic
    from analysis.schema import HISTORY_COLUMNS, TRIAL_COLUMNS

    def ordered(df, first):
        return df[[c for c in first if c in df.columns] + [c for c in df.columns if c not in first]].reset_index(
            drop=True
        )

    ids = {r["trial_id"] for r in rows}
    hist_new = [
        {"trial_id": tid, **{k: h.get(k) for k in HISTORY_COLUMNS[1:]}, "diverged": bool(h.get("diverged"))}
        for tid in ids
        for h in histories.get(tid, [])
    ]
    old_h = read_parquet(store.history_path)
    if not old_h.empty:
        old_h = old_h[~old_h.trial_id.isin(ids)]
    hist = pd.concat([d for d in (old_h, pd.DataFrame(hist_new)) if not d.empty], ignore_index=True)
    write_parquet_atomic(ordered(hist, HISTORY_COLUMNS).sort_values(["trial_id", "epoch"]), store.history_path)
    old_t = read_parquet(store.trials_path)
    if not old_t.empty:
        old_t = old_t[~old_t.trial_id.isin(ids)]
    table = pd.concat([d for d in (old_t, pd.DataFrame(rows)) if not d.empty], ignore_index=True)
    write_parquet_atomic(ordered(table, TRIAL_COLUMNS), store.trials_path)


def _trial(i: int) -> tuple[dict[str, Any], list[dict]]:
    """A trials row (as the Recorder builds it) and its history, for trial number ``i``."""
    from orchestrator.stores.results_store import trial_row

    tid = f"{i:016x}"
    spec = {
        "trial_id": tid,
        "trainer": {
            "algorithm": "pc",
            "parametrization": "mup",
            "optimizer": "sgd",
            "model": "mlp",
            "width": 64 << (i % 4),
            "base_width": 64,
            "depth": 3,
            "lr": 2.0 ** -(i % 9),
            "inference_steps": 20,
            "seed": i % 3,
        },
        "data": {"dataset": "fmnist"},
        "train": {"epochs": EPOCHS},
        "swept": ["width", "lr", "seed"],
    }
    hist = [
        {
            "epoch": e,
            "train_loss": 1.0 / e + i * 1e-6,
            "test_loss": 1.1 / e,
            "test_acc": 0.8,
            "wall_s": 0.5 * e,
            "diverged": False,
        }
        for e in range(1, EPOCHS + 1)
    ]
    row = trial_row("bench", spec, hist, "ok", "node-" + "0" * 50, "host")
    row.update(retries=0, device_used="cpu")
    return row, hist


def _fill(store, n: int, parts: bool) -> None:
    """``n`` recorded trials, untimed: one file pair (old) or ``n`` part pairs (new), written without
    fsync to save the set-up's time (the timed records below fsync as a sweep does)."""
    trials = [_trial(i) for i in range(n)]
    with mock.patch("os.fsync"):
        if parts:
            for row, hist in trials:
                store.record([row], {row["trial_id"]: hist})
        else:
            old_record(store, [r for r, _ in trials], {r["trial_id"]: h for r, h in trials})


def bench_store(sizes=SIZES, probes: int = PROBES) -> list[tuple[str, str, str, str]]:
    """Rows (goal, measured, target, verdict): recording cost per trial at each size, old and new.

    All stores are filled first; then each probe records one trial into every store, in a new
    random order each time, so that every size and kind is timed in the same minutes (the machine's
    speed drifts).
    """
    import random

    from orchestrator.stores.results_store import ResultsStore

    rng = random.Random(0)
    cells = [(n, kind) for n in sizes for kind in ("old", "new")]
    times: dict[tuple[int, str], list[float]] = {c: [] for c in cells}
    compact_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = {(n, kind): ResultsStore(Path(tmp) / f"{kind}{n}") for n, kind in cells}
        for n, kind in cells:
            _fill(stores[n, kind], n, parts=kind == "new")
        for j in range(probes):
            rng.shuffle(cells)
            for n, kind in cells:
                row, hist = _trial(n + j)
                t0 = time.perf_counter()
                if kind == "old":
                    old_record(stores[n, kind], [row], {row["trial_id"]: hist})
                else:
                    stores[n, kind].record([row], {row["trial_id"]: hist})
                times[n, kind].append(time.perf_counter() - t0)
        for n in sizes:
            t0 = time.perf_counter()
            stores[n, "new"].compact()
            compact_s.append(time.perf_counter() - t0)
            assert len(stores[n, "new"].trials()) == n + probes  # the compacted table holds every trial once
    med = {c: statistics.median(v) for c, v in times.items()}
    for n in sizes:
        print(
            f"store bench, {n} trials recorded: old {1e3 * med[n, 'old']:.1f} ms, new {1e3 * med[n, 'new']:.1f} ms "
            f"per trial (medians of {probes})",
            flush=True,
        )
    sizes_text = ", ".join(str(n) for n in sizes)
    rows = []
    for kind, label in (("old", "whole-file rewrite (before)"), ("new", "part files (now)")):
        ms = ", ".join(f"{1e3 * med[n, kind]:.1f}" for n in sizes)
        growth = med[sizes[-1], kind] / med[sizes[0], kind]
        target = "≤ 2.00" if kind == "new" else "(diagnostic)"
        verdict = ("met" if growth <= 2.0 else "MISSED") if kind == "new" else "-"
        rows.append(
            (
                f"recording a trial ({EPOCHS} epochs), {label}: at {sizes[-1]} / at {sizes[0]} recorded",
                f"{growth:.2f} ({ms} ms per trial at {sizes_text} recorded; medians of {probes}, round-robin)",
                target,
                verdict,
            )
        )
    rows.append(
        (
            "compaction of the part files (once, at the end of a sweep)",
            ", ".join(f"{s:.2f}s" for s in compact_s) + f" at {sizes_text} trials",
            "(diagnostic)",
            "-",
        )
    )
    return rows


if __name__ == "__main__":
    for r in bench_store():
        print(" | ".join(r))

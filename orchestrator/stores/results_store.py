"""The results store of one sweep: ``sweep.yaml``, ``trials.parquet``, ``history.parquet``.

Parquet is the source of truth. Each table is a base file plus part files
(:mod:`analysis.parts`): recording a trial writes one new part per table, atomically
(``history/part-*.parquet``, then ``trials/part-*.parquet``), and reads nothing, so its cost
does not grow with the trials already recorded; readers see base and parts as one table,
keyed by ``trial_id`` (a trial recorded again replaces its rows). :meth:`ResultsStore.compact`
folds the parts into the base files (a sweep does it when it ends). A crash at any moment
leaves tables in which every recorded trial is whole and none is duplicated. Only the driver
writes here.

What a killed driver leaves is reconciled when a driver takes the directory (:meth:`ResultsStore.write_config`)
and at every compaction (:meth:`ResultsStore.reconcile`): temporary files of a write it did not finish
are removed (readers never read them) and history rows whose trial has no row (recorded up to its
history part only) are dropped. The machine refusing a write (no space, read-only, permission) is an
:class:`orchestrator.errors.EnvironmentFault` naming the path (exit 4).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from analysis import parts
from analysis.io import ParquetError, remove_stale_temps, write_text_atomic
from analysis.schema import DONE_STATUSES, HISTORY_COLUMNS, SGD_STEPS, STATUS_DIVERGED, TRIAL_COLUMNS
from orchestrator.errors import BadInput, EnvironmentFault, is_environment_error
from orchestrator.spec.config import EXECUTION_KEYS, TrialSpec, identity_change

# The columns and statuses are the results contract (analysis/schema.py, docs/ARCHITECTURE.md);
# re-exported here for the callers that import them from the writer.
__all__ = ["TRIAL_COLUMNS", "HISTORY_COLUMNS", "DONE_STATUSES", "trial_row", "ResultsStore", "storing"]

# A history part younger than this may belong to a record() still under way (its trials part next):
# its trials are not orphans yet.
ORPHAN_GRACE_S = 60.0


@contextmanager
def storing(path: str | Path) -> Iterator[None]:
    """Writes under ``path``: an ``OSError`` of the environment (no space, read-only, permission,
    file size limit) becomes an :class:`EnvironmentFault` naming the file (else ``path``)."""
    try:
        yield
    except OSError as exc:
        if is_environment_error(exc):
            raise EnvironmentFault(exc.filename or path, exc) from None
        raise


def trial_row(
    sweep: str,
    spec: dict[str, Any],
    history: list[dict],
    status: str,
    node: str = "",
    hostname: str = "",
    error: str = "",
) -> dict[str, Any]:
    """One ``trials.parquet`` row from a trial spec (``TrialSpec.to_dict()``) and its history."""
    tc = spec["trainer"]
    last = dict(history[-1]) if history else {}
    if status == STATUS_DIVERGED:  # the contract: a diverged trial's final losses are +inf, its accuracy NaN
        last.update(train_loss=math.inf, test_loss=math.inf, test_acc=math.nan)
    row = {
        "trial_id": spec["trial_id"],
        "sweep": sweep,
        "algorithm": tc["algorithm"],
        "parametrization": tc["parametrization"],
        "optimizer": tc["optimizer"],
        "dataset": spec["data"]["dataset"],
        "model": tc["model"],
        "width": int(tc["width"]),
        "base_width": int(tc["base_width"]),
        "depth": int(tc["depth"]),
        "lr": float(tc["lr"]),
        "inference_steps": int(tc["inference_steps"]),
        "seed": int(tc["seed"]),
        "status": status,
        "final_train_loss": float(last.get("train_loss", math.nan)),
        "final_test_loss": float(last.get("test_loss", math.nan)),
        "final_test_acc": float(last.get("test_acc", math.nan)),
        "epochs_done": len(history),
        "wall_s": float(last.get("wall_s", 0.0)),
        "node": node,
    }
    for key in spec.get("swept", ()):
        if key not in row:
            row[key] = tc[key]
    row.update(hostname=hostname, error=error)
    steps = last.get(SGD_STEPS)  # the updates the trial applied (None: recorded before the loop counted them)
    row[SGD_STEPS] = int(steps) if steps is not None and not (isinstance(steps, float) and math.isnan(steps)) else None
    return row


class ResultsStore:
    """``results/<sweep>/``: the resolved config and the two Parquet tables."""

    def __init__(self, sweep_dir: str | Path) -> None:
        self.dir = Path(sweep_dir).resolve()
        self.trials_path = self.dir / "trials.parquet"
        self.history_path = self.dir / "history.parquet"
        self.config_path = self.dir / "sweep.yaml"
        self._seq: int | None = None  # the last part seq written (found once, at the first record)

    # ---- config ------------------------------------------------------------
    def check_owner(self, identity: dict[str, Any]) -> None:
        """BadInput if this directory holds a different sweep: one whose recorded trials the config
        ``identity`` (:meth:`Sweep.identity`) would compute differently (a fixed trainer key, data,
        train). Grid growth is the same sweep (:func:`orchestrator.spec.config.identity_change`): new or
        dropped values of an axis, a new axis through the old fixed value, an axis fixed at one of
        its values; the recorded trials are kept and only the new ones run."""
        old = self.recorded_identity()
        if old is None:
            return
        change = identity_change(old, identity, str(self.config_path))
        if change is not None:
            raise BadInput(
                f"{self.dir}: {change} in {self.config_path.name}: that changes what its recorded trials "
                "computed, so it is another sweep: give it another name= (or --results); only grid axes "
                "may grow in place (new widths, seeds, lrs or groups keep the recorded trials and run the new ones)"
            )

    def recorded_identity(self) -> dict[str, Any] | None:
        """The identity (execution keys left out) of ``sweep.yaml``; None when there is none; BadInput
        when it is unreadable or not a mapping."""
        if not self.config_path.exists():
            return None
        try:
            old = OmegaConf.to_container(OmegaConf.load(self.config_path), resolve=True) or {}
        except (yaml.YAMLError, OmegaConfBaseException, OSError):
            raise BadInput(f"{self.config_path}: unreadable; this directory is not a sweep's") from None
        if not isinstance(old, dict):
            raise BadInput(f"{self.config_path}: not a mapping; this directory is not a sweep's")
        return {k: v for k, v in old.items() if k not in EXECUTION_KEYS}

    def restate_axes(self, identity: dict[str, Any], specs: Iterable[TrialSpec]) -> int:
        """Give the recorded rows the value of every grid axis of ``identity`` that they lack.

        :func:`trial_row` writes a column for the swept keys only, so the rows recorded while a key
        was fixed (or at its default) have no value in its column once it becomes an axis, and the
        analysis would pool them with no group (``sweep.yaml`` no longer says the fixed value). Each
        such row gets the value it ran with: its spec's in ``specs`` (a trial id hashes the whole
        trainer config, so the same id is the same config), else the fixed (or default) value of the
        recorded ``sweep.yaml`` when the key was not an axis there. Call it after :meth:`check_owner`
        and before :meth:`write_config` (which replaces that ``sweep.yaml``).

        The rows are written again as one trials part (atomic; it replaces them by ``trial_id``, their
        history untouched); a rerun finds nothing missing and writes nothing.

        Returns:
            The number of rows restated.
        """
        grid = dict(identity.get("grid") or {})
        if not grid or not self.has_trials():
            return 0
        table = self.trials()
        if table.empty:
            return 0
        old = self.recorded_identity() or {}
        old_grid, old_fixed = dict(old.get("grid") or {}), dict(old.get("trainer") or {})
        by_id = {t.trial_id: t.trainer for t in specs}
        ran: dict[str, pd.Series] = {}  # key -> the value each lacking row ran with, by row
        for key in grid:
            lacking = table[key].isna() if key in table.columns else pd.Series(True, index=table.index)
            ids = table.trial_id[lacking]
            if ids.empty:
                continue
            fallback = None  # unknown: the key was an axis already (rows recorded before this restating)
            if not ids.isin(by_id.keys()).all() and self.config_path.exists() and key not in old_grid:
                fallback = old_fixed[key] if key in old_fixed else _default(key)  # fixed when they ran
            values = pd.Series([by_id[t][key] if t in by_id else fallback for t in ids], index=ids.index, dtype=object)
            values = values[values.notna()]
            if not values.empty:
                ran[key] = values
        if not ran:
            return 0
        rows = table.loc[sorted(set().union(*(v.index for v in ran.values())))].copy()
        for key, values in ran.items():
            column = (
                rows[key].astype(object) if key in rows.columns else pd.Series(None, index=rows.index, dtype=object)
            )
            column.loc[values.index.intersection(rows.index)] = values
            rows[key] = column
        with storing(self.dir):
            parts.write_part(_ordered(rows, TRIAL_COLUMNS), self.trials_path, self._next_seq())
        return len(rows)

    def write_config(self, text: str) -> None:
        """Write ``sweep.yaml`` (a driver takes the directory): first reconcile what a killed driver left."""
        with storing(self.dir):
            self.reconcile()
            write_text_atomic(text, self.config_path)

    def reconcile(self, grace_s: float = ORPHAN_GRACE_S) -> tuple[int, int]:
        """Clean what a killed driver left: its temporary files (of part files, bases, ``sweep.yaml``)
        are removed, and history rows whose trial has no row in the trials table are dropped (a
        null-epoch part hides them; the next compaction deletes them). History parts younger than
        ``grace_s`` are left alone: a writer may be between its history part and its trials part.

        Returns:
            (temporary files removed, trial ids whose history was dropped).
        """
        with storing(self.dir):
            removed = sum(
                len(remove_stale_temps(d))
                for d in (self.dir, parts.parts_dir(self.trials_path), parts.parts_dir(self.history_path))
            )
            orphans = self._orphans(grace_s)
            if orphans:
                none = pa.table(
                    {"trial_id": pa.array(orphans, pa.large_string()), "epoch": pa.nulls(len(orphans), pa.int64())}
                )
                parts.write_part(none, self.history_path, self._next_seq())
        return removed, len(orphans)

    def _orphans(self, grace_s: float) -> list[str]:
        """Trial ids with history rows and no trials row, but none in a history part younger than ``grace_s``."""
        if not parts.has_table(self.history_path):
            return []
        history = self.history()
        if history.empty:
            return []
        trials = self.trials()
        known = set(trials.trial_id) if not trials.empty else set()
        orphans = set(history.trial_id) - known
        if not orphans:
            return []
        young = time.time_ns() - int(grace_s * 1e9)
        for p in parts.list_parts(self.history_path):
            if parts.part_seq(p) > young:
                try:
                    orphans -= set(pq.read_table(p, columns=["trial_id"]).column("trial_id").to_pylist())
                except FileNotFoundError:  # compacted meanwhile: its rows are in the base
                    continue
        return sorted(orphans)

    def _next_seq(self) -> int:
        """A part seq above every part and mark of both tables (found once, then counted on)."""
        if self._seq is None:
            found = [parts.watermark(p) for p in (self.trials_path, self.history_path)]
            found += [
                parts.part_seq(p)
                for p in (parts.list_parts(self.trials_path)[-1:] + parts.list_parts(self.history_path)[-1:])
            ]
            self._seq = max(found)
        self._seq = parts.next_seq(self._seq)
        return self._seq

    # ---- tables ------------------------------------------------------------
    def trials(self) -> pd.DataFrame:
        """The trials table, base and parts (empty when absent); BadInput when a file is corrupt."""
        return self._read(parts.read_trials)

    def history(self) -> pd.DataFrame:
        """The history table, base and parts (empty when absent); BadInput when a file is corrupt."""
        return self._read(parts.read_history)

    def has_trials(self) -> bool:
        """Whether any trial was recorded here (a trials base file or a part)."""
        return parts.has_table(self.trials_path)

    def _read(self, read: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
        try:
            return read(self.dir)
        except ParquetError as exc:
            raise BadInput(
                f"{exc}; move trials.parquet, history.parquet, trials/ and history/ aside and rerun the "
                "sweep: it rebuilds them from Tune's storage (tune/) where it can and runs the rest "
                "again"
            ) from None

    def done_ids(self) -> set[str]:
        """Trial ids recorded as ``ok`` or ``diverged`` (a sweep re-run skips these)."""
        df = self.trials()
        if df.empty:
            return set()
        return set(df.loc[df.status.isin(DONE_STATUSES), "trial_id"])

    def record(self, rows: Iterable[dict[str, Any]], histories: dict[str, list[dict]]) -> None:
        """Add or replace trials (by ``trial_id``) and their histories: one new part file per table.

        The history part is written before the trials part, each atomically; nothing is read
        (after the first call, which finds the last part seq), so the cost is the same whether
        the store holds ten trials or ten thousand.
        """
        rows = list(rows)
        if not rows:
            return
        ids = list(dict.fromkeys(r["trial_id"] for r in rows))
        hist_new = [
            {"trial_id": tid, **{k: h.get(k) for k in HISTORY_COLUMNS[1:]}, "diverged": bool(h.get("diverged", False))}
            for tid in ids
            for h in histories.get(tid, [])
        ]
        seq = self._next_seq()
        hist = (
            pa.Table.from_pandas(
                _ordered(pd.DataFrame(hist_new), HISTORY_COLUMNS).sort_values(["trial_id", "epoch"]),
                preserve_index=False,
            )
            if hist_new
            else None
        )
        empty = [tid for tid in ids if not histories.get(tid)]
        if empty:  # recorded again without history: a row with a null epoch hides the old history
            none = pa.table({"trial_id": pa.array(empty, pa.large_string()), "epoch": pa.nulls(len(empty), pa.int64())})
            hist = none if hist is None else pa.concat_tables([hist, none], promote_options="permissive")
        with storing(self.dir):
            parts.write_part(hist, self.history_path, seq)
            parts.write_part(_ordered(pd.DataFrame(rows), TRIAL_COLUMNS), self.trials_path, seq)

    def compact(self) -> int:
        """Reconcile (:meth:`reconcile`), then fold the part files into ``history.parquet`` and
        ``trials.parquet`` (each atomic, crash-safe); the number of part files removed. BadInput when
        a file is corrupt, :class:`EnvironmentFault` when the machine refuses a write."""
        try:
            with storing(self.dir):
                self.reconcile()
                return parts.compact_sweep(self.dir)
        except ParquetError as exc:
            raise BadInput(f"{exc}; move it aside and compact again") from None


def _default(key: str) -> Any:
    """``TrainerConfig``'s default of ``key`` (None when it is no field of it)."""
    from trainers import TrainerConfig  # torch: imported only when a row needs a default

    f = {f.name: f for f in dataclasses.fields(TrainerConfig)}.get(key)
    if f is None:
        return None
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _ordered(df: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    return df[cols].reset_index(drop=True)

"""The results store of one sweep: ``sweep.yaml``, ``trials.parquet``, ``history.parquet``.

Parquet is the source of truth. Every write replaces the whole table atomically
(:func:`analysis.io.write_parquet_atomic`), rows are keyed by ``trial_id`` (and
``epoch``), and a trial's history is written before its ``trials`` row, so a
crash at any moment leaves tables in which every recorded trial is whole and
none is duplicated. Only the driver writes here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from analysis.io import ParquetError, read_parquet, write_parquet_atomic, write_text_atomic
from analysis.schema import DONE_STATUSES, HISTORY_COLUMNS, STATUS_DIVERGED, TRIAL_COLUMNS

from .config import EXECUTION_KEYS
from .errors import BadInput

# The columns and statuses are the results contract (analysis/schema.py, docs/ARCHITECTURE.md);
# re-exported here for the callers that import them from the writer.
__all__ = ["TRIAL_COLUMNS", "HISTORY_COLUMNS", "DONE_STATUSES", "trial_row", "ResultsStore"]


def trial_row(sweep: str, spec: dict[str, Any], history: list[dict], status: str, node: str = "",
              hostname: str = "", error: str = "") -> dict[str, Any]:
    """One ``trials.parquet`` row from a trial spec (``TrialSpec.to_dict()``) and its history."""
    tc = spec["trainer"]
    last = dict(history[-1]) if history else {}
    if status == STATUS_DIVERGED:  # the contract: a diverged trial's final losses are +inf, its accuracy NaN
        last.update(train_loss=math.inf, test_loss=math.inf, test_acc=math.nan)
    row = {"trial_id": spec["trial_id"], "sweep": sweep, "algorithm": tc["algorithm"],
           "parametrization": tc["parametrization"], "optimizer": tc["optimizer"],
           "dataset": spec["data"]["dataset"], "model": tc["model"], "width": int(tc["width"]),
           "base_width": int(tc["base_width"]), "depth": int(tc["depth"]), "lr": float(tc["lr"]),
           "inference_steps": int(tc["inference_steps"]), "seed": int(tc["seed"]), "status": status,
           "final_train_loss": float(last.get("train_loss", math.nan)),
           "final_test_loss": float(last.get("test_loss", math.nan)),
           "final_test_acc": float(last.get("test_acc", math.nan)),
           "epochs_done": len(history), "wall_s": float(last.get("wall_s", 0.0)), "node": node}
    for key in spec.get("swept", ()):
        if key not in row:
            row[key] = tc[key]
    row.update(hostname=hostname, error=error)
    return row


class ResultsStore:
    """``results/<sweep>/``: the resolved config and the two Parquet tables."""

    def __init__(self, sweep_dir: str | Path) -> None:
        self.dir = Path(sweep_dir).resolve()
        self.trials_path = self.dir / "trials.parquet"
        self.history_path = self.dir / "history.parquet"
        self.config_path = self.dir / "sweep.yaml"

    # ---- config ------------------------------------------------------------
    def check_owner(self, identity: dict[str, Any]) -> None:
        """BadInput if this directory holds a different sweep (its ``sweep.yaml`` differs)."""
        if not self.config_path.exists():
            return
        try:
            old = OmegaConf.to_container(OmegaConf.load(self.config_path), resolve=True) or {}
        except (yaml.YAMLError, OmegaConfBaseException, OSError):
            raise BadInput(f"{self.config_path}: unreadable; this directory is not a sweep's") from None
        old = {k: v for k, v in old.items() if k not in EXECUTION_KEYS}
        if old != identity:
            diff = _first_difference(old, identity)
            raise BadInput(f"{self.dir}: belongs to a different sweep config ({diff} differs from "
                           f"{self.config_path.name}); use another --results or name=")

    def write_config(self, text: str) -> None:
        write_text_atomic(text, self.config_path)

    # ---- tables ------------------------------------------------------------
    def trials(self) -> pd.DataFrame:
        """trials.parquet (empty when absent); BadInput when it is corrupt."""
        return self._read(self.trials_path)

    def history(self) -> pd.DataFrame:
        """history.parquet (empty when absent); BadInput when it is corrupt."""
        return self._read(self.history_path)

    @staticmethod
    def _read(path: Path) -> pd.DataFrame:
        try:
            return read_parquet(path)
        except ParquetError as exc:
            raise BadInput(f"{exc}; move trials.parquet and history.parquet aside and rerun the sweep: it "
                           "rebuilds them from Tune's storage (tune/) where it can and runs the rest again") from None

    def done_ids(self) -> set[str]:
        """Trial ids recorded as ``ok`` or ``diverged`` (a sweep re-run skips these)."""
        df = self.trials()
        if df.empty:
            return set()
        return set(df.loc[df.status.isin(DONE_STATUSES), "trial_id"])

    def record(self, rows: Iterable[dict[str, Any]], histories: dict[str, list[dict]]) -> None:
        """Add or replace trials (by ``trial_id``) and their histories, atomically per table."""
        rows = list(rows)
        if not rows:
            return
        ids = {r["trial_id"] for r in rows}
        hist_new = [{"trial_id": tid, **{k: h.get(k) for k in HISTORY_COLUMNS[1:]},
                     "diverged": bool(h.get("diverged", False))}
                    for tid in ids for h in histories.get(tid, [])]
        old_h = self.history()
        if not old_h.empty:
            old_h = old_h[~old_h.trial_id.isin(ids)]
        hist = pd.concat([d for d in (old_h, pd.DataFrame(hist_new)) if not d.empty], ignore_index=True) \
            if hist_new or not old_h.empty else pd.DataFrame(columns=HISTORY_COLUMNS + ["diverged"])
        write_parquet_atomic(_ordered(hist, HISTORY_COLUMNS).sort_values(["trial_id", "epoch"]),
                             self.history_path)
        old_t = self.trials()
        if not old_t.empty:
            old_t = old_t[~old_t.trial_id.isin(ids)]
        new_t = pd.DataFrame(rows)
        table = pd.concat([d for d in (old_t, new_t) if not d.empty], ignore_index=True)
        write_parquet_atomic(_ordered(table, TRIAL_COLUMNS), self.trials_path)


def _ordered(df: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    return df[cols].reset_index(drop=True)


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
    return f"{path or 'config'}={new!r} (was {old!r})"

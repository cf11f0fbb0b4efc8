"""Read a sweep's logs (Parquet, or MLflow runs when Parquet is absent) into one tidy table.

``results/<sweep>/`` holds ``sweep.yaml``, ``trials.parquet`` and ``history.parquet``, and the part
files ``trials/`` and ``history/`` of trials recorded since the last compaction, read with them as
one table (:mod:`analysis.parts`; docs/ARCHITECTURE.md, "The results contract"). Parquet is the
source of truth; MLflow is read only when no trials table (base or part) is there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .io import ParquetError
from .parts import has_table, read_history, read_trials
from .schema import (  # noqa: F401 (re-exported)
    DEFAULT_OBJECTIVE,
    DEFAULT_VERIFY,
    FINAL_METRICS,
    MLFLOW_METRIC_KEYS,
    MODES,
    RESULT_COLUMNS,
    ROLE_TRIAL,
    STATUS_DIVERGED,
    STATUS_FAILED,
    STATUS_OK,
    STRING_COLUMNS,
    TAG_ROLE,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    final,
    tracking_uri,
)
from .schema import EPOCH_METRICS as HISTORY_METRICS

_MLFLOW_INF = 1.7976931348623157e308  # MLflow stores ±inf as ±(largest float)


class LogError(ValueError):
    """The logs cannot be read as a sweep: the message names the file, key or value."""


@dataclass
class SweepLogs:
    """A sweep's logs as read from disk.

    Attributes:
        name: the sweep name (``sweep.yaml``'s ``name``, else the directory name).
        trials: one row per trial, columns as trials.parquet.
        history: one row per (trial, epoch), columns as history.parquet (may be empty).
        source: ``parquet`` or ``mlflow:<uri>``.
        objective: ``{"metric": ..., "mode": ...}`` from ``sweep.yaml`` (defaults otherwise).
        verify: ``{"max_drift": ..., "max_regret": ...}`` from ``sweep.yaml`` (defaults otherwise).
        tracking_uri: the MLflow store of the sweep, or None when none is found.
        experiment: the MLflow experiment name.
        notes: what the reader had to assume.
    """

    name: str
    trials: pd.DataFrame
    history: pd.DataFrame
    source: str
    objective: dict
    verify: dict
    tracking_uri: str | None
    experiment: str
    notes: list[str] = field(default_factory=list)


def read_sweep_yaml(results_dir: str | Path) -> dict:
    """The resolved sweep config ``results_dir/sweep.yaml`` as a plain dict ({} when absent).

    Raises:
        LogError: the file exists but is not a YAML mapping.
    """
    path = Path(results_dir) / "sweep.yaml"
    if not path.exists():
        return {}
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:  # omegaconf and yaml raise many kinds
        raise LogError(f"{path}: not readable YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise LogError(f"{path}: expected a mapping at the top level")
    return cfg


def _section(cfg: dict, key: str, defaults: dict, path: Path) -> dict:
    sec = cfg.get(key) or {}
    if not isinstance(sec, dict):
        raise LogError(f"{path}: {key} must be a mapping, got {sec!r}")
    out = dict(defaults)
    out.update({k: v for k, v in sec.items() if k in defaults and v is not None})
    return out


def thresholds(cfg: dict, path: Path = Path("sweep.yaml")) -> tuple[dict, dict]:
    """``(objective, verify)`` sections of a sweep config, with defaults, checked.

    Raises:
        LogError: mode not in ``min, max`` or a threshold that is not a non-negative number.
    """
    objective = _section(cfg, "objective", DEFAULT_OBJECTIVE, path)
    verify = _section(cfg, "verify", DEFAULT_VERIFY, path)
    if objective["mode"] not in MODES:
        raise LogError(f"{path}: objective.mode={objective['mode']!r} is not one of {', '.join(MODES)}")
    for key in DEFAULT_VERIFY:
        try:
            verify[key] = float(verify[key])
        except (TypeError, ValueError):
            raise LogError(f"{path}: verify.{key}={verify[key]!r} is not a number") from None
        if not verify[key] >= 0:
            raise LogError(f"{path}: verify.{key}={verify[key]!r} must be >= 0")
    return objective, verify


def seed_design(cfg: dict, path: Path = Path("sweep.yaml")) -> dict:
    """``seeds, max_seeds, seed_step`` of a verify's ``verify:`` section (those present; ints).

    Raises:
        LogError: one that is not a positive integer.
    """
    sec = cfg.get("verify") or {}
    out = {}
    for key in ("seeds", "max_seeds", "seed_step"):
        if sec.get(key) is None:
            continue
        try:
            out[key] = int(sec[key])
        except (TypeError, ValueError):
            raise LogError(f"{path}: verify.{key}={sec[key]!r} is not an integer") from None
        if out[key] < 1:
            raise LogError(f"{path}: verify.{key}={sec[key]!r} must be >= 1")
    return out


def find_tracking_uri(results_dir: str | Path, cfg: dict) -> str | None:
    """The sweep's MLflow store: ``tracking.uri``, else $MLFLOW_TRACKING_URI, else an existing
    ``mlflow.db`` in the sweep directory or its parent (``results/mlflow.db``); None if none."""
    return tracking_uri(results_dir, (cfg.get("tracking") or {}).get("uri"), existing_only=True)


def load_sweep(results_dir: str | Path) -> SweepLogs:
    """Read ``results_dir`` (``sweep.yaml``, ``trials.parquet``, ``history.parquet``, or MLflow).

    Args:
        results_dir: a sweep's results directory, ``results/<sweep>``.

    Returns:
        The logs, thresholds and objective of the sweep.

    Raises:
        LogError: not a directory, or neither trials.parquet nor MLflow trial runs are found.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise LogError(f"{results_dir}: no such directory")
    yaml_path = results_dir / "sweep.yaml"
    cfg = read_sweep_yaml(results_dir)
    notes = [] if cfg else [f"{yaml_path} not found: defaults objective {DEFAULT_OBJECTIVE}, verify {DEFAULT_VERIFY}"]
    if cfg and "objective" not in cfg and ("metric" in cfg or "mode" in cfg):
        metric = final(str(cfg.get("metric", DEFAULT_OBJECTIVE["metric"])))
        cfg = {**cfg, "objective": {"metric": metric, "mode": cfg.get("mode", DEFAULT_OBJECTIVE["mode"])}}
        notes.append(f"{yaml_path} has top-level metric/mode instead of objective: used {cfg['objective']}")
    if cfg and "verify" not in cfg:
        notes.append(f"{yaml_path} has no verify: section: default thresholds {DEFAULT_VERIFY}")
    objective, verify = thresholds(cfg, yaml_path)
    if (results_dir / "base_lr.json").exists():  # a verify: its seed schedule sets the level of each look
        verify.update(seed_design(cfg, yaml_path))
    name = str(cfg.get("name") or results_dir.resolve().name)
    experiment = str((cfg.get("tracking") or {}).get("experiment") or name)
    uri = find_tracking_uri(results_dir, cfg)
    trials_path = results_dir / "trials.parquet"
    found = has_table(trials_path)
    if not found:
        inside = sorted(p.name for p in results_dir.iterdir() if p.is_dir() and has_table(p / "trials.parquet"))
        if inside:
            raise LogError(
                f"{results_dir}: no trials.parquet here; it holds the sweeps {', '.join(inside)}: "
                f"pass {results_dir / inside[0]}"
            )
    if found:
        try:
            trials = read_trials(results_dir)
            history = read_history(results_dir)
        except ParquetError as exc:
            raise LogError(
                f"{exc}; move trials.parquet, history.parquet, trials/ and history/ aside and rerun the "
                "sweep (same config and --results): it rebuilds them from Tune's storage where it can"
            ) from None
        source = "parquet"
    else:
        if uri is None:
            raise LogError(
                f"{results_dir}: no trials.parquet and no MLflow store (mlflow.db or tracking.uri): "
                "not a sweep's results directory"
            )
        trials, history = read_mlflow(uri, experiment, sweep=name)
        if trials.empty:
            raise LogError(
                f"{results_dir}: no trials.parquet, and MLflow store {uri} has no trial runs "
                f"in experiment {experiment!r}"
            )
        source = f"mlflow:{uri}"
        notes += trials.attrs.get("notes", [])
        notes.append(f"read from MLflow ({uri}, experiment {experiment!r}): {trials_path} not found")
    if trials.empty:
        raise LogError(f"{trials_path}: no trials")
    trials = trials.fillna({k: v for k, v in (cfg.get("trainer") or {}).items() if k in trials.columns})
    missing = [c for c in ("trial_id", "width", "lr", "status") if c not in trials.columns]
    if missing:
        raise LogError(f"{trials_path}: missing column(s) {', '.join(missing)}")
    return SweepLogs(
        name=name,
        trials=trials,
        history=history,
        source=source,
        objective=objective,
        verify=verify,
        tracking_uri=uri,
        experiment=experiment,
        notes=notes,
    )


# ---- MLflow ------------------------------------------------------------------------
def _parse_column(values: list[str | None]) -> list:
    """Strings logged as MLflow params back to ints, floats, bools or None, column-wise."""
    present = [v for v in values if v is not None and v != "None"]
    none = lambda v: v is None or v == "None"  # noqa: E731
    for cast in (int, float):
        try:
            [cast(v) for v in present]
        except ValueError:
            continue
        return [None if none(v) else cast(v) for v in values]
    if present and all(v in ("True", "False") for v in present):
        return [None if none(v) else v == "True" for v in values]
    return [None if none(v) else v for v in values]


PARAM_PREFIXES = ("trainer.", "data.", "train.")


def _strip_prefix(key: str) -> str:
    """``trainer.width`` -> ``width``: params logged with their config section still map to columns."""
    for p in PARAM_PREFIXES:
        if key.startswith(p):
            return key[len(p) :]
    return key


def read_mlflow(
    uri: str, experiment: str, sweep: str | None = None, history: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials (and per-epoch history) of a sweep from its MLflow trial runs.

    Trial runs carry tag ``mutransfer.role = trial``; params are the trials.parquet config
    columns, final metrics the result columns. A final loss that is missing (non-finite values
    are not logged) is +inf on a ``diverged`` trial and NaN otherwise.

    Args:
        uri: MLflow tracking URI.
        experiment: experiment name.
        sweep: keep only runs tagged ``mutransfer.sweep = sweep`` (None: all).
        history: also read the per-epoch metrics (one request per run and metric).

    Returns:
        ``(trials, history)`` frames with the Parquet columns (empty when nothing is found).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame(), pd.DataFrame()
    filt = f"tags.`{TAG_ROLE}` = '{ROLE_TRIAL}'"
    if sweep is not None:
        filt += f" and tags.`{TAG_SWEEP}` = '{sweep}'"
    rows, hist_rows, fallbacks = [], [], set()
    for run in _search_all(client, exp.experiment_id, filt):
        row = _trial_row(run, fallbacks)
        rows.append(row)
        if history:
            hist_rows.extend(
                _run_history(
                    client, run.info.run_id, row["trial_id"], row["status"] == STATUS_DIVERGED, row["epochs_done"]
                )
            )
    if not rows:
        return pd.DataFrame(), pd.DataFrame()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    trials = pd.DataFrame({k: [r.get(k) for r in rows] for k in keys})
    for col in keys:
        if col in STRING_COLUMNS or col in RESULT_COLUMNS or col in FINAL_METRICS:
            continue
        trials[col] = _parse_column(list(trials[col]))
    trials["epochs_done"] = trials["epochs_done"].astype(float)
    if fallbacks:
        trials.attrs["notes"] = [
            f"MLflow runs lack {', '.join(sorted(fallbacks))}: used each run's last per-epoch value instead"
        ]
    hist = pd.DataFrame(hist_rows, columns=["trial_id", "epoch", *HISTORY_METRICS])
    if not hist.empty:
        hist = hist.sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    return trials.sort_values("trial_id").reset_index(drop=True), hist


def _search_all(client, experiment_id: str, filter_string: str) -> list:
    """Every run of the experiment that matches ``filter_string`` (all result pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _trial_row(run, fallbacks: set[str]) -> dict:
    """One trials.parquet row from an MLflow trial run; final metrics it lacks are added to ``fallbacks``."""
    tags, metrics = run.data.tags, run.data.metrics
    status = tags.get(TAG_STATUS) or tags.get("status") or (STATUS_FAILED if run.info.status == "FAILED" else STATUS_OK)
    row: dict = {_strip_prefix(k): v for k, v in run.data.params.items() if k != "log2_lr"}  # log2_lr: derived
    row["trial_id"] = tags.get(TAG_TRIAL, run.info.run_name)
    row.setdefault("sweep", tags.get(TAG_SWEEP))  # a tag since tracking format 2
    row["status"] = status
    for key in FINAL_METRICS:
        default = math.inf if (status == STATUS_DIVERGED and key.endswith("_loss")) else math.nan
        value = metrics.get(key)  # tracking format 2: a metric
        try:
            tagged = float(tags[key])  # format 3: a tag at 4 significant figures ("inf", "nan" spelled out)
        except (KeyError, ValueError):
            tagged = None
        last = _metric_key(key[6:], metrics) if key.startswith("final_") else None
        if value is None and last is not None and (tagged is None or math.isfinite(tagged)):
            value = metrics[last]  # the last epoch's value, every digit
            if tagged is None:
                fallbacks.add(key)  # neither logged as final_* nor tagged
        if value is None:
            value = tagged
        value = default if value is None else float(value)
        row[key] = math.copysign(math.inf, value) if abs(value) >= _MLFLOW_INF else value
    row["node"] = None
    return row


def _metric_key(column: str, metrics: dict) -> str | None:
    """The key under which a run logged the history column ``column`` (any tracking format), or None."""
    for key in (MLFLOW_METRIC_KEYS.get(column, column), column):
        if key in metrics:
            return key
    return None


def _run_history(client, run_id: str, trial_id: str, diverged: bool, epochs_done: float) -> list[dict]:
    """Per-epoch rows of one run; on a diverged run, epochs up to epochs_done whose losses were
    not logged (non-finite) get +inf losses and NaN accuracy."""
    per_epoch: dict[int, dict] = {}
    for key in HISTORY_METRICS:
        logged = client.get_metric_history(run_id, MLFLOW_METRIC_KEYS.get(key, key))
        if not logged and key in MLFLOW_METRIC_KEYS:  # tracking format <= 3 logged the column's own name
            logged = client.get_metric_history(run_id, key)
        for m in logged:
            v = math.copysign(math.inf, m.value) if abs(m.value) >= _MLFLOW_INF else m.value
            per_epoch.setdefault(int(m.step), {"trial_id": trial_id, "epoch": int(m.step)})[key] = v
    if diverged and math.isfinite(epochs_done):
        for e in range(1, int(epochs_done) + 1):
            per_epoch.setdefault(e, {"trial_id": trial_id, "epoch": e})
    rows = [per_epoch[e] for e in sorted(per_epoch)]
    for r in rows:
        for key in HISTORY_METRICS:
            r.setdefault(key, math.inf if diverged and key.endswith("_loss") else np.nan)
    return rows

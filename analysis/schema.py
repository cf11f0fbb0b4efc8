"""The results contract: the names every writer and reader of a sweep's results agree on.

``results/<sweep>/trials.parquet`` and ``history.parquet`` (their columns and statuses), the
MLflow layout (tags, metrics), the keys that make a group and the axes inside one, and the
objective: its defaults and its rule (which way is better, how a diverged trial counts). The driver
(``orchestrator.stores.results_store``, ``orchestrator.stores.tracking``) writes by these names, the analysis
(``analysis.load``, ``analysis.report``) reads by them. See docs/ARCHITECTURE.md, "The results
contract". Plain data and a few small functions; it imports only the standard library.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# ---- trials.parquet and history.parquet ----------------------------------------------
# trials.parquet: these columns first, then one per other swept key, then extras.
TRIAL_COLUMNS = [
    "trial_id",
    "sweep",
    "algorithm",
    "parametrization",
    "optimizer",
    "dataset",
    "model",
    "width",
    "base_width",
    "depth",
    "lr",
    "inference_steps",
    "seed",
    "status",
    "final_train_loss",
    "final_test_loss",
    "final_test_acc",
    "epochs_done",
    "wall_s",
    "node",
]
# history.parquet: these columns first, then ``diverged``. ``sgd_steps``: the optimizer updates applied
# up to the end of the epoch, counted by the training loop (absent, or null, in data recorded before it:
# ``analysis.over_time.sgd_steps_from_config`` derives it there).
HISTORY_COLUMNS = ["trial_id", "epoch", "train_loss", "test_loss", "test_acc", "wall_s", "sgd_steps"]
SGD_STEPS = "sgd_steps"

# ---- groups and axes ----------------------------------------------------------------
# A group (one study at the base width, one verdict) is a value of each of these keys, plus of every
# other swept key that varies (analysis.transfer.group_keys); inside a group the axes vary: the width
# (what transfers), the learning rate (the curve whose optimum is η*) and the seed (the replicates).
# analysis.transfer groups by them, tune-base (orchestrator.studies.tune_base) groups by the swept keys
# that are not axes, verify names its groups by them.
GROUP_KEYS = ("algorithm", "parametrization", "inference_steps")
AXES = ("width", "lr", "seed")

# ---- statuses ------------------------------------------------------------------------
STATUS_OK, STATUS_DIVERGED, STATUS_FAILED = "ok", "diverged", "failed"
STATUSES = (STATUS_OK, STATUS_DIVERGED, STATUS_FAILED)
DONE_STATUSES = (STATUS_OK, STATUS_DIVERGED)  # a "failed" trial is run again by the next sweep

# ---- metrics -------------------------------------------------------------------------
# Per epoch (history.parquet columns, MLflow metrics with step = epoch).
EPOCH_METRICS = ("train_loss", "test_loss", "test_acc")
# Per trial (trials.parquet columns, MLflow metrics at the last epoch).
FINAL_METRICS = ("final_train_loss", "final_test_loss", "final_test_acc", "epochs_done", "wall_s")
# Columns of trials.parquet that are results or where a trial ran, not configuration
# (the MLflow params are the rest).
RESULT_COLUMNS = (
    "status",
    "final_train_loss",
    "final_test_loss",
    "final_test_acc",
    "epochs_done",
    "wall_s",
    "node",
    "hostname",
    "error",
    "retries",
    "device_used",
    "started_at",
    "finished_at",
    "matmul_backend",
    "sgd_steps",
)
# Columns logged to MLflow as tags of the trial run, not params (mutransfer.trial_id, mutransfer.sweep).
TAG_COLUMNS = ("trial_id", "sweep")
# Configuration columns that stay strings even when every value looks like a number.
STRING_COLUMNS = (
    "trial_id",
    "sweep",
    "algorithm",
    "parametrization",
    "optimizer",
    "dataset",
    "model",
    "activation",
    "dtype",
    "device",
    "loss",
    "pc_init",
)

# ---- MLflow --------------------------------------------------------------------------
TAG_SWEEP, TAG_ROLE, TAG_TRIAL, TAG_STATUS = (
    "mutransfer.sweep",
    "mutransfer.role",
    "mutransfer.trial_id",
    "mutransfer.status",
)
ROLE_SWEEP, ROLE_TRIAL = "sweep", "trial"
# Runs logged in the current layout carry TAG_FORMAT = TRACKING_FORMAT; `mutransfer sync` re-logs older ones.
# 3: a trial's own numbers are tags; 4: its training loss is the metric "loss" (MLFLOW_METRIC_KEYS).
TAG_FORMAT, TRACKING_FORMAT = "mutransfer.format", "4"
# The MLflow metric key of a history column where the two differ. MLflow's chart view orders a run's charts
# by name, so the training loss is logged as "loss" (Keras' name beside "test_loss") and comes first:
# loss, sgd_steps, test_acc, test_loss. analysis.load maps it back (and reads "train_loss" of formats <= 3).
MLFLOW_METRIC_KEYS = {"train_loss": "loss"}
MLFLOW_DB = "mlflow.db"  # the default SQLite store, in the results root


def tracking_uri(results_dir: str | Path, configured: str | None = None, existing_only: bool = False) -> str | None:
    """The MLflow store of a sweep: ``configured`` (``tracking.uri``), else ``$MLFLOW_TRACKING_URI``,
    else SQLite at ``<results_dir>/mlflow.db``.

    With ``existing_only`` (a reader looking for a sweep's store) the SQLite file must exist,
    in ``results_dir`` or its parent (``results/mlflow.db`` of ``results/<sweep>``); None if neither.
    """
    if configured:
        return str(configured)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    results_dir = Path(results_dir).resolve()
    if not existing_only:
        return f"sqlite:///{results_dir / MLFLOW_DB}"
    for cand in (results_dir / MLFLOW_DB, results_dir.parent / MLFLOW_DB):
        if cand.exists():
            return f"sqlite:///{cand}"
    return None


# ---- the objective -------------------------------------------------------------------
MODES = ("min", "max")
# One default objective: the final training loss, minimised. A sweep file's top-level ``metric``
# (the trainable's reported value) defaults to it, ``objective.metric`` to ``final_<metric>``, and a
# results directory without sweep.yaml (or without ``objective:``) is judged by it; sweep.yaml always
# holds the resolved objective.
DEFAULT_METRIC, DEFAULT_MODE = "train_loss", "min"
DEFAULT_OBJECTIVE_METRIC = "final_train_loss"
DEFAULT_OBJECTIVE = {"metric": DEFAULT_OBJECTIVE_METRIC, "mode": DEFAULT_MODE}
DEFAULT_VERIFY = {"max_drift": 0.2, "max_regret": 0.05}


def final(metric: str) -> str:
    """``test_loss`` -> ``final_test_loss`` (a ``final_*`` name is returned as it is)."""
    return metric if metric.startswith("final_") else f"final_{metric}"


# The objective's rule: ``mode`` min or max says which way is better; a trial that diverged, or whose
# objective is not finite, counts as the worst value there is (+inf under min, -inf under max), never
# as missing. tune-base tells Optuna :func:`objective_value`, the analysis minimises ``sign(mode) * value``
# with diverged trials at +inf (analysis.transfer.tidy).
def sign(mode: str) -> float:
    """1.0 for ``min``, -1.0 for ``max``: ``sign(mode) * value`` is a loss to minimise.

    Raises:
        ValueError: ``mode`` is not one of :data:`MODES`.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    return 1.0 if mode == "min" else -1.0


def counts_as_diverged(status, value):
    """Whether a trial counts as diverged under the objective: its status is ``diverged`` or its value is
    not finite (NaN or ±inf). Elementwise on pandas Series and numpy arrays as on scalars."""
    return (status == STATUS_DIVERGED) | (value != value) | (abs(value) == math.inf)


def objective_value(value: float, status: str | None, mode: str) -> float:
    """A trial's objective as the optimiser sees it: ``value``, or the worst there is (``sign(mode) * inf``)
    when it counts as diverged (:func:`counts_as_diverged`)."""
    value = float(value)
    return sign(mode) * math.inf if counts_as_diverged(status, value) else value

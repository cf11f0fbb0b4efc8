"""η*(width) and the drift exponent k at every recorded epoch, from the history table (no extra trials).

Epoch e's trials table is the trials table with ``final_<m>`` replaced by history's ``<m>`` at epoch e
and ``status`` diverged for a trial that diverged at or before e (its losses +inf from then on);
:func:`analysis.transfer.analyze` of each gives k(e) with its interval and verdict. The time axis is
the number of SGD updates: history's ``sgd_steps`` (counted by ``trainers.train``) or, for data
recorded before that column existed, :func:`sgd_steps_from_config`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .schema import EPOCH_METRICS, SGD_STEPS, STATUS_DIVERGED, STATUS_FAILED, STATUS_OK
from .transfer import analyze

# The group columns of analyze's result this module reads, besides the keys.
GROUP_COLUMNS = ("drift_exponent", "drift_lo", "drift_hi", "max_regret", "verdict", "n_seeds")
# Training images per class of Fashion-MNIST (every ``fmnist*`` dataset), and its classes.
_FMNIST_PER_CLASS, _FMNIST_CLASSES = 6000, 10
_TEACHER_DEFAULT = 1024


def _n_train(data: Mapping) -> int | None:
    """Training-set size of a sweep's ``data`` section, as ``trainers``' loaders build it; None if unknown."""
    dataset, subset = str(data.get("dataset", "")), data.get("subset") or None  # 0 or null: all of it
    if dataset.startswith("fmnist"):  # load_fashion_mnist: the first subset // 10 images of each class
        per_class = _FMNIST_PER_CLASS if subset is None else min(max(1, int(subset) // 10), _FMNIST_PER_CLASS)
        return _FMNIST_CLASSES * per_class
    if dataset == "teacher":
        return int(subset) if subset is not None else _TEACHER_DEFAULT
    return None  # a plugin's dataset: its size is known only to its loader


def sgd_steps_from_config(cfg: Mapping, epoch: int | np.ndarray) -> float | np.ndarray:
    """SGD updates after ``epoch`` epochs from the sweep's config (``sweep.yaml`` as a dict).

    The fallback for data recorded before history's ``sgd_steps`` existed; new data has the count
    the loop made. ``trainers.train`` takes ``min(batch_size, n)`` per batch and drops the last,
    partial batch: ``epoch · ⌊n / batch⌋`` updates, n the training-set size of ``data.dataset`` with
    ``data.subset`` (Fashion-MNIST: 10 · max(1, subset // 10); teacher: subset, default 1024). NaN for
    a dataset of unknown size (a plugin's) or a config without ``train.batch_size``. A trial that
    diverged made fewer updates than this in its last epoch.
    """
    n = _n_train(cfg.get("data") or {})
    batch = (cfg.get("train") or {}).get("batch_size")
    if n is None or batch is None:
        return np.asarray(epoch, dtype=float) * np.nan
    return np.asarray(epoch, dtype=float) * (n // min(int(batch), n))


def diverged_at(trials: pd.DataFrame, history: pd.DataFrame) -> pd.Series:
    """Per ``trial_id``, the first epoch at which it diverged (NaN: never).

    History's ``diverged`` flag where there is one; a trial with status ``diverged`` and no flagged row
    diverged at its last recorded epoch (at epoch 1 if it has no history).
    """
    out = pd.Series(np.nan, index=pd.Index(trials.trial_id.unique(), name="trial_id"), dtype=float)
    if "diverged" in history.columns:
        flagged = history[history["diverged"].eq(True)]
        first = flagged.groupby("trial_id").epoch.min()
        out.loc[first.index.intersection(out.index)] = first
    div_ids = trials.loc[trials.status == STATUS_DIVERGED, "trial_id"]
    last = history.groupby("trial_id").epoch.max().reindex(div_ids).fillna(1.0)
    missing = last.index[out.reindex(last.index).isna()]
    out.loc[missing] = last.loc[missing].to_numpy()
    return out


def _steps(history: pd.DataFrame, cfg: Mapping | None) -> pd.Series:
    """History's ``sgd_steps``, its nulls (data recorded before the column) from the config."""
    counted = history[SGD_STEPS].astype(float) if SGD_STEPS in history.columns else pd.Series(np.nan, history.index)
    if counted.isna().any() and cfg is not None:
        derived = pd.Series(sgd_steps_from_config(cfg, history.epoch.to_numpy(dtype=float)), index=history.index)
        counted = counted.fillna(derived)
    return counted


def trials_at_epoch(
    trials: pd.DataFrame, history: pd.DataFrame, epoch: int, div_epoch: pd.Series | None = None
) -> pd.DataFrame:
    """The trials table as it would read had every trial stopped after ``epoch`` epochs.

    ``final_<m>`` holds history's ``<m>`` at ``epoch``; a trial that diverged at or before it is
    ``diverged`` with +inf losses and NaN accuracy; ``sgd_steps`` is history's at ``epoch`` (NaN when
    diverged). Failed trials and trials not recorded at ``epoch`` (and not diverged) are left out.
    """
    div_epoch = diverged_at(trials, history) if div_epoch is None else div_epoch
    t = trials[trials.status != STATUS_FAILED].copy()
    at = history[history.epoch == epoch].drop_duplicates("trial_id", keep="last").set_index("trial_id")
    div = div_epoch.reindex(t.trial_id).to_numpy(dtype=float)
    gone = div <= epoch
    keep = gone | t.trial_id.isin(at.index).to_numpy()
    t, gone, div = t[keep].copy(), gone[keep], div[keep]
    row = at.reindex(t.trial_id)
    for m in EPOCH_METRICS:
        value = row[m].to_numpy(dtype=float) if m in row.columns else np.full(len(t), np.nan)
        t[f"final_{m}"] = np.where(gone, np.inf if m.endswith("_loss") else np.nan, value)
    t["status"] = np.where(gone, STATUS_DIVERGED, STATUS_OK)
    t["epochs_done"] = np.where(gone, np.minimum(div, epoch), epoch)
    steps = row[SGD_STEPS].to_numpy(dtype=float) if SGD_STEPS in row.columns else np.full(len(t), np.nan)
    t[SGD_STEPS] = np.where(gone, np.nan, steps)
    return t.reset_index(drop=True)


def k_over_time(
    trials: pd.DataFrame,
    history: pd.DataFrame,
    *,
    metric: str,
    mode: str,
    max_drift: float,
    max_regret: float,
    level: float = 0.95,
    sweep_yaml_cfg: Mapping | None = None,
) -> pd.DataFrame:
    """The drift exponent k of every group at every recorded epoch.

    Args:
        trials, history: trials.parquet's and history.parquet's tables.
        metric: the objective, a ``final_*`` column (``final_train_loss`` reads history's ``train_loss``).
        mode, max_drift, max_regret, level: passed to :func:`analysis.transfer.analyze`.
        sweep_yaml_cfg: the sweep's resolved config (``analysis.load.read_sweep_yaml``): the SGD steps
            of history rows recorded without ``sgd_steps`` (:func:`sgd_steps_from_config`).

    Raises:
        ValueError: ``metric`` is not ``final_`` of a history metric (train_loss, test_loss, test_acc).

    Returns:
        One row per (group, epoch): the group keys, ``epoch``, ``sgd_steps`` (median over the group's
        trials that had not diverged by then), ``drift_exponent, drift_lo, drift_hi, max_regret,
        verdict, n_seeds``. Empty when there is no history. ``attrs``: ``keys``, ``metric``, ``mode``,
        ``max_drift``, ``max_regret``, ``level``.
    """
    if metric.removeprefix("final_") not in EPOCH_METRICS:
        raise ValueError(
            f"metric={metric!r} has no per-epoch history; use one of final_{', final_'.join(EPOCH_METRICS)}"
        )
    attrs = {"metric": metric, "mode": mode, "max_drift": max_drift, "max_regret": max_regret, "level": level}
    if history is None or history.empty or trials.empty:
        out = pd.DataFrame(columns=["epoch", SGD_STEPS, *GROUP_COLUMNS])
        out.attrs.update(keys=[], **attrs)
        return out
    history = history[history.epoch.notna() & history.trial_id.isin(trials.trial_id)].copy()
    history[SGD_STEPS] = _steps(history, sweep_yaml_cfg)
    div_epoch = diverged_at(trials, history)
    frames, keys = [], []
    for epoch in sorted(int(e) for e in history.epoch.unique()):
        t = trials_at_epoch(trials, history, epoch, div_epoch)
        result = analyze(
            t,
            metric=metric,
            mode=mode,
            max_drift=max_drift,
            max_regret=max_regret,
            level=level,
        )
        k = list(result.keys)
        keys += [c for c in k if c not in keys]
        for c in k:
            if c not in t.columns:  # analyze fills a missing base key with "-"
                t[c] = "-"
        steps = t[t.status == STATUS_OK].groupby(k, dropna=False)[SGD_STEPS].median().rename(SGD_STEPS).reset_index()
        g = result.groups[[*k, *GROUP_COLUMNS]].merge(steps, on=k, how="left")
        g.insert(len(k), "epoch", epoch)
        frames.append(g)
    out = pd.concat(frames, ignore_index=True)
    out = out[[*keys, "epoch", SGD_STEPS, *GROUP_COLUMNS]].sort_values([*keys, "epoch"]).reset_index(drop=True)
    out.attrs.update(keys=keys, **attrs)
    return out


# The columns of analyze's groups that :func:`k_at_steps` reports (the crossed table of issue 30).
AT_STEPS_COLUMNS = (
    "drift_exponent",
    "drift_lo",
    "drift_hi",
    "max_regret",
    "regret_lo",
    "regret_hi",
    "edge_limited_widths",
    "n_seeds",
    "level",
    "verdict",
    "own_verdict",
)


def epochs_at_steps(
    history: pd.DataFrame, steps, *, sweep_yaml_cfg: Mapping | None = None, rel_tol: float = 0.25
) -> dict[float, int | None]:
    """For each target SGD-step count, the recorded epoch whose step count is nearest to it.

    The step count of an epoch is the median of history's ``sgd_steps`` (or
    :func:`sgd_steps_from_config`) over the rows that had not diverged. A target farther than
    ``rel_tol`` (relative) from every epoch's count maps to None: the study was not recorded there.
    """
    if history is None or history.empty:
        return {float(s): None for s in steps}
    h = history[history.epoch.notna()].copy()
    h[SGD_STEPS] = _steps(h, sweep_yaml_cfg)
    if "diverged" in h.columns:
        h = h[~h["diverged"].eq(True)]
    per_epoch = h.groupby("epoch")[SGD_STEPS].median().dropna()
    out: dict[float, int | None] = {}
    for s in steps:
        s = float(s)
        if per_epoch.empty or not s > 0:
            out[s] = None
            continue
        gap = (per_epoch - s).abs() / s
        e = gap.idxmin()
        out[s] = int(e) if gap.loc[e] <= rel_tol else None
    return out


def k_at_steps(
    trials: pd.DataFrame,
    history: pd.DataFrame,
    steps=(100, 300, 1000),
    *,
    metric: str,
    mode: str,
    max_drift: float,
    max_regret: float,
    level: float = 0.95,
    sweep_yaml_cfg: Mapping | None = None,
    rel_tol: float = 0.25,
) -> pd.DataFrame:
    """The transfer verdict of every group read at given SGD-step counts of the same trials.

    Each target in ``steps`` is read at the epoch :func:`epochs_at_steps` picks (the trials table as it
    would read had every trial stopped there, :func:`trials_at_epoch`), then
    :func:`analysis.transfer.analyze`. One row per (group, target) with ``target_steps, epoch,
    sgd_steps`` (the median over the group's trials that had not diverged) and :data:`AT_STEPS_COLUMNS`
    (k with its interval, the largest excess regret with its interval, verdict). Targets the history does
    not reach within ``rel_tol`` are left out. ``attrs``: ``keys``, ``metric``, ``level``, ``missing``
    (the targets left out).

    Raises:
        ValueError: ``metric`` has no per-epoch history.
    """
    if metric.removeprefix("final_") not in EPOCH_METRICS:
        raise ValueError(
            f"metric={metric!r} has no per-epoch history; use one of final_{', final_'.join(EPOCH_METRICS)}"
        )
    picked = epochs_at_steps(history, steps, sweep_yaml_cfg=sweep_yaml_cfg, rel_tol=rel_tol)
    missing = [s for s, e in picked.items() if e is None]
    frames, keys = [], []
    if picked and any(e is not None for e in picked.values()):
        history = history[history.epoch.notna() & history.trial_id.isin(trials.trial_id)].copy()
        history[SGD_STEPS] = _steps(history, sweep_yaml_cfg)
        div_epoch = diverged_at(trials, history)
        for target, epoch in picked.items():
            if epoch is None:
                continue
            t = trials_at_epoch(trials, history, epoch, div_epoch)
            result = analyze(t, metric=metric, mode=mode, max_drift=max_drift, max_regret=max_regret, level=level)
            k = list(result.keys)
            keys += [c for c in k if c not in keys]
            for c in k:
                if c not in t.columns:
                    t[c] = "-"
            ok = t[t.status == STATUS_OK].groupby(k, dropna=False)[SGD_STEPS].median().rename(SGD_STEPS)
            cols = [c for c in AT_STEPS_COLUMNS if c in result.groups.columns]
            g = result.groups[[*k, *cols]].merge(ok.reset_index(), on=k, how="left")
            g.insert(len(k), "target_steps", target)
            g.insert(len(k) + 1, "epoch", epoch)
            frames.append(g)
    if not frames:
        out = pd.DataFrame(columns=["target_steps", "epoch", SGD_STEPS, *AT_STEPS_COLUMNS])
    else:
        out = pd.concat(frames, ignore_index=True)
        cols = [c for c in AT_STEPS_COLUMNS if c in out.columns]
        out = out[[*keys, "target_steps", "epoch", SGD_STEPS, *cols]].sort_values([*keys, "target_steps"])
        out = out.reset_index(drop=True)
    out.attrs.update(keys=keys, metric=metric, level=level, missing=missing)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.over_time DIR [--steps 100,300,1000] [--out FILE.parquet]``: the verdict of
    every group of a results directory read at those SGD-step counts (:func:`k_at_steps`), printed and
    optionally written as Parquet. Exit 2 on a directory it cannot read."""
    import argparse
    import sys

    from .io import write_parquet_atomic
    from .load import LogError, load_sweep, read_sweep_yaml
    from .transfer import logs_level

    p = argparse.ArgumentParser(prog="python -m analysis.over_time", description=main.__doc__)
    p.add_argument("results_dir")
    p.add_argument("--steps", default="100,300,1000", help="comma-separated SGD-step counts (default 100,300,1000)")
    p.add_argument("--rel-tol", type=float, default=0.25, help="largest relative gap to an epoch's step count")
    p.add_argument("--out", default=None, help="write the table as Parquet here")
    args = p.parse_args(argv)
    try:
        targets = [float(s) for s in args.steps.split(",") if s.strip()]
        logs = load_sweep(args.results_dir)
    except (ValueError, LogError, OSError) as exc:
        print(f"{args.results_dir}: {exc}", file=sys.stderr)
        return 2
    cfg = read_sweep_yaml(args.results_dir)
    table = k_at_steps(
        logs.trials,
        logs.history,
        targets,
        metric=logs.objective["metric"],
        mode=logs.objective["mode"],
        max_drift=logs.verify["max_drift"],
        max_regret=logs.verify["max_regret"],
        level=logs_level(logs.verify),
        sweep_yaml_cfg=cfg,
        rel_tol=args.rel_tol,
    )
    if table.attrs["missing"]:
        print(f"not recorded within {args.rel_tol:g} of: {', '.join(f'{s:g}' for s in table.attrs['missing'])}")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(table.round(3).to_string(index=False))
    if args.out:
        write_parquet_atomic(table, args.out)
        print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

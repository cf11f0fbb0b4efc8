"""tune-base's search in the report: its optimisation history and slice plots, in the report's style.

The studies are rebuilt in memory from the search's trials (``<sweep>/base/trials.parquet``, the
truth, readable without the study's storage server) and ``base_lr.json`` (the groups, the searched
space, the objective), then drawn with matplotlib in ``analysis.plots``' style (one column wide,
text at 7 pt, one legend). A diverged trial (its objective ±inf) is kept as a FAIL trial and drawn
as × on the top edge of its panel.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.stores.results_store import ResultsStore


def _distribution(p: dict[str, Any]):
    import optuna

    if "choices" in p:
        return optuna.distributions.CategoricalDistribution(p["choices"])
    if p["type"] == "int":
        return optuna.distributions.IntDistribution(int(p["low"]), int(p["high"]), log=bool(p["log"]))
    return optuna.distributions.FloatDistribution(float(p["low"]), float(p["high"]), log=bool(p["log"]))


def rebuild_studies(base: dict[str, Any], trials: pd.DataFrame) -> list:
    """One in-memory Optuna study per tune-base group, its trials those of ``trials`` in the group."""
    import optuna

    from orchestrator.studies.tune_base import objective_value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {p["name"]: _distribution(p) for p in base["space"]}
    studies = []
    for g in base["groups"]:
        rows = trials
        for k, v in g["group"].items():
            rows = rows[rows[k].astype(str) == str(v)] if k in rows.columns else rows.iloc[:0]
        name = ", ".join(f"{k}={v}" for k, v in g["group"].items()) or "all"
        study = optuna.create_study(study_name=name, direction="minimize" if base["mode"] == "min" else "maximize")
        for r in rows.to_dict("records"):
            if not all(k in r for k in dists):
                continue
            params = {
                k: (int(r[k]) if isinstance(d, optuna.distributions.IntDistribution) else r[k])
                for k, d in dists.items()
            }
            value = objective_value(r, base["metric"], base["mode"]) if r["status"] != "failed" else math.nan
            state = optuna.trial.TrialState.COMPLETE if math.isfinite(value) else optuna.trial.TrialState.FAIL
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=dists,
                    state=state,
                    value=value if state == optuna.trial.TrialState.COMPLETE else None,
                )
            )
        studies.append(study)
    return studies


def base_figures(sweep_dir: str | Path, dpi: int = 150) -> Callable[[Path], list[tuple[str, str, str]]] | None:
    """A figure maker for :func:`analysis.report.write_report` (None when the sweep had no tune-base)."""
    sweep_dir = Path(sweep_dir)
    try:
        base = json.loads((sweep_dir / "base_lr.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(base, dict) or not {"space", "groups", "metric", "mode"} <= set(base):
        return None
    trials = ResultsStore(sweep_dir / "base").trials()
    if trials.empty:
        return None

    def make(out: Path) -> list[tuple[str, str, str]]:
        import optuna

        studies = [
            s
            for s in rebuild_studies(base, trials)
            if any(t.state == optuna.trial.TrialState.COMPLETE for t in s.trials)
        ]
        if not studies:
            return []
        label = base["metric"].replace("_", " ")
        plot_history(studies, out / "base_history.png", label, dpi)
        figures = [
            (
                "base_history.png",
                "tune-base: optimisation history",
                f"Each study's {label} per trial in the order they were recorded (dots), the best so far (line) "
                "and diverged trials (× on the top edge).",
            )
        ]
        for i, study in enumerate(studies):
            plot_slice(study, base["space"], out / f"base_slice_{i}.png", label, dpi)
            figures.append(
                (
                    f"base_slice_{i}.png",
                    f"tune-base slice: {study.study_name}",
                    f"{label} against each searched key, trials coloured by their order (diverged: × on the top "
                    "edge); ★ the best trial.",
                )
            )
        return figures

    return make


def _values(study) -> tuple[list[int], list[float], list[int]]:
    """(numbers from 1, values) of the complete trials and the numbers of the failed (diverged) ones."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    return [t.number + 1 for t in done], [float(t.value) for t in done], [n + 1 for n in failed]


def _top_marks(ax, xs, color) -> None:
    """Diverged trials: × just above the panel's top edge."""
    if len(xs):
        (marks,) = ax.plot(
            xs, [1.03] * len(xs), "x", color=color, ms=3.5, transform=ax.get_xaxis_transform(), clip_on=False
        )
        marks.set_in_layout(False)


def plot_history(studies: list, path: Path, label: str, dpi: int = 150) -> Path:
    """The optimisation history of every study on one axis (a column wide): each trial's value, the
    best so far, diverged trials as × on the top edge; one legend (the studies)."""
    from analysis.plots import COLUMN_IN, STYLE, _save, plt

    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.2 + 0.14 * len(studies)), layout="constrained")
        maximize = studies[0].direction.name == "MAXIMIZE"
        for i, study in enumerate(studies):
            color = f"C{i % 10}"
            num, val, failed = _values(study)
            ax.plot(num, val, "o", ms=2.5, color=color, alpha=0.6)
            best = (pd.Series(val).cummax() if maximize else pd.Series(val).cummin()).to_numpy()
            ax.step(num, best, where="post", color=color, lw=1.0, label=study.study_name)
            _top_marks(ax, failed, color)
        ax.set_xlabel("trial (in the order recorded)")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title("tune-base: value per trial and best so far")
        fig.legend(loc="outside lower center", ncol=min(len(studies), 3), frameon=False)
        return _save(fig, path, dpi)


def plot_slice(study, space: list[dict[str, Any]], path: Path, label: str, dpi: int = 150) -> Path:
    """The study's value against each searched key (a column wide, one panel per key; log axes where
    the key is searched on one), trials coloured by their order, the best trial starred."""
    import numpy as np
    import optuna

    from analysis.plots import COLUMN_IN, STYLE, _save, plt

    names = [p["name"] for p in space]
    with plt.rc_context(STYLE):
        ncols = min(len(names), 2)
        nrows = -(-len(names) // ncols)
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(COLUMN_IN, 1.9 * nrows + 0.5), squeeze=False, sharey=True, layout="constrained"
        )
        for ax in axes.flat[len(names) :]:
            ax.set_visible(False)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        n = max(len(study.trials) - 1, 1)
        best = study.best_trial
        for ax, p in zip(axes.flat, space):
            key = p["name"]
            x = [t.params[key] for t in done]
            sc = ax.scatter(
                x, [t.value for t in done], c=[t.number / n for t in done], cmap="viridis", vmin=0, vmax=1, s=10
            )
            ax.plot([best.params[key]], [best.value], "*", ms=7, color="none", mec="k", mew=0.8)
            _top_marks(ax, [t.params[key] for t in failed], "0.3")
            if p.get("log") and "choices" not in p:
                ax.set_xscale("log", base=2 if key == "lr" else 10)
            ax.set_xlabel(key)
        for row in axes:
            row[0].set_ylabel(label)
        fig.suptitle(f"tune-base slice: {study.study_name}")
        bar = fig.colorbar(sc, ax=axes, location="bottom", shrink=0.7, aspect=30)
        bar.set_label("trial order (first → last)")
        bar.set_ticks(np.linspace(0, 1, 3), labels=["1", str(len(study.trials) // 2 + 1), str(len(study.trials))])
        return _save(fig, path, dpi)

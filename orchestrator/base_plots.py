"""tune-base's search in the report: Optuna's optimisation history and slice plots.

The studies are rebuilt in memory from the search's trials (``<sweep>/base/trials.parquet``, the
truth, readable without the study's storage server) and ``base_lr.json`` (the groups, the searched
space, the objective), then drawn by ``optuna.visualization.matplotlib``. A diverged trial (its
objective ±inf) is kept as a FAIL trial, which these plots leave out.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from .results_store import ResultsStore


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

    from .tune_base import objective_value

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
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import optuna
        from optuna.visualization.matplotlib import plot_optimization_history, plot_slice

        studies = [
            s
            for s in rebuild_studies(base, trials)
            if any(t.state == optuna.trial.TrialState.COMPLETE for t in s.trials)
        ]
        if not studies:
            return []
        figures = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's matplotlib plots are marked experimental
            ax = plot_optimization_history(studies, target_name=base["metric"])
            fig = ax.figure
            fig.set_size_inches(7.5, 4.2)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
            fig.savefig(out / "base_history.png", dpi=dpi, bbox_inches="tight")
            plt.close(fig)
            figures.append(
                (
                    "base_history.png",
                    "tune-base: optimisation history",
                    f"Each study's {base['metric']} per trial in the order they were recorded, and the best "
                    "so far (Optuna's plot_optimization_history; diverged trials left out).",
                )
            )
            for i, study in enumerate(studies):
                axes = plot_slice(study, target_name=base["metric"])
                fig = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
                fig.suptitle(f"tune-base slice: {study.study_name}", fontsize=10)
                fig.savefig(out / f"base_slice_{i}.png", dpi=dpi, bbox_inches="tight")
                plt.close(fig)
                figures.append(
                    (
                        f"base_slice_{i}.png",
                        f"tune-base slice: {study.study_name}",
                        f"{base['metric']} against each searched key, trials coloured by their order "
                        "(Optuna's plot_slice; diverged trials left out).",
                    )
                )
        return figures

    return make

"""tune-base's Optuna plots in the report (orchestrator/studies/base_plots.py), rebuilt from the search's trials."""

import json
import math

import optuna
import pandas as pd
import pytest

from analysis.io import write_parquet_atomic
from analysis.planted import planted_trials
from orchestrator.cli.main import main
from orchestrator.stores.results_store import ResultsStore, trial_row
from orchestrator.studies.base_plots import base_figures, rebuild_studies

SPACE = [{"name": "lr", "type": "float", "low": 1e-3, "high": 1.0, "log": True}]


@pytest.fixture
def sweep_dir(tmp_path, monkeypatch):
    """results/small/: a planted BP sweep (μP k = 0, SP k = −1), two seeds, no MLflow store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    d = tmp_path / "results" / "small"
    parts = [
        planted_trials(
            k, parametrization=p, widths=(64, 128), log2_lrs=range(-6, 1), seeds=(0, 1), name="small", rng_seed=i
        )
        for i, (p, k) in enumerate((("mup", 0.0), ("sp", -1.0)))
    ]
    write_parquet_atomic(pd.concat([t for t, _ in parts]), d / "trials.parquet")
    write_parquet_atomic(pd.concat([h for _, h in parts]), d / "history.parquet")
    (d / "sweep.yaml").write_text("name: small\n")
    return d


def _spec(algorithm: str, lr: float, i: int) -> dict:
    trainer = {
        "algorithm": algorithm,
        "parametrization": "mup",
        "optimizer": "sgd",
        "model": "mlp",
        "width": 64,
        "base_width": 64,
        "depth": 3,
        "lr": lr,
        "inference_steps": 10,
        "seed": 0,
    }
    return {
        "trial_id": f"{algorithm}{i:010d}",
        "trainer": trainer,
        "data": {"dataset": "fmnist"},
        "train": {},
        "swept": ["algorithm", "lr"],
    }


def _plant_search(sweep_dir, lrs=(0.01, 0.1, 0.5, 0.9)) -> None:
    """base/trials.parquet of a two-study search (bp, pc) whose loss is (log10 lr + 1)^2 + 0.3; lr 0.9 diverges."""
    rows, hist = [], {}
    for algorithm in ("bp", "pc"):
        for i, lr in enumerate(lrs):
            spec = _spec(algorithm, lr, i)
            loss = (math.log10(lr) + 1) ** 2 + 0.3
            h = [
                {
                    "epoch": 1,
                    "train_loss": loss,
                    "test_loss": loss,
                    "test_acc": 0.5,
                    "wall_s": 1.0,
                    "diverged": lr > 0.8,
                }
            ]
            rows.append(trial_row("small-base", spec, h, "diverged" if lr > 0.8 else "ok"))
            hist[spec["trial_id"]] = h
    ResultsStore(sweep_dir / "base").record(rows, hist)
    groups = [{"group": {"algorithm": a}, "best": {"lr": 0.1}} for a in ("bp", "pc")]
    (sweep_dir / "base_lr.json").write_text(
        json.dumps({"space": SPACE, "groups": groups, "metric": "final_train_loss", "mode": "min"})
    )


def test_studies_are_rebuilt_per_group_diverged_as_fail(sweep_dir):
    _plant_search(sweep_dir)
    base = json.loads((sweep_dir / "base_lr.json").read_text())
    bp, pc = rebuild_studies(base, ResultsStore(sweep_dir / "base").trials())
    assert (bp.study_name, pc.study_name) == ("algorithm=bp", "algorithm=pc")
    states = [t.state for t in bp.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3 and states.count(optuna.trial.TrialState.FAIL) == 1
    assert bp.best_params == {"lr": 0.1} and bp.best_value == pytest.approx(0.3)


def test_analyze_adds_the_optuna_history_and_slices_to_the_report(sweep_dir, capsys):
    _plant_search(sweep_dir)
    assert main(["analyze", str(sweep_dir), "--no-mlflow", "--formats", "png,pdf", "--dpi", "72"]) == 0
    report = sweep_dir / "report"
    for name in ("base_history.png", "base_slice_0.png", "base_slice_1.png", "loss_vs_lr.pdf"):
        assert (report / name).is_file(), name
    assert not (report / "loss_vs_lr.svg").exists()
    md = (report / "report.md").read_text()
    assert "tune-base: optimisation history" in md and "(base_slice_1.png)" in md and "PDF beside its PNG" in md


def test_no_search_no_optuna_figures(sweep_dir):
    assert base_figures(sweep_dir) is None


def test_base_plots_are_one_column_wide_in_the_report_style(sweep_dir, tmp_path):
    """The history and a slice: 3.3 in wide (read back from the PNG at its dpi), not Optuna's own plots."""
    from PIL import Image

    from analysis.plots import COLUMN_IN
    from orchestrator.studies.base_plots import plot_history, plot_slice

    _plant_search(sweep_dir)
    base = json.loads((sweep_dir / "base_lr.json").read_text())
    studies = rebuild_studies(base, ResultsStore(sweep_dir / "base").trials())
    for p in (
        plot_history(studies, tmp_path / "h.png", "final train loss", dpi=100),
        plot_slice(studies[0], SPACE, tmp_path / "s.png", "final train loss", dpi=100),
    ):
        img = Image.open(p)
        assert img.size[0] / img.info["dpi"][0] == pytest.approx(COLUMN_IN, abs=0.02)

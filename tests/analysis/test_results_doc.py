"""docs/: the smallest study's committed material reruns to the committed verdicts, and RESULTS.md quotes them."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.load import load_sweep
from analysis.transfer import analyze

DOCS = Path(__file__).resolve().parents[2] / "docs"
def _label(group: dict) -> tuple[str, str]:
    return str(group["algorithm"]), str(group["parametrization"])


@pytest.mark.parametrize("study", ["paper_mlp_cpu", "paper_cnn_cpu"])
def test_rerun_of_the_committed_trials_gives_the_committed_verdicts(tmp_path, study):
    """The analysis from docs/<study>/{sweep.yaml,trials.parquet,history.parquet} alone."""
    work = tmp_path / study
    work.mkdir()
    for name in ("sweep.yaml", "trials.parquet", "history.parquet"):
        shutil.copy(DOCS / study / name, work / name)
    logs = load_sweep(work)
    result = analyze(logs.trials, metric=logs.objective["metric"], mode=logs.objective["mode"],
                     max_drift=logs.verify["max_drift"], max_regret=logs.verify["max_regret"], n_boot=0)
    summary = json.loads((DOCS / study / "report" / "summary.json").read_text())
    committed = {_label(g): g for g in summary["groups"]}
    rerun = {(str(r.algorithm), str(r.parametrization)): r for r in result.groups.itertuples()}
    assert set(rerun) == set(committed) and len(committed) == 6
    for key, g in committed.items():
        r = rerun[key]
        assert r.verdict == g["verdict"], key
        assert r.drift_exponent == pytest.approx(g["drift_exponent"], abs=1e-9), key
        regret = float(g["max_regret"]) if g["max_regret"] is not None else np.nan
        assert (np.isnan(r.max_regret) and np.isnan(regret)) or r.max_regret == pytest.approx(regret, abs=1e-9), key


@pytest.mark.parametrize("study", ["paper_mlp_cpu", "paper_cnn_cpu"])
def test_results_md_quotes_the_committed_verdicts(study):
    """Every group's row in RESULTS.md's verdict table of the study has summary.json's verdict and drift."""
    text = (DOCS / "RESULTS.md").read_text()
    section = text.split(f"<!-- {study} verdicts -->")[1].split("<!-- end -->")[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] in ("bp", "pc", "tp"):
            rows[cells[0], cells[1]] = cells
    groups = json.loads((DOCS / study / "report" / "summary.json").read_text())["groups"]
    assert len(rows) == len(groups) == 6
    for g in groups:
        cells = rows[_label(g)]
        assert g["verdict"] in cells, (g, cells)
        drift = float(re.match(r"\s*([-+]?[0-9.]+)", cells[2].replace("−", "-")).group(1))  # "k [lo, hi]"
        assert drift == pytest.approx(g["drift_exponent"], abs=0.006), (g, cells)


def test_results_md_quotes_the_pc_steps_verdicts():
    """The PC study's table in RESULTS.md: one row per (T, γ̄_L, fixed prediction) with summary.json's verdict."""
    summary = json.loads((DOCS / "paper_pc_steps_cpu" / "report" / "summary.json").read_text())
    section = (DOCS / "RESULTS.md").read_text().split("<!-- paper_pc_steps_cpu verdicts -->")[1].split("<!-- end -->")[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].isdigit():
            rows[int(cells[0]), float(cells[1]), cells[2] == "True"] = cells
    assert len(rows) == len(summary["groups"]) == 16
    for g in summary["groups"]:
        cells = rows[int(g["inference_steps"]), float(g["gamma_bar_L"]), bool(g["fixed_prediction"])]
        assert cells[6] == g["verdict"], (g, cells)
        drift = float(re.match(r"\s*([-+]?[0-9.]+)", cells[3]).group(1))
        assert drift == pytest.approx(g["drift_exponent"], abs=0.0006), (g, cells)


@pytest.mark.parametrize("study", ["paper_mlp_cpu", "paper_pc_steps_cpu", "paper_cnn_cpu"])
def test_committed_trials_are_the_search_space_files_trials(study):
    """docs/<study>/trials.parquet holds exactly the trials search_spaces/<study>.yaml defines (same ids)."""
    from orchestrator.config import load_sweep as load_space

    trials = pd.read_parquet(DOCS / study / "trials.parquet")
    ids = {t.trial_id for t in load_space(DOCS.parent / "search_spaces" / f"{study}.yaml").trials}
    assert set(trials.trial_id) == ids and len(trials) == len(ids)
    assert (trials.status != "failed").all()

"""docs/: every committed study reruns to its committed verdicts and intervals, and RESULTS.md quotes them."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.load import load_sweep
from analysis.results_doc import render
from analysis.transfer import analyze_logs

DOCS = Path(__file__).resolve().parents[2] / "docs"
STUDIES = sorted(p.parent.parent.name for p in DOCS.glob("*/report/summary.json"))


def _key(group: dict, keys: list[str]) -> tuple[str, ...]:
    return tuple(str(group[k]) for k in keys)


@pytest.mark.parametrize("study", STUDIES)
def test_rerun_of_the_committed_trials_gives_the_committed_verdicts(tmp_path, study):
    """The analysis from docs/<study>/{sweep.yaml,trials.parquet,history.parquet} alone."""
    work = tmp_path / study
    work.mkdir()
    for name in ("sweep.yaml", "trials.parquet", "history.parquet", "base_lr.json"):
        if (DOCS / study / name).exists():  # base_lr.json marks a verify (its seed schedule sets the level)
            shutil.copy(DOCS / study / name, work / name)
    logs = load_sweep(work)
    result = analyze_logs(logs)
    summary = json.loads((DOCS / study / "report" / "summary.json").read_text())
    keys = summary["group_keys"]
    committed = {_key(g, keys): g for g in summary["groups"]}
    rerun = {_key(r, keys): r for r in result.groups.to_dict("records")}
    assert set(rerun) == set(committed) and committed
    for key, g in committed.items():
        r = rerun[key]
        assert r["verdict"] == g["verdict"], key
        for col in ("drift_exponent", "drift_lo", "drift_hi", "max_regret", "regret_lo", "regret_hi"):
            want = np.nan if g[col] is None else float(g[col])
            assert (np.isnan(r[col]) and np.isnan(want)) or r[col] == pytest.approx(want, abs=1e-9), (key, col)


def test_results_md_is_what_the_script_writes_from_the_committed_summaries():
    """Every verdict table and the transfer claims table of RESULTS.md (python -m analysis.results_doc)."""
    text = (DOCS / "RESULTS.md").read_text()
    for study in STUDIES:
        assert f"<!-- {study} verdicts -->" in text, f"RESULTS.md has no verdict table for {study}"
    assert "<!-- claims -->" in text
    assert render(DOCS) == text, "RESULTS.md differs from `python -m analysis.results_doc`: rerun it"


@pytest.mark.parametrize("study", ["paper_mlp_cpu", "paper_pc_steps_cpu", "paper_cnn_cpu"])
def test_committed_trials_are_the_search_space_files_trials(study):
    """docs/<study>/trials.parquet holds exactly the trials search_spaces/<study>.yaml defines (same ids).
    (The verify studies, whose learning rates follow tune-base and the refinement, are checked by the rerun.)"""
    from orchestrator.spec.config import load_sweep as load_space

    trials = pd.read_parquet(DOCS / study / "trials.parquet")
    ids = {t.trial_id for t in load_space(DOCS.parent / "search_spaces" / f"{study}.yaml").trials}
    assert set(trials.trial_id) == ids and len(trials) == len(ids)
    assert (trials.status != "failed").all()

"""docs/: every committed study reruns to its committed verdicts and intervals, and RESULTS.md quotes them."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.load import load_sweep
from analysis.transfer import analyze_logs

DOCS = Path(__file__).resolve().parents[2] / "docs"
STUDIES = sorted(p.parent.parent.name for p in DOCS.glob("*/report/summary.json"))
N_BOOT = 200  # as `mutransfer analyze` and `verify` (default --bootstrap), so the intervals rerun exactly


def _key(group: dict, keys: list[str]) -> tuple[str, ...]:
    return tuple(str(group[k]) for k in keys)


@pytest.mark.parametrize("study", STUDIES)
def test_rerun_of_the_committed_trials_gives_the_committed_verdicts(tmp_path, study):
    """The analysis from docs/<study>/{sweep.yaml,trials.parquet,history.parquet} alone."""
    work = tmp_path / study
    work.mkdir()
    for name in ("sweep.yaml", "trials.parquet", "history.parquet"):
        shutil.copy(DOCS / study / name, work / name)
    logs = load_sweep(work)
    result = analyze_logs(logs, N_BOOT)
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


@pytest.mark.parametrize("study", STUDIES)
def test_results_md_quotes_the_committed_verdicts(study):
    """Every group's row in RESULTS.md's verdict table of the study has summary.json's keys, drift and verdict."""
    summary = json.loads((DOCS / study / "report" / "summary.json").read_text())
    keys = summary["group_keys"]
    text = (DOCS / "RESULTS.md").read_text()
    assert f"<!-- {study} verdicts -->" in text, f"RESULTS.md has no verdict table for {study}"
    section = text.split(f"<!-- {study} verdicts -->")[1].split("<!-- end -->")[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(keys) + 6 and cells[0] != keys[0] and not cells[0].startswith("-"):
            rows[tuple(cells[: len(keys)])] = cells
    assert len(rows) == len(summary["groups"])
    for g in summary["groups"]:
        cells = rows[_key(g, keys)]
        assert cells[-1] == g["verdict"], (g, cells)
        drift = float(re.match(r"\s*([-+]?[0-9.]+)", cells[len(keys)].replace("−", "-")).group(1))
        assert drift == pytest.approx(g["drift_exponent"], abs=0.0006), (g, cells)
        assert cells[-2] == str(g["n_seeds"]), (g, cells)


@pytest.mark.parametrize("study", ["paper_mlp_cpu", "paper_pc_steps_cpu", "paper_cnn_cpu"])
def test_committed_trials_are_the_search_space_files_trials(study):
    """docs/<study>/trials.parquet holds exactly the trials search_spaces/<study>.yaml defines (same ids).
    (The verify studies, whose learning rates follow tune-base and the refinement, are checked by the rerun.)"""
    from orchestrator.config import load_sweep as load_space

    trials = pd.read_parquet(DOCS / study / "trials.parquet")
    ids = {t.trial_id for t in load_space(DOCS.parent / "search_spaces" / f"{study}.yaml").trials}
    assert set(trials.trial_id) == ids and len(trials) == len(ids)
    assert (trials.status != "failed").all()

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


def test_a_crossed_study_gets_a_claims_row_per_loss_with_every_length_it_reaches(tmp_path):
    """The demo (cross-entropy, 93 updates) committed as if it were a crossed study: its row answers at the
    one length it reaches (100 is within 25 % of 93; 300 and 1000 are not), from the same verdicts as
    its summary.json, and the crossed block is analysis.crossed's table."""
    from analysis.crossed import crossed, crossed_markdown
    from analysis.results_doc import claims_block, crossed_block, crossed_table

    docs = tmp_path / "docs"
    shutil.copytree(DOCS / "demo_cpu", docs / "crossed_bptp_ce")
    table = crossed_table(docs)
    assert sorted(table.target_steps.unique()) == [100.0]
    assert crossed_block(table) == crossed_markdown(crossed([docs / "crossed_bptp_ce"], (100,), over_time=False)[0])
    summary = json.loads((DOCS / "demo_cpu" / "report" / "summary.json").read_text())
    mup = [g for g in summary["groups"] if g["parametrization"] == "mup"]
    row = claims_block(DOCS, table).splitlines()[2]
    assert row.startswith("| μP transfers where SP does not, as training gets longer (cross-entropy;")
    n_transfers = sum(g["verdict"] == "transfers" for g in mup)
    assert f"at 93 updates: **{'yes' if n_transfers == len(mup) else 'partly'}**" in row
    assert f"μP `transfers` in {n_transfers} of {len(mup)} groups" in row
    assert crossed_block(None) == "(no crossed study is committed yet)\n"


def test_the_crossed_table_gives_regret_in_per_cent_and_spells_out_infinity():
    from analysis.crossed import _interval

    assert _interval(-0.051, -0.12, 0.03) == "−0.05 [−0.12, +0.03]"
    assert _interval(0.07, -0.01, float("inf"), percent=True) == "+7.0 [−1.0, ∞] %"
    assert _interval(float("nan"), 0.0, 0.0) == "n/a [+0.00, +0.00]"


def test_the_committed_crossed_table_is_what_the_committed_studies_give():
    """docs/crossed/ (python -m analysis.crossed) holds the table the committed crossed studies give now,
    and exists as soon as one crossed study is committed (its figure, k_against_length.png, is drawn from
    the same run)."""
    from analysis.crossed import crossed_markdown
    from analysis.results_doc import CROSSED_STUDIES, crossed_table

    committed = [s for s in CROSSED_STUDIES if (DOCS / s / "trials.parquet").exists()]
    out = DOCS / "crossed"
    assert bool(committed) == (out / "crossed.parquet").exists(), "rerun python -m analysis.crossed (STUDIES_PLAN.md)"
    if not committed:
        return
    table = crossed_table(DOCS)
    saved = pd.read_parquet(out / "crossed.parquet")
    assert sorted(saved.study.unique()) == sorted(table.study.unique())
    cols = ["drift_exponent", "drift_lo", "drift_hi", "max_regret"]
    np.testing.assert_allclose(saved[cols].to_numpy(float), table[cols].to_numpy(float), atol=1e-9)
    assert list(saved.verdict) == list(table.verdict)
    assert (out / "crossed.md").read_text() == crossed_markdown(table)
    assert (out / "k_against_length.png").stat().st_size > 10_000


def test_the_accuracy_block_takes_each_seeds_best_lr_and_the_median_over_seeds():
    from analysis.results_doc import accuracy_block

    rows = [
        # seed 0: best 0.6 at width 64; seed 1: best 0.4; seed 2: 0.5 (a diverged 0.9 does not count)
        *({"algorithm": "tp", "width": 64, "seed": 0, "lr": lr, "status": "ok", "final_test_acc": a}
          for lr, a in ((0.1, 0.3), (0.2, 0.6))),
        {"algorithm": "tp", "width": 64, "seed": 1, "lr": 0.1, "status": "ok", "final_test_acc": 0.4},
        {"algorithm": "tp", "width": 64, "seed": 2, "lr": 0.1, "status": "ok", "final_test_acc": 0.5},
        {"algorithm": "tp", "width": 64, "seed": 2, "lr": 0.4, "status": "diverged", "final_test_acc": 0.9},
        {"algorithm": "bp", "width": 128, "seed": 0, "lr": 0.1, "status": "ok", "final_test_acc": 0.7},
    ]  # fmt: skip
    text = accuracy_block(pd.DataFrame(rows), ["algorithm"])
    assert text.splitlines() == [
        "| algorithm | width 64 | width 128 |",
        "|---|---|---|",
        "| bp | – | 0.70 [0.70, 0.70] |",
        "| tp | 0.50 [0.40, 0.60] | – |",
    ]


def test_the_steps_block_gives_each_group_at_each_length():
    from analysis.results_doc import steps_block

    row = {"algorithm": "tp", "parametrization": "mup", "drift_lo": -0.1, "drift_hi": 0.3, "regret_lo": 0.0}
    rows = [
        {**row, "target_steps": 300.0, "sgd_steps": 300.0, "drift_exponent": 0.1, "max_regret": 0.02,
         "regret_hi": float("inf"), "edge_limited_widths": "", "verdict": "inconclusive"},
        {**row, "target_steps": 100.0, "sgd_steps": 100.0, "drift_exponent": -0.02, "max_regret": 0.01,
         "regret_hi": 0.04, "edge_limited_widths": "64,128", "verdict": "transfers"},
    ]  # fmt: skip
    lines = steps_block(pd.DataFrame(rows), ["algorithm", "parametrization"]).splitlines()
    assert lines[2] == "| tp | mup | 100 | −0.02 [−0.10, +0.30] | +1.0 [+0.0, +4.0] % | 64, 128 | `transfers` |"
    assert lines[3] == "| tp | mup | 300 | +0.10 [−0.10, +0.30] | +2.0 [+0.0, ∞] % | – | `inconclusive` |"

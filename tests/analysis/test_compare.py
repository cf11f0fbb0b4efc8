"""analysis.compare: two committed studies (docs/paper_mlp_pool_cpu, 2 epochs, and docs/paper_mlp_pool_e10_cpu,
10 epochs, otherwise the same sweep.yaml) side by side: one row per sweep and group with each sweep's own
summary, the differing keys named, shared trial ids counted and never merged."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.compare import (
    comparison_table,
    display_table,
    labels,
    overlap_text,
    overlaps,
    setup_differences,
    sweep_analysis,
    verdict_changes,
)
from analysis.load import load_sweep
from analysis.transfer import analyze_logs

DOCS = Path(__file__).resolve().parents[2] / "docs"
STUDIES = ("paper_mlp_pool_cpu", "paper_mlp_pool_e10_cpu")


@pytest.fixture(scope="module")
def sweeps():
    """The two studies, each analysed on its own (its own objective and thresholds)."""
    out = []
    for study in STUDIES:
        logs = load_sweep(DOCS / study)
        out.append(sweep_analysis(DOCS / study, logs, analyze_logs(logs)))
    return out


def _num(v) -> float:
    return np.nan if v is None else float(v)


def test_one_row_per_sweep_and_group_equal_to_each_sweeps_committed_summary(sweeps):
    table = comparison_table(sweeps)
    summaries = {s: json.loads((DOCS / s / "report" / "summary.json").read_text()) for s in STUDIES}
    assert len(table) == sum(len(v["groups"]) for v in summaries.values()) == 12
    assert not table.duplicated(["sweep", "algorithm", "parametrization", "inference_steps"]).any()
    for study, summary in summaries.items():
        keys = summary["group_keys"]
        for g in summary["groups"]:
            sel = (table.sweep == study) & np.logical_and.reduce([table[k].astype(str) == str(g[k]) for k in keys])
            assert sel.sum() == 1, (study, g)
            row = table[sel].iloc[0]
            assert row.verdict == g["verdict"] and int(row.n_seeds) == g["n_seeds"], (study, g)
            for col in ("drift_exponent", "drift_lo", "drift_hi", "max_regret", "regret_lo", "regret_hi", "level"):
                want, got = _num(g[col]), float(row[col])
                assert (np.isnan(want) and np.isnan(got)) or got == pytest.approx(want, abs=1e-12), (study, g, col)
    # side by side: each group's rows follow each other, the sweeps in the order given
    assert list(table.sweep[:2]) == list(STUDIES) and table.group[0] == table.group[1] == "BP μP"


def test_the_differing_keys_are_named_with_each_sweeps_value(sweeps):
    diffs = setup_differences(sweeps)
    assert diffs.to_dict("records") == [
        {"key": "train.epochs", "kind": "setup", "paper_mlp_pool_cpu": "2", "paper_mlp_pool_e10_cpu": "10"}
    ]


def test_setup_differences_mark_run_only_keys_and_absent_ones(sweeps):
    a, b = sweeps
    a = replace(a, cfg={**a.cfg, "resources": {"cpu": 2.0, "gpu": 0.0}, "trainer": {**a.cfg["trainer"], "loss": "ce"}})
    b = replace(b, cfg={k: v for k, v in b.cfg.items() if k != "search"})
    diffs = setup_differences([a, b]).set_index("key")
    assert diffs.loc["trainer.loss"].tolist() == ["setup", "ce", "mse"]
    assert diffs.loc["search.trials"].tolist() == ["setup", "8", "–"]
    assert diffs.loc["resources.cpu"].tolist() == ["run only", "2.0", "1.0"]
    assert list(diffs.kind) == sorted(diffs.kind, key=lambda k: k != "setup")  # setup keys first


def test_shared_trial_ids_are_counted_not_merged(sweeps):
    a, b = sweeps
    assert overlaps(sweeps) == [] and "share no trial id" in overlap_text(sweeps)
    shared = a.logs.trials.head(7)
    b2 = replace(b, logs=replace(b.logs, trials=pd.concat([b.logs.trials, shared], ignore_index=True)))
    assert overlaps([a, b2]) == [("paper_mlp_pool_cpu", "paper_mlp_pool_e10_cpu", 7)]
    text = overlap_text([a, b2])
    assert "overlap" in text and "share 7 trial ids" in text and "not merged" in text
    # the table is each sweep's own analysis: the shared trials change no row of the other sweep
    assert comparison_table([a, b2]).equals(comparison_table(sweeps))


def test_verdict_changes_and_display(sweeps):
    table = comparison_table(sweeps)
    changes = verdict_changes(table)
    for line in changes:
        group = line.split(":")[0]
        rows = table[table.group == group]
        assert rows.verdict.nunique() > 1 and all(f"{v} ({s})" in line for s, v in zip(rows.sweep, rows.verdict))
    assert len(changes) == sum(table.groupby("group").verdict.nunique() > 1)
    shown = display_table(table)
    assert list(shown.columns[:2]) == ["group", "sweep"] and shown.columns[-1] == "verdict"
    assert "metric" not in shown.columns  # both sweeps judge final_train_loss
    other = table.assign(metric=np.where(table.sweep == STUDIES[0], "final_train_loss", "final_test_loss"))
    assert "metric" in display_table(other).columns


def test_labels_are_names_unless_two_sweeps_share_one():
    assert labels(["a", "b"], [Path("x/a"), Path("y/b")]) == ["a", "b"]
    assert labels(["a", "a", "b"], [Path("x/a"), Path("y/a"), Path("b")]) == ["x/a", "y/a", "b"]


def test_an_empty_list_is_no_difference_and_the_figure_colours_groups_not_sweeps(sweeps):
    from analysis.compare_plots import colour_keys, colour_label, group_colours, sweep_styles

    a, b = sweeps
    assert setup_differences([replace(a, cfg={**a.cfg, "plugins": []}), b]).key.tolist() == ["train.epochs"]
    # T=20 is fixed in each sweep: the colour is the parametrization, the same in both sweeps and every panel
    keys = colour_keys(a.result)
    labs = {colour_label(g, keys) for _, g in a.result.groups.iterrows()}
    assert keys == ["parametrization"] and labs == {"μP", "SP"}
    assert group_colours(["μP", "SP"]) == {"μP": "tab:blue", "SP": "tab:orange"}
    # a key that varies inside a sweep (depth) names the colour; each sweep has its own marker and line
    g = a.result.groups.assign(depth=[3, 5] * (len(a.result.groups) // 2))
    deep = replace(a.result, groups=g, keys=[*a.result.keys, "depth"])
    assert colour_keys(deep) == ["parametrization", "depth"]
    assert colour_label(g.iloc[0], colour_keys(deep)) == "μP depth=3"
    assert len(set(group_colours([f"c{i}" for i in range(12)]).values())) == 12
    assert len(set(sweep_styles(4))) == 4

"""The plan's priors (orchestrator/engine/priors.py): measured on the committed verify studies, not typed."""

from pathlib import Path

import pandas as pd
import pytest

from orchestrator.engine import priors

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_the_constants_are_the_medians_of_the_committed_verify_studies():
    extra, spend, studies = priors.derive(DOCS)
    assert len(studies) >= 11  # every committed verify study counts (docs/*/ with trials, sweep, base_lr.json)
    assert priors.REFINE_EXTRA == pytest.approx(extra, abs=0.05)
    assert priors.SPEND == pytest.approx(spend, abs=0.01)


def test_study_spend_counts_points_refinement_and_the_diverged_share(tmp_path):
    """Two points (seeds 0 and 1) x a 3-lr bracket plus 2 refinement trials; one 1 s trial of 2 s ones diverged."""
    rows = []
    for seed, lrs in ((0, [0.5, 1, 2, 0.7, 1.4]), (1, [0.5, 1, 2])):
        for lr in lrs:
            diverged = seed == 1 and lr == 2
            rows.append(
                {"trial_id": f"{seed}-{lr}", "algorithm": "bp", "width": 64, "seed": seed, "lr": lr,
                 "status": "diverged" if diverged else "ok", "wall_s": 1.0 if diverged else 2.0}
            )  # fmt: skip
    pd.DataFrame(rows).to_parquet(tmp_path / "trials.parquet")
    (tmp_path / "sweep.yaml").write_text("name: s\nverify: {bracket: [-1, 0, 1], resolution: 0.5}\n")
    s = priors.study_spend(tmp_path)
    assert (s.points, s.trials, s.bracket, s.halvings) == (2, 8, 3, 1)
    assert s.refine_per_point == pytest.approx(1.0) and s.refine_extra == pytest.approx(-1.0)
    assert s.spend == pytest.approx(15.0 / 16.0)  # 7 x 2 s + 1 s against 8 x 2 s


def test_halvings_from_an_octave():
    assert [priors.halvings(r) for r in (1.0, 0.5, 0.25, 0.3)] == [0, 1, 2, 2]


def test_the_overhead_priors_are_the_medians_of_the_committed_studies_with_trial_times():
    per_trial, gap, studies = priors.derive_overheads(DOCS)
    assert len(studies) >= 6 and all(o.slots == 2 for o in studies)  # every one ran on the 2-CPU machine
    assert priors.PER_TRIAL_S == pytest.approx(per_trial, abs=0.01)
    assert priors.ROUND_GAP_S == pytest.approx(gap, abs=0.2)


def test_study_overheads_reads_slots_the_per_trial_overhead_and_the_gaps(tmp_path):
    """Two slots: trials of 1 s starting 0.5 s apart after each other's end; one 5 s gap with nothing running."""
    rows = [
        {"trial_id": "a", "wall_s": 1.0, "started_at": 0.0, "finished_at": 1.0},
        {"trial_id": "b", "wall_s": 1.0, "started_at": 0.5, "finished_at": 1.5},
        {"trial_id": "c", "wall_s": 1.0, "started_at": 6.5, "finished_at": 7.5},
    ]
    (tmp_path / "s").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "s" / "trials.parquet")
    o = priors.study_overheads(tmp_path / "s")
    assert (o.slots, o.gaps) == (2, (5.0,))
    assert o.per_trial_s == pytest.approx((2 * (7.5 - 5.0) - 3.0) / 3)  # busy 2.5 s on 2 slots, 3 s trained

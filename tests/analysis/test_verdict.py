"""analysis.verdict and the seed-level analysis: planted tables with known answers.

A planted group's optimum moves as width^k; the loss is a parabola in log2 η with per-seed noise,
and training diverges ``margin`` octaves above the optimum (analysis.planted).
"""

import numpy as np
import pandas as pd
import pytest

from analysis.planted import planted_trials
from analysis.transfer import analyze
from analysis.verdict import apply_controls, verdict

QUARTER = tuple(np.arange(-8.0, 1.01, 0.25))


@pytest.mark.parametrize("k", [0.0, -0.5, -1.0])
def test_an_interior_optimum_moving_as_width_to_the_k_is_recovered_at_quarter_octave_spacing(k):
    trials, _ = planted_trials(
        k,
        widths=(64, 128, 256, 512),
        log2_lrs=QUARTER,
        seeds=(0, 1, 2),
        noise=0.005,
        log2_lr0=-3.3,
        rng_seed=int(-4 * k) + 3,
    )
    res = analyze(trials)
    g = res.groups.iloc[0]
    assert g.drift_exponent == pytest.approx(k, abs=0.05)
    assert g.drift_lo <= k + 0.05 and g.drift_hi >= k - 0.05
    assert g.n_seeds == 3 and g.edge_limited_widths == ""
    pw = res.per_width
    assert (pw.spacing == 0.25).all() and pw.refined.all() and not pw.edge_limited.any()
    # the edge is planted 2.5 octaves above the optimum: η_max moves with it, to within a grid step
    assert g.edge_exponent == pytest.approx(k, abs=0.1)
    assert g.verdict == ("drifts" if k else "inconclusive")  # μP without an SP control is never 'transfers'


def test_an_optimum_pinned_to_the_diverging_edge_is_flagged_edge_limited():
    # the loss keeps falling up to the edge: margin 0.1 octave puts divergence right above the best point
    trials, _ = planted_trials(0.0, widths=(64, 128, 256), log2_lrs=QUARTER, margin=0.1, noise=0.0)
    res = analyze(trials)
    assert res.per_width.edge_limited.all() and (res.per_width.n_edge_limited == 3).all()
    assert res.groups.iloc[0].edge_limited_widths == "64,128,256"
    assert any("edge-limited" in n for n in res.notes)
    # the same optimum with room above it is not
    free = analyze(planted_trials(0.0, widths=(64, 128, 256), log2_lrs=QUARTER, margin=2.0, noise=0.0)[0])
    assert not free.per_width.edge_limited.any()


def _pair(k_mup, k_sp, **kw):
    mup, _ = planted_trials(
        k_mup, parametrization="mup", widths=(64, 128, 256, 512), log2_lrs=QUARTER, rng_seed=1, **kw
    )
    sp, _ = planted_trials(k_sp, parametrization="sp", widths=(64, 128, 256, 512), log2_lrs=QUARTER, rng_seed=2, **kw)
    return analyze(pd.concat([mup, sp])).groups.set_index("parametrization")


def test_mup_transfers_only_when_its_sp_control_drifts():
    g = _pair(0.0, -1.0, noise=0.005)
    assert g.loc["sp", "verdict"] == "drifts"
    assert g.loc["mup", "verdict"] == "transfers" and g.loc["mup", "control_verdict"] == "drifts"
    weak = _pair(0.0, 0.0, noise=0.005)  # a setup where SP does not drift either
    assert weak.loc["sp", "verdict"] != "drifts"
    assert weak.loc["mup", "verdict"] == "inconclusive"
    assert "cannot tell transfer from drift" in weak.loc["mup", "verdict_reason"]


def test_one_noisy_seed_with_wide_intervals_is_inconclusive_never_transfers():
    mup, _ = planted_trials(
        0.0, parametrization="mup", widths=(64, 128, 256), log2_lrs=QUARTER, seeds=(0, 1, 2), noise=0.005, rng_seed=5
    )
    # seed 2 is noisy: its losses scatter by 0.05 (the others' by 0.005), so its optimum lands anywhere
    noisy = (mup.seed == 2) & (mup.status == "ok")
    mup.loc[noisy, "final_train_loss"] += np.random.default_rng(5).normal(0, 0.05, noisy.sum())
    sp, _ = planted_trials(-1.0, parametrization="sp", widths=(64, 128, 256), log2_lrs=QUARTER, rng_seed=6)
    g = analyze(pd.concat([mup, sp])).groups.set_index("parametrization")
    assert g.loc["sp", "verdict"] == "drifts"
    assert g.loc["mup", "regret_hi"] - g.loc["mup", "regret_lo"] > 0.05
    assert g.loc["mup", "verdict"] == "inconclusive", g.loc["mup", "verdict_reason"]


@pytest.mark.parametrize(
    "args, expected",
    [
        ((0.0, -0.1, 0.1, 0.01, 0.0, 0.02), "transfers"),
        ((0.0, -0.3, 0.1, 0.01, 0.0, 0.02), "inconclusive"),  # k's interval straddles -0.2
        ((-0.5, -0.6, -0.4, 0.01, 0.0, 0.02), "drifts"),  # k's interval outside ±0.2
        ((0.3, 0.25, 0.35, 0.01, 0.0, 0.02), "drifts"),
        ((0.0, -0.1, 0.1, 0.04, 0.03, 0.08), "inconclusive"),  # regret straddles 5 %
        ((0.0, -0.1, 0.1, 0.09, 0.06, 0.12), "drifts"),  # regret's lower bound above 5 %
        ((np.nan, np.nan, np.nan, 0.0, 0.0, 0.0), "inconclusive"),
        ((0.0, -0.1, 0.1, np.nan, np.nan, np.nan), "inconclusive"),
    ],
)
def test_verdict_is_decided_by_the_intervals(args, expected):
    got, reason = verdict(*args, max_drift=0.2, max_regret=0.05)
    assert got == expected, reason


def test_controls_match_on_every_key_but_the_parametrization():
    g = pd.DataFrame(
        [
            {
                "algorithm": "pc",
                "parametrization": "mup",
                "gamma_bar_L": 0.0,
                "verdict": "transfers",
                "verdict_reason": "r",
            },
            {
                "algorithm": "pc",
                "parametrization": "mup",
                "gamma_bar_L": -1.0,
                "verdict": "transfers",
                "verdict_reason": "r",
            },
            {
                "algorithm": "pc",
                "parametrization": "sp",
                "gamma_bar_L": 0.0,
                "verdict": "drifts",
                "verdict_reason": "r",
            },
            {
                "algorithm": "pc",
                "parametrization": "sp",
                "gamma_bar_L": -1.0,
                "verdict": "inconclusive",
                "verdict_reason": "r",
            },
        ]
    )
    out = apply_controls(g, ["algorithm", "parametrization", "gamma_bar_L"])
    assert list(out.verdict) == ["transfers", "inconclusive", "drifts", "inconclusive"]
    assert list(out.control_verdict) == ["drifts", "inconclusive", "", ""]

"""The verdict's error rates on planted sweeps (analysis.calibration): intervals that hold their level,
a regret with a noise floor, censoring instead of +inf, and edge-limited optima never `transfers`.

The coverage tests fail on the percentile bootstrap that resampled each width on its own (measured
on the same planted design, 1000 replicates: 81 % at 3 seeds, 88 % at 5, 90 % at 8; docs/CALIBRATION.md).
"""

import numpy as np
import pandas as pd
import pytest

from analysis.calibration import coverage, planted_noisy_optima
from analysis.curve import optimum
from analysis.planted import planted_trials
from analysis.regret import leave_one_out, seed_regret
from analysis.stats import look_level, mean_interval, seed_schedule, seed_slopes
from analysis.transfer import analyze

REPLICATES = 600


# k = 0.2 sits on the tolerance's edge: the interval must hold it 95 % of the time, and a group
# whose optimum really moves as width^0.2 must almost never be called `transfers` (one-sided: ≤ 2.5 %).
@pytest.mark.parametrize(
    "n_seeds, sigma",
    [(3, 0.1), (5, 0.25), (8, 0.15), ([3, 6, 8], 0.15)],
    ids=["3 seeds", "5 seeds", "8 seeds", "adaptive 3-6-8"],
)
def test_k_interval_holds_its_level_and_a_drift_on_the_bound_is_not_transfers(n_seeds, sigma):
    got = coverage(0.2, n_seeds=n_seeds, sigma=sigma, replicates=REPLICATES, rng_seed=7)
    assert got["k_coverage"] >= 0.93, got
    assert got["transfers"] <= 0.05, got


def test_adaptive_seeding_adds_seeds_only_while_undecided_and_keeps_k_inside_the_tolerance_transferring():
    fixed = coverage(0.0, n_seeds=3, sigma=0.1, replicates=300, rng_seed=3)
    adaptive = coverage(0.0, n_seeds=[3, 6, 8], sigma=0.1, replicates=300, rng_seed=3)
    assert adaptive["k_coverage"] >= 0.93
    assert adaptive["transfers"] > fixed["transfers"] + 0.2  # the added seeds decide what 3 could not
    assert 3 < adaptive["mean_seeds"] < 8  # decided replicates stopped early


def test_seed_slopes_average_each_seeds_own_fit_and_fall_back_to_least_squares_with_one_seed():
    x = np.log2([64, 128, 256, 512])
    y = np.array([0.1, 0.3, 0.2, 0.5])
    k, lo, hi, dof = seed_slopes(y[None, :], x)
    assert k == pytest.approx(np.polyfit(x, y, 1)[0]) and dof == 2 and lo < k < hi
    rows = np.array([y, y + 3.0 + 0.1 * x, y - 2.0 - 0.2 * x])  # a seed's offset is not noise; its slope is
    k3, lo3, hi3, dof3 = seed_slopes(rows, x)
    slopes = [np.polyfit(x, r, 1)[0] for r in rows]
    assert k3 == pytest.approx(np.mean(slopes)) and dof3 == 2
    assert hi3 - k3 == pytest.approx(4.302653 * np.std(slopes, ddof=1) / np.sqrt(3))
    assert np.isnan(seed_slopes(np.array([[1.0, np.nan, np.nan, np.nan]]), x)[0])


def test_k_interval_holds_its_level_when_narrow_widths_scatter_more():
    # seed noise 0.3 octave at width 64 falling to 0.08 at 512: the old bootstrap held the planted k
    # 77 % of the time at 3 seeds, a seed-blocked model with one pooled variance 92 % (docs/CALIBRATION.md)
    got = coverage(0.2, n_seeds=3, sigma=0.0, width_sigma=(0.3, 0.2, 0.12, 0.08), replicates=REPLICATES, rng_seed=9)
    assert got["k_coverage"] >= 0.93 and got["transfers"] <= 0.05, got


def test_mean_interval_and_the_level_of_each_look():
    m, lo, hi = mean_interval(np.array([1.0, 2.0, 3.0]))
    assert m == 2 and hi - m == pytest.approx(4.302653 / np.sqrt(3))
    assert np.isnan(mean_interval(np.array([1.0]))[1])
    assert seed_schedule(3, 8, 3) == [3, 6, 8] and seed_schedule(3, None) == [3] and seed_schedule(3, 3) == [3]
    assert look_level(3) == pytest.approx(1 - 0.05 / 3)


def test_leave_one_out_base():
    assert leave_one_out({0: 1.0, 1: 2.0, 2: 6.0}) == {0: 4.0, 1: 3.5, 2: 1.5}
    assert leave_one_out({0: 1.0}) == {0: 1.0}


def test_a_base_lr_between_a_stable_and_a_diverged_point_is_censored_not_infinite():
    x, loss = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 0.5, np.inf, np.inf])
    opt = optimum(x, loss)
    assert seed_regret(x, loss, opt, 1.5).censored and np.isnan(seed_regret(x, loss, opt, 1.5).value)
    assert seed_regret(x, loss, opt, 2.0).value == np.inf  # measured to diverge there
    assert seed_regret(x, loss, opt, 2.5).value == np.inf  # between two diverged points
    assert np.isnan(seed_regret(x, loss, opt, 3.5).value)  # off the grid: not measurable
    assert seed_regret(x, loss, opt, 0.0).value == pytest.approx(1.0)  # (1 − 0.5) / 0.5


@pytest.mark.parametrize("n_seeds", [3, 8])
def test_seed_noise_at_the_base_width_alone_never_gives_drifts(n_seeds):
    # the optimum does not move; the base width's seeds scatter by 0.4 octave (a regret of 8 % each on
    # average), the others by 0.03: the excess regret's jackknife interval carries the base η*'s error
    trials = planted_noisy_optima(0.0, n_seeds=n_seeds, sigma=0.03, base_sigma=0.4, replicates=200, rng_seed=11)
    v = analyze(trials).groups.own_verdict
    assert (v != "drifts").all(), v.value_counts()


@pytest.mark.parametrize("n_seeds", [8, [3, 6, 8]], ids=["8 seeds", "adaptive 3-6-8"])
def test_a_real_half_octave_shift_at_the_widest_width_drifts_by_regret(n_seeds):
    # k = 0.15 by least squares, inside ±0.2: only the regret (c·0.5² = 12.5 %) can tell
    got = coverage(0.0, n_seeds=n_seeds, sigma=0.05, shift_at_widest=0.5, replicates=200, rng_seed=5)
    assert got["drifts"] >= 0.9 and got["transfers"] == 0, got
    assert got["regret_coverage"] >= 0.93, got


def test_a_regret_on_the_threshold_is_rarely_transfers():
    # a shift of 0.316 octave costs exactly 5 %: `transfers` needs the upper bound below it
    got = coverage(0.0, n_seeds=5, sigma=0.15, shift_at_widest=0.05**0.5 / 0.5**0.5, replicates=400, rng_seed=2)
    assert got["transfers"] <= 0.05 and got["regret_coverage"] >= 0.93, got


def test_an_edge_limited_optimum_is_never_transfers_even_when_k_and_regret_pass():
    widths, grid = (64, 128, 256, 512), tuple(np.arange(-8.0, 1.01, 0.25))
    mup = planted_trials(0.0, widths=widths, log2_lrs=grid, margin=0.1, noise=0.0)[0]
    sp = planted_trials(-1.0, parametrization="sp", widths=widths, log2_lrs=grid, margin=2.0, noise=0.0)[0]
    g = analyze(pd.concat([mup, sp])).groups.set_index("parametrization")
    assert g.loc["sp", "verdict"] == "drifts"
    assert abs(g.loc["mup", "drift_exponent"]) < 0.05 and g.loc["mup", "edge_limited_widths"] == "64,128,256,512"
    assert g.loc["mup", "verdict"] == "inconclusive"
    assert "edge-limited" in g.loc["mup", "verdict_reason"]


def test_the_old_per_width_bootstrap_misses_the_floor_on_the_same_replicates():
    """The first coverage test's 3-seed design, judged by the percentile bootstrap that resampled each
    width's seeds on its own (the analysis before 2026-12-07, re-implemented in analysis.calibration_report)."""
    from analysis.calibration_report import baseline_coverage

    old = {r["method"]: r for r in baseline_coverage(0.2, 3, 0.1, REPLICATES, 7)}["old bootstrap"]
    new = coverage(0.2, n_seeds=3, sigma=0.1, replicates=REPLICATES, rng_seed=7)
    assert old["k_coverage"] < 0.93 <= new["k_coverage"], (old, new)

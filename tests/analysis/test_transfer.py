"""analysis.transfer: diverged = +inf, drift exponent recovery, regret, wider-is-better, verdicts."""

import numpy as np
import pandas as pd
import pytest

from analysis.planted import planted_trials
from analysis.transfer import analyze, tidy


def test_diverged_trials_count_as_inf_even_when_their_logged_loss_is_small():
    trials, _ = planted_trials(0.0, widths=(64, 128), seeds=(0,), noise=0.0)
    honest = analyze(trials).per_width
    lying = trials.copy()
    lying.loc[lying.status == "diverged", "final_train_loss"] = 0.0  # a diverged run must never be "best"
    assert (lying.status == "diverged").sum() > 0
    got = analyze(lying).per_width
    np.testing.assert_allclose(got.lr_star, honest.lr_star)
    assert np.log2(got.lr_star.iloc[0]) == pytest.approx(-3.3, abs=1e-6)


@pytest.mark.parametrize("k", [0.0, -0.5, -1.0])
def test_planted_drift_exponent_is_recovered_with_the_right_verdict(k):
    trials, _ = planted_trials(k, rng_seed=int(-10 * k) + 1)
    res = analyze(trials)
    g = res.groups.iloc[0]
    assert g.drift_exponent == pytest.approx(k, abs=0.05)
    assert g.drift_lo <= g.drift_exponent <= g.drift_hi
    assert g.drift_hi - g.drift_lo < 0.2
    # a μP group without an SP control in the sweep cannot be shown to transfer
    assert g.verdict == ("inconclusive" if k == 0 else "drifts")
    assert k != 0 or "no SP control" in g.verdict_reason
    pw = res.per_width
    # the base width's regret is measured (leave-one-seed-out base η*), its excess over itself is 0
    assert (pw.regret.dropna() >= 0).all() and pw.excess_regret.iloc[0] == 0
    if k == -1.0:  # at 512 the base η* lies between every seed's last stable and first diverged lr
        assert pw.set_index("width").loc[512, "n_censored"] == 3 and np.isnan(pw.regret.iloc[3])
        assert np.isinf(pw.regret.iloc[4])  # at 1024 it lies beyond a measured divergence
    truth = 2.0 ** (-3.3 + k * np.log2(pw.width / 64))
    np.testing.assert_allclose(np.log2(pw.lr_star), np.log2(truth), atol=0.1)
    assert pw.refined.all() and not pw.at_edge.any()
    assert (pw.n_diverged > 0).all()


def test_regret_is_relative_loss_at_base_lr_star():
    # k = -1, η*(64) = 2^-3.3: at width 128 (η* = 2^-4.3) the base η* is one octave too large,
    # L = a + c·1²; the best measured loss is at 2^-4, a + c·0.3²
    trials, _ = planted_trials(-1.0, widths=(64, 128), seeds=(0,), noise=0.0, curvature=0.08)
    pw = analyze(trials).per_width.set_index("width")
    a128 = 0.3 + 0.2 * (64 / 128) ** 0.5
    best = a128 + 0.08 * 0.3**2
    assert pw.loc[128, "best_loss"] == pytest.approx(best, rel=1e-9)
    assert pw.loc[128, "regret"] == pytest.approx((a128 + 0.08 - best) / best, rel=1e-6)


def test_best_loss_is_measured_not_the_parabola_minimum_of_an_asymmetric_basin():
    x = np.arange(-8.0, 1.0)
    loss = np.array([0.62, 0.60, 5.0, 9.0, np.inf, np.inf, np.inf, np.inf, np.inf])  # a cliff after 2^-7
    rows = [
        {
            "trial_id": f"t{i}",
            "algorithm": "bp",
            "parametrization": "sp",
            "inference_steps": 1,
            "width": w,
            "base_width": 64,
            "lr": 2.0**xi,
            "seed": 0,
            "status": "ok" if np.isfinite(li) else "diverged",
            "final_train_loss": li,
        }
        for w in (64, 128)
        for i, (xi, li) in enumerate(zip(x, loss))
    ]
    pw = analyze(pd.DataFrame(rows)).per_width
    assert (pw.best_loss == 0.60).all() and pw.refined.all()
    assert (pw.regret == 0).all()


def test_a_varying_swept_key_is_a_group_key_not_averaged():
    a, _ = planted_trials(0.0, seeds=(0,), extra={"gamma_bar_L": 0.0}, rng_seed=1)
    b, _ = planted_trials(-1.0, seeds=(0,), extra={"gamma_bar_L": -1.0}, rng_seed=2)
    res = analyze(pd.concat([a, b]))
    assert "gamma_bar_L" in res.keys and any("gamma_bar_L" in n for n in res.notes)
    got = res.groups.set_index("gamma_bar_L")
    assert got.loc[0.0, "drift_exponent"] == pytest.approx(0.0, abs=0.05)
    assert got.loc[-1.0, "drift_exponent"] == pytest.approx(-1.0, abs=0.05)


def test_failed_trials_are_dropped_and_mode_max_maximises():
    trials, _ = planted_trials(0.0, widths=(64, 128, 256), seeds=(0,), noise=0.0)
    trials.loc[trials.index[:3], "status"] = "failed"
    table, _, notes = tidy(trials)
    assert len(table) == len(trials) - 3 and any("failed" in n for n in notes)
    acc = analyze(trials, metric="final_test_acc", mode="max").per_width  # acc = 1 − loss
    np.testing.assert_allclose(np.log2(acc.lr_star), -3.3, atol=1e-6)


def test_bad_metric_or_mode_names_the_valid_ones():
    trials, _ = planted_trials(0.0, widths=(64,), seeds=(0,))
    with pytest.raises(ValueError, match="final_train_loss"):
        tidy(trials, metric="train_los")
    with pytest.raises(ValueError, match="min, max"):
        tidy(trials, mode="minimum")


@pytest.mark.parametrize("a0, a_inf, wider_better", [(0.5, 0.3, True), (0.3, 0.5, False)])
def test_wider_is_better_at_fixed_lr(a0, a_inf, wider_better):
    trials, _ = planted_trials(0.0, a0=a0, a_inf=a_inf, seeds=(0,), noise=0.0)
    g = analyze(trials).groups.iloc[0]
    assert g.wider_better_frac == (1.0 if wider_better else 0.0)
    assert g.wider_better_rho == pytest.approx(-1.0 if wider_better else 1.0)

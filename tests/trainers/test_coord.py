"""The coordinate check: μP keeps every layer's change Θ(1) in width; SP's output grows."""

import pytest

from trainers import TrainerConfig, coord_check

WIDTHS = (64, 128, 256, 512, 1024, 2048)


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adam", 0.003)])
def test_bp_mup_slopes_are_flat(optimizer, lr):
    cfg = TrainerConfig(parametrization="mup", optimizer=optimizer, lr=lr, dtype="float64")
    cc = coord_check(cfg, widths=WIDTHS, steps=3)
    assert len(cc.table) == len(WIDTHS) * 3 * 3
    assert cc.slopes.moved.all()
    assert cc.max_abs_slope() < 0.15, cc.slopes


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.1), ("adam", 0.003)])
def test_bp_sp_output_grows_with_width(optimizer, lr):
    cfg = TrainerConfig(parametrization="sp", optimizer=optimizer, lr=lr, dtype="float64")
    cc = coord_check(cfg, widths=WIDTHS, steps=1)
    assert cc.slope("layers.2", 1) > 0.5, cc.slopes


def test_plain_targets_give_the_finite_width_drift():
    """Without equalising the initial error, μP's slopes lean negative (f_0 = Θ(m^-1/2))."""
    cfg = TrainerConfig(parametrization="mup", lr=0.1, dtype="float64")
    plain = coord_check(cfg, widths=WIDTHS, steps=1, equalize_error=False)
    equal = coord_check(cfg, widths=WIDTHS, steps=1)
    for layer in ("layers.0", "layers.1", "layers.2"):
        assert plain.slope(layer, 1) < equal.slope(layer, 1)
    assert plain.max_abs_slope() < 0.4


def test_a_layer_that_does_not_move_is_not_fitted():
    from trainers import fit_slopes
    import pandas as pd

    rows = [{"width": w, "seed": 0, "layer": l, "step": 1, "delta_rms": d, "rms": 1.0}
            for w in (64, 128, 256) for l, d in (("layers.0", 0.0), ("layers.1", w ** 0.5))]
    s = fit_slopes(pd.DataFrame(rows)).set_index("layer")
    assert not s.loc["layers.0", "moved"] and s.loc["layers.0", "slope"] != s.loc["layers.0", "slope"]
    assert s.loc["layers.1", "slope"] == pytest.approx(0.5)


def test_loglog_slope_is_the_exponent_and_skips_points_without_a_logarithm():
    import math

    from trainers import loglog_slope

    widths = [64, 128, 256, 512]
    assert loglog_slope(widths, [w ** -0.5 for w in widths]) == pytest.approx(-0.5)
    assert loglog_slope(widths, [0.0, 2.0, 4.0, 8.0]) == pytest.approx(1.0)  # log2(0) is left out
    assert math.isnan(loglog_slope(widths, [0.0, 0.0, 0.0, 1.0]))

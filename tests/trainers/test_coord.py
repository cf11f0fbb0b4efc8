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
    import pandas as pd

    from trainers import fit_slopes

    rows = [
        {"width": w, "seed": 0, "layer": l, "step": 1, "delta_rms": d, "rms": 1.0}
        for w in (64, 128, 256)
        for l, d in (("layers.0", 0.0), ("layers.1", w**0.5))
    ]
    s = fit_slopes(pd.DataFrame(rows)).set_index("layer")
    assert not s.loc["layers.0", "moved"] and s.loc["layers.0", "slope"] != s.loc["layers.0", "slope"]
    assert s.loc["layers.1", "slope"] == pytest.approx(0.5)


def test_loglog_slope_is_the_exponent_and_skips_points_without_a_logarithm():
    import math

    from trainers import loglog_slope

    widths = [64, 128, 256, 512]
    assert loglog_slope(widths, [w**-0.5 for w in widths]) == pytest.approx(-0.5)
    assert loglog_slope(widths, [0.0, 2.0, 4.0, 8.0]) == pytest.approx(1.0)  # log2(0) is left out
    assert math.isnan(loglog_slope(widths, [0.0, 0.0, 0.0, 1.0]))


# ---- biases: targets with mean 1 give every bias a Θ(1) gradient from step 1 ----------------------
BIAS_WIDTHS = (64, 128, 256, 512, 1024)


def _bias_cfg(algorithm="bp", parametrization="mup", optimizer="sgd", **kw):
    extra = {"inference_steps": 5, "inference_lr": 0.1} if algorithm == "pc" else {}
    return TrainerConfig(
        algorithm=algorithm,
        parametrization=parametrization,
        optimizer=optimizer,
        lr=0.1 if optimizer == "sgd" else 0.003,
        dtype="float64",
        bias=True,
        **extra,
        **kw,
    )


def _input_row_biases(monkeypatch, cfg):
    """Register, in place of cfg's table, the old rule: every bias takes the input row's lr."""
    import dataclasses

    from trainers import _param

    table = _param.resolve_table(cfg)
    old = dataclasses.replace(
        table,
        name=table.name + "+input-row-biases",
        **{r: dataclasses.replace(table.rule(r), bias_lr=None) for r in _param.ROLES},
    )
    key = _param._KEYS.get(cfg.algorithm, _param.default_key)(cfg)
    monkeypatch.setitem(_param._TABLES[cfg.algorithm], key, old)


@pytest.mark.parametrize(
    "algorithm, optimizer, kw",
    [
        ("bp", "sgd", {}),
        ("bp", "adam", {}),
        ("pc", "sgd", {"gamma_bar_L": 0.0}),
        ("pc", "sgd", {"gamma_bar_L": -1.0}),
    ],
)
def test_mup_with_biases_is_flat(algorithm, optimizer, kw):
    """bias: true, targets of mean 1, widths 64–1024 (4 octaves), 2 steps: every layer |slope| < 0.15."""
    cc = coord_check(_bias_cfg(algorithm, optimizer=optimizer, **kw), widths=BIAS_WIDTHS, steps=2, target_mean=1.0)
    assert cc.slopes.moved.all()
    assert cc.max_abs_slope() < 0.15, cc.slopes


@pytest.mark.parametrize("algorithm, kw", [("bp", {}), ("pc", {"gamma_bar_L": -1.0})])
def test_input_row_bias_rule_fails_the_bias_coord_check(monkeypatch, algorithm, kw):
    """Negative control: with the old rule the SGD output bias moves like m, the output's slope > 0.5."""
    cfg = _bias_cfg(algorithm, **kw)
    _input_row_biases(monkeypatch, cfg)
    cc = coord_check(cfg, widths=BIAS_WIDTHS, steps=1, target_mean=1.0)
    assert cc.slope("layers.2", 1) > 0.5, cc.slopes
    assert abs(cc.slope("layers.1", 1)) < 0.15, cc.slopes  # the hidden layers are still μP's


def test_sp_with_biases_output_grows():
    cc = coord_check(_bias_cfg(parametrization="sp"), widths=BIAS_WIDTHS, steps=1, target_mean=1.0)
    assert cc.slope("layers.2", 1) > 0.5, cc.slopes


# ---- depth: the tables are per role, so L = 5 and 8 use the same rows ----------------------------
def _depth_cfg(algorithm, depth, **kw):
    extra = {"target_step": 1.0, "feedback": "linear", "feedback_lr": 0.01} if algorithm == "tp" else {}
    return TrainerConfig(
        algorithm=algorithm, parametrization="mup", lr=0.1, dtype="float64", depth=depth, **extra, **kw
    )


@pytest.mark.parametrize("algorithm", ["bp", "tp"])
def test_depth_five_is_flat(algorithm):
    """L = 5, widths 64–1024, 1 step: |slope| < 0.15 in all 5 layers."""
    cc = coord_check(_depth_cfg(algorithm, 5), widths=WIDTHS[:5], steps=1)
    assert cc.slopes.moved.all() and len(cc.slopes) == 5 and cc.max_abs_slope() < 0.15, cc.slopes


@pytest.mark.slow
@pytest.mark.parametrize(
    "algorithm, depth, kw, widths",
    [
        ("bp", 8, {}, WIDTHS[1:]),
        ("tp", 8, {}, WIDTHS[1:]),
        ("pc", 5, {"inference_steps": 20, "gamma_bar_L": -1.0}, WIDTHS[:5]),
    ],
)
def test_deep_coord_check(algorithm, depth, kw, widths):
    """L = 8 (BP, TP) over 128–2048 and PC at L = 5 with T = 4L over 64–1024, 2 steps: |slope| < 0.15.
    (At L = 8 over 64–1024 BP's largest |slope| is 0.154: the finite-width drift grows with depth.)"""
    cc = coord_check(_depth_cfg(algorithm, depth, **kw), widths=widths, steps=2)
    assert cc.slopes.moved.all() and cc.max_abs_slope() < 0.15, cc.slopes

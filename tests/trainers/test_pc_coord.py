"""Coordinate checks of the PC tables (initial error equalised, float64, 3-layer tanh, d = 32, C = 10)."""

import pytest

from trainers import LayerRule, Table, TrainerConfig, _param, coord_check

WIDTHS = (64, 128, 256, 512, 1024, 2048)


def _cfg(**kw):
    base = dict(algorithm="pc", parametrization="mup", dtype="float64", depth=3, lr=0.1, inference_lr=0.1)
    return TrainerConfig(**{**base, **kw})


def _moving_slopes(cc):
    return cc.slopes[cc.slopes.moved]


# γ̄_L = −1 with T = 20 over 4 octaves: long enough inference that the relaxed hidden errors show the
# output init (the check that catches SP's output init, below); T = 5 over 64–512 let it pass (0.17 < 0.2).
GBAR1_CHECK = dict(widths=WIDTHS[:5], steps=1)


def test_mup_coord_check_small():
    """γ̄_L = −1, T = 20, widths 64–1024, 1 step: every layer moves and |slope| < 0.15 (measured 0.09)."""
    cc = coord_check(_cfg(gamma_bar_L=-1.0, inference_steps=20), **GBAR1_CHECK)
    assert cc.slopes.moved.all()
    assert cc.max_abs_slope() < 0.15, cc.slopes


def test_gbar_minus_one_check_catches_sp_output_init(monkeypatch):
    """~4 s. The γ̄_L = −1 μP table with SP's output init (Var W_L = 1/fan_in): γ_L W_L W_Lᵀ grows like m,
    the relaxed output error shrinks like 1/m and the hidden errors like m^-1/2, so the hidden layers'
    change falls with width (measured: layers.1 slope −0.25) and the check above fails it."""
    import dataclasses

    cfg = _cfg(gamma_bar_L=-1.0, inference_steps=20)
    good = _param.resolve_table(cfg)
    bad = dataclasses.replace(
        good, name=good.name + "+sp-output-init", output=dataclasses.replace(good.output, init_var=0.0)
    )
    monkeypatch.setitem(_param._TABLES["pc"], ("mup", "sgd", -1.0), bad)
    cc = coord_check(cfg, **GBAR1_CHECK)
    assert cc.max_abs_slope() > 0.2, cc.slopes
    assert cc.slope("layers.1", 1) < -0.2, cc.slopes


def test_first_layer_still_at_T1():
    """T = 1, simultaneous inference from the feedforward pass: e_1 stays 0, so W_1 cannot move."""
    cc = coord_check(_cfg(gamma_bar_L=0.0, inference_steps=1), (64, 128), steps=2)
    moved = cc.slopes.groupby("layer").moved.all()
    assert not moved["layers.0"] and moved["layers.1"] and moved["layers.2"]


@pytest.mark.slow
@pytest.mark.parametrize("T", [1, 5, 20])
@pytest.mark.parametrize("gbar", [0.0, -1.0])
def test_mup_coord_check(gbar, T):
    cc = coord_check(_cfg(gamma_bar_L=gbar, inference_steps=T), WIDTHS, steps=3)
    still = set(cc.slopes[~cc.slopes.moved].layer)
    assert still == ({"layers.0"} if T == 1 else set()), still
    assert cc.max_abs_slope() < 0.2, cc.slopes


@pytest.mark.slow
@pytest.mark.parametrize("gbar", [0.0, -1.0])
def test_sp_output_slope_positive(gbar):
    cc = coord_check(_cfg(parametrization="sp", gamma_bar_L=gbar, inference_steps=5), WIDTHS, steps=3)
    out = cc.slopes[cc.slopes.layer == "layers.2"]
    assert (out.slope > 0.5).all(), cc.slopes


def test_sp_output_slope_positive_small():
    cc = coord_check(_cfg(parametrization="sp", inference_steps=5), WIDTHS[:4], steps=1)
    assert cc.slope("layers.2", 1) > 0.5, cc.slopes


@pytest.mark.slow
@pytest.mark.parametrize("T", [1, 5, 20])
def test_negative_control_bp_lrs_with_gamma_L_m(monkeypatch, T):
    """BP's SGD μP learning rates with γ_L = m: every moving layer's slope is clearly positive."""
    bad = Table(
        "pc/mup/sgd/bp-lrs",
        LayerRule(lr=1.0),
        LayerRule(lr=0.0),
        LayerRule(init_var=-1.0, lr=-1.0),
        {"gamma_hidden": 0.0, "gamma_output": 1.0, "inference_lr": 0.0},
    )
    monkeypatch.setitem(_param._TABLES["pc"], ("mup", "sgd", -1.0), bad)
    cc = coord_check(_cfg(gamma_bar_L=-1.0, inference_steps=T), WIDTHS, steps=3)
    moving = _moving_slopes(cc)
    assert len(moving) > 0 and (moving.slope > 0.4).all(), cc.slopes
    assert moving.slope.max() > 0.8, cc.slopes


@pytest.mark.slow
@pytest.mark.parametrize("gbar", [0.0, -1.0])
def test_mup_adam_coord_check(gbar):
    """Adam: BP's Adam μP rows (γ_L drops out of Adam's normalised update)."""
    cc = coord_check(_cfg(optimizer="adam", lr=0.003, gamma_bar_L=gbar, inference_steps=5), WIDTHS, steps=3)
    assert cc.slopes.moved.all() and cc.max_abs_slope() < 0.2, cc.slopes


@pytest.mark.parametrize("gbar", [0.0, -1.0])
def test_single_shot_inference_without_fpa_is_flat_under_mup(gbar):
    """sequential_inference: true (one top-down sweep, step 1/γ_l), moving predictions, widths 64–512:
    |slope| < 0.15 (measured 0.079 at γ̄_L = 0, 0.107 at −1); SP's output slope is > 0.5 (measured 2.7 at −1)."""
    cc = coord_check(_cfg(gamma_bar_L=gbar, sequential_inference=True), WIDTHS[:4], steps=1)
    assert cc.slopes.moved.all() and cc.max_abs_slope() < 0.15, cc.slopes
    sp = coord_check(_cfg(parametrization="sp", gamma_bar_L=gbar, sequential_inference=True), WIDTHS[:4], steps=1)
    assert sp.slope("layers.2", 1) > 0.5, sp.slopes

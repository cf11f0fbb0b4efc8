"""TP's coordinate check: its μP table keeps every layer's change Θ(1); SP's output grows;
BP's μP output init inside TP loses the output's feature-learning term (the negative control)."""

import dataclasses

import pytest

import trainers._param as param
from trainers import TrainerConfig, alignment_exponent, coord_check

WIDTHS = (64, 128, 256, 512, 1024, 2048)


def _cfg(parametrization, feedback, optimizer="sgd"):
    lr, feedback_lr = (0.1, 0.01) if optimizer == "sgd" else (0.003, 0.001)
    return TrainerConfig(
        algorithm="tp",
        parametrization=parametrization,
        optimizer=optimizer,
        lr=lr,
        target_step=1.0,
        feedback=feedback,
        feedback_lr=feedback_lr,
        dtype="float64",
    )


@pytest.mark.slow
@pytest.mark.parametrize("feedback, optimizer", [("linear", "sgd"), ("regression", "sgd"), ("linear", "adam")])
def test_tp_mup_slopes_are_flat(feedback, optimizer):
    """~25 s each on 2 CPUs (6 widths up to 2048, 3 steps, initial error equalised)."""
    cc = coord_check(_cfg("mup", feedback, optimizer), widths=WIDTHS, steps=3)
    assert cc.slopes.moved.all()
    assert cc.max_abs_slope() < 0.15, cc.slopes


@pytest.mark.slow
@pytest.mark.parametrize("feedback, optimizer", [("linear", "sgd"), ("regression", "sgd"), ("linear", "adam")])
def test_tp_sp_output_grows_with_width(feedback, optimizer):
    """~8 s each."""
    cc = coord_check(_cfg("sp", feedback, optimizer), widths=WIDTHS, steps=1)
    assert cc.slope("layers.2", 1) > 0.5, cc.slopes


def test_tp_mup_coord_check_is_flat_over_four_octaves():
    """~4 s: widths 64–1024, two steps, |slope| < 0.15 (measured 0.032); SP's output fails the same check."""
    cc = coord_check(_cfg("mup", "linear"), widths=WIDTHS[:5], steps=2)
    assert len(cc.table) == 5 * 2 * 3 and cc.slopes.moved.all()
    assert cc.max_abs_slope() < 0.15, cc.slopes
    sp = coord_check(_cfg("sp", "linear"), widths=WIDTHS[:5], steps=1)
    assert sp.max_abs_slope() > 0.5, sp.slopes


@pytest.mark.slow
def test_bp_mup_output_init_inside_tp_loses_the_output_feature_term(monkeypatch):
    """~20 s. With W_L ~ N(0, 1/(fan_in·m)) TP's hidden change reaches the output only through
    W_L Δφ, which is a CLT sum: it falls like m^-1/2 and the output's change falls with width
    (only the direct ΔW_L φ term is left). TP's own table (standard W_L) keeps it Θ(1)."""
    tp_mup = param.resolve_table(_cfg("mup", "linear"))
    neg = dataclasses.replace(
        tp_mup, name="tp/mup+bp-output-init", output=dataclasses.replace(tp_mup.output, init_var=-1.0)
    )
    ok = alignment_exponent(_cfg("mup", "linear"), widths=WIDTHS)
    monkeypatch.setitem(param._TABLES["tp"], ("mup", "sgd"), neg)
    assert param.resolve_table(_cfg("mup", "linear")).name == neg.name
    cc = coord_check(_cfg("mup", "linear"), widths=WIDTHS, steps=1)
    bad = alignment_exponent(_cfg("mup", "linear"), widths=WIDTHS)
    assert cc.slope("layers.2", 1) < -0.2, cc.slopes
    assert abs(cc.slope("layers.1", 1)) < 0.15, cc.slopes  # the hidden layers still learn
    assert bad.product_slope < -0.35, bad.table
    assert abs(ok.product_slope) < 0.15, ok.table

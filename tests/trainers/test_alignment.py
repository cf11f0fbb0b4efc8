"""Alignment exponent ω_L: BP's last layer sees its input's change by LLN (ω ≈ 1), TP's by CLT (ω ≈ 1/2)."""

import pytest
import torch

from trainers import TrainerConfig, alignment_exponent, make_teacher_student, make_trainer

WIDTHS = (64, 128, 256, 512, 1024, 2048)


def test_ratio_matches_a_direct_computation():
    cfg = TrainerConfig(algorithm="bp", parametrization="mup", lr=0.1, dtype="float64", depth=4)
    a = alignment_exponent(cfg, widths=(64, 128), layer=2, equalize_error=False)
    data = make_teacher_student(n_train=128, n_test=1, seed=1234)
    tr = make_trainer(cfg.replace(width=128), data.input_dim, data.output_dim)
    x, y = data.x_train, data.y_train
    w = tr.model.layers[2].weight.detach().clone() * tr.model.multipliers[2]
    phi0 = torch.tanh(tr.model.preactivations(x)[1]).detach()
    tr.step(x, y)
    dphi = torch.tanh(tr.model.preactivations(x)[1]).detach() - phi0
    ratio = float((dphi @ w.T).pow(2).mean().sqrt() / (w.pow(2).mean().sqrt() * dphi.pow(2).mean().sqrt()))
    row = a.table.set_index("width").loc[128]
    assert row.ratio == pytest.approx(ratio, rel=1e-10)
    assert a.omega == pytest.approx(float(torch.log2(torch.tensor(ratio / a.table.ratio[0]))), rel=1e-10)


def test_bad_layer_is_refused():
    with pytest.raises(ValueError, match="layer=0"):
        alignment_exponent(TrainerConfig(), widths=(64, 128), layer=0)


@pytest.mark.slow
def test_bp_mup_last_layer_aligns_by_the_law_of_large_numbers():
    """~8 s on 2 CPUs."""
    a = alignment_exponent(TrainerConfig(algorithm="bp", parametrization="mup", lr=0.1, dtype="float64"), widths=WIDTHS)
    assert 0.85 <= a.omega <= 1.15, a.table


@pytest.mark.slow
@pytest.mark.parametrize("feedback", ["linear", "regression"])
def test_tp_mup_last_layer_aligns_by_the_central_limit_theorem(feedback):
    """~8 s each."""
    cfg = TrainerConfig(
        algorithm="tp",
        parametrization="mup",
        lr=0.1,
        target_step=1.0,
        feedback=feedback,
        feedback_lr=0.01,
        dtype="float64",
    )
    a = alignment_exponent(cfg, widths=WIDTHS)
    assert 0.35 <= a.omega <= 0.65, a.table

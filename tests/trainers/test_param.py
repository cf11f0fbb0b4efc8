"""Parametrization tables: μP equals SP at the base width; lookups fail clearly."""

import pytest
import torch

from trainers import TrainerConfig, make_trainer, resolve_table
from trainers._bp import BP_TABLES


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mup_equals_sp_bit_for_bit_at_base_width(optimizer):
    torch.manual_seed(0)
    x, y = torch.randn(16, 20), torch.randint(0, 5, (16,))
    outs = {}
    for par in ("sp", "mup"):
        cfg = TrainerConfig(parametrization=par, optimizer=optimizer, width=64, base_width=64, lr=0.05, seed=7)
        tr = make_trainer(cfg, 20, 5)
        d = tr.update_direction(x, y)
        tr.step(x, y)
        tr.step(x, y)
        outs[par] = (tr.model(x), d, tr.lr_multipliers)
    assert torch.equal(outs["sp"][0], outs["mup"][0])
    for name in outs["sp"][1]:
        assert torch.equal(outs["sp"][1][name], outs["mup"][1][name])
    assert outs["sp"][2] == outs["mup"][2]


def test_mup_differs_from_sp_away_from_base_width():
    sp = make_trainer(TrainerConfig(parametrization="sp", width=256, base_width=64), 20, 5)
    mup = make_trainer(TrainerConfig(parametrization="mup", width=256, base_width=64), 20, 5)
    # SGD μP: input lr η·m, output lr η/m, output init var 1/(fan_in·m)
    assert mup.lr_multipliers == {"layers.0.weight": 4.0, "layers.1.weight": 1.0, "layers.2.weight": 0.25}
    assert set(sp.lr_multipliers.values()) == {1.0}
    ratio = mup.model.layers[2].weight.detach().std() / sp.model.layers[2].weight.detach().std()
    assert abs(float(ratio) - 0.5) < 0.05


def test_adam_mup_table():
    t = BP_TABLES[("mup", "adam")]
    assert (t.input.lr, t.hidden.lr, t.output.lr, t.output.init_var) == (0.0, -1.0, -1.0, -1.0)


def test_bad_options_name_the_valid_ones():
    with pytest.raises(ValueError, match="parametrization='ntk' is not one of sp, mup"):
        TrainerConfig(parametrization="ntk")
    with pytest.raises(ValueError, match="width"):
        TrainerConfig(width=0)
    with pytest.raises(ValueError, match="lr"):
        TrainerConfig(lr=-1.0)
    assert resolve_table(TrainerConfig()).name == "bp/mup/sgd"


@pytest.mark.parametrize(
    "algorithm, extra, expected",
    [
        ("bp", {}, {"layers.0.bias": 4.0, "layers.1.bias": 4.0, "layers.2.bias": 1.0}),
        ("pc", {"gamma_bar_L": 0.0}, {"layers.0.bias": 4.0, "layers.1.bias": 4.0, "layers.2.bias": 1.0}),
        ("pc", {"gamma_bar_L": -1.0}, {"layers.0.bias": 1.0, "layers.1.bias": 1.0, "layers.2.bias": 0.25}),
        ("tp", {}, {"layers.0.bias": 1.0, "layers.1.bias": 1.0, "layers.2.bias": 1.0}),
    ],
)
def test_sgd_mup_bias_lrs_follow_fan_out(algorithm, extra, expected):
    """Tensor Programs V: an SGD bias lr ∝ fan-out, so the output bias is one power of m below the others."""
    cfg = TrainerConfig(algorithm=algorithm, parametrization="mup", width=256, base_width=64, bias=True, **extra)
    lrs = make_trainer(cfg, 20, 5).lr_multipliers
    assert {k: v for k, v in lrs.items() if k.endswith("bias")} == expected


@pytest.mark.parametrize("algorithm", ["bp", "pc", "tp"])
def test_adam_mup_bias_lrs_are_m0(algorithm):
    cfg = TrainerConfig(algorithm=algorithm, parametrization="mup", optimizer="adam", width=256, bias=True)
    lrs = make_trainer(cfg, 20, 5).lr_multipliers
    assert {v for k, v in lrs.items() if k.endswith("bias")} == {1.0}


def test_a_table_without_bias_rows_keeps_the_input_row_rule():
    """Tables written before bias rows existed (bias_lr None) still resolve: every bias takes the input row."""
    from trainers import LayerRule, Table

    old = Table("old", LayerRule(lr=1.0), LayerRule(lr=0.0), LayerRule(lr=-1.0))
    assert [old.bias_lr(r) for r in ("input", "hidden", "output")] == [1.0, 1.0, 1.0]
    assert Table("new", old.input, old.hidden, LayerRule(lr=-1.0, bias_lr=0.0)).bias_lr("output") == 0.0

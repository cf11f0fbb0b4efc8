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

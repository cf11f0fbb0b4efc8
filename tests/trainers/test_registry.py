"""The algorithm and dataset registries: what a plugin registers is what configs accept."""

from __future__ import annotations

import pytest

from trainers import CHOICES, TRAINERS, TrainerConfig, make_trainer, register_table, register_trainer
from trainers._bp import BPTrainer
from trainers._param import BP_TABLES


@pytest.fixture
def scratch_algorithm():
    """A BP subclass registered as ``scratch`` for one test, then removed."""
    register_trainer("scratch")(type("ScratchTrainer", (BPTrainer,), {}))
    yield "scratch"
    TRAINERS.pop("scratch", None)
    from trainers import _param
    _param._TABLES.pop("scratch", None)


def test_builtin_choices_stay_importable():
    assert CHOICES["algorithm"] == ("bp", "pc", "tp")


def test_unregistered_algorithm_is_rejected_with_the_registered_list():
    with pytest.raises(ValueError, match=r"algorithm='nope' is not one of bp, pc, tp"):
        TrainerConfig(algorithm="nope")


def test_registered_algorithm_validates_and_builds(scratch_algorithm):
    register_table(scratch_algorithm, ("mup", "sgd"), BP_TABLES[("mup", "sgd")])
    cfg = TrainerConfig(algorithm=scratch_algorithm, width=8, base_width=4, device="cpu")
    trainer = make_trainer(cfg, 5, 3)
    assert type(trainer).__name__ == "ScratchTrainer"
    assert trainer.table is BP_TABLES[("mup", "sgd")]


def test_registered_algorithm_without_its_table_says_which(scratch_algorithm):
    cfg = TrainerConfig(algorithm=scratch_algorithm, width=8, base_width=4, device="cpu")
    with pytest.raises(ValueError, match="has no parametrization tables; give them with register_table"):
        make_trainer(cfg, 5, 3)
    register_table(scratch_algorithm, ("mup", "sgd"), BP_TABLES[("mup", "sgd")])
    with pytest.raises(ValueError, match=r"no scratch table for \('sp', 'sgd'\)"):
        make_trainer(cfg.replace(parametrization="sp"), 5, 3)

"""The algorithm and dataset registries: what a plugin registers is what configs accept."""

from __future__ import annotations

import pytest

from trainers import CHOICES, TRAINERS, TrainerConfig, make_trainer, register_table, register_trainer
from trainers._bp import BP_TABLES, BPTrainer


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


@pytest.fixture
def scratch_dataset():
    """A generated dataset registered as ``scratch`` for one test, then removed."""
    from trainers import DATASET_REGISTRY, register_dataset
    from trainers._data import make_teacher_student

    def load(subset, test_subset, device, dtype, seed):
        return make_teacher_student(
            subset or 8, test_subset or 4, input_dim=3, output_dim=2, seed=seed, device=device, dtype=dtype
        )

    register_dataset("scratch", load, from_files=False)
    yield "scratch"
    DATASET_REGISTRY.pop("scratch", None)


def test_builtin_datasets_are_registered_with_how_they_ship():
    from trainers import DATASET_REGISTRY, DATASETS

    assert tuple(DATASETS) == ("fmnist", "fmnist14", "fmnist7", "fmnist4", "teacher")
    assert [n for n, e in DATASET_REGISTRY.items() if e.from_files] == ["fmnist", "fmnist14", "fmnist7", "fmnist4"]


def test_registered_dataset_loads_by_name_and_ships_as_generated(scratch_dataset):
    from orchestrator.engine.data_shipping import SHIPPED
    from trainers import DATASETS, load_dataset

    ds = load_dataset(scratch_dataset, 6, 2, seed=1)
    assert (ds.x_train.shape, ds.x_test.shape, ds.output_dim) == ((6, 3), (2, 3), 2)
    assert scratch_dataset in DATASETS and scratch_dataset not in SHIPPED


def test_unknown_dataset_lists_the_registered_ones(scratch_dataset):
    from trainers import load_dataset

    with pytest.raises(ValueError, match="is not one of fmnist, fmnist14, fmnist7, fmnist4, teacher, scratch"):
        load_dataset("nope")

"""Issue 30's crossed study files: they differ only in loss and algorithm, and their history is read at
100, 300 and 1000 SGD updates (docs/STUDIES_PLAN.md)."""

from pathlib import Path

import pytest

from analysis.over_time import sgd_steps_from_config
from orchestrator.spec.config import load_sweep

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
CROSSED = ("crossed_bptp_mse", "crossed_bptp_ce", "crossed_pc_mse", "crossed_pc_ce")
SHARED_TRAINER = ("optimizer", "depth", "activation", "base_width", "bias")


@pytest.mark.parametrize("name", CROSSED)
def test_the_history_is_read_at_100_300_and_1000_updates(name):
    sweep = load_sweep(SPACES / f"{name}.yaml")
    c = sweep.config
    cfg = {"data": {"dataset": c.data.dataset, "subset": c.data.subset}, "train": {"batch_size": c.train.batch_size}}
    assert c.data.dataset == "fmnist7" and c.train.batch_size == 128 and c.train.epochs == 20
    assert [float(sgd_steps_from_config(cfg, e)) for e in (2, 6, 20)] == [100.0, 300.0, 1000.0]
    assert c.verify.seeds >= 5 and c.verify.max_seeds >= c.verify.seeds


def test_the_files_differ_only_in_loss_and_algorithm():
    sweeps = {n: load_sweep(SPACES / f"{n}.yaml") for n in CROSSED}
    first = next(iter(sweeps.values())).config
    for name, sweep in sweeps.items():
        c = sweep.config
        assert (c.data, c.train, c.objective, c.verify, c.search) == (
            first.data,
            first.train,
            first.objective,
            first.verify,
            first.search,
        ), name
        trainers = [t.trainer for t in sweep.trials]
        for key in SHARED_TRAINER:
            assert {t[key] for t in trainers} == {trainers[0][key]} == {sweeps[CROSSED[0]].trials[0].trainer[key]}
        assert {t["loss"] for t in trainers} == {name.rsplit("_", 1)[1]}
        assert {t["parametrization"] for t in trainers} == {"sp", "mup"}
    bptp = [t.trainer for n in CROSSED[:2] for t in sweeps[n].trials]
    assert {t["algorithm"] for t in bptp} == {"bp", "tp"} and {t["width"] for t in bptp} == {64, 128, 256, 512, 1024}
    pc = [t.trainer for n in CROSSED[2:] for t in sweeps[n].trials]
    assert {t["algorithm"] for t in pc} == {"pc"} and {t["width"] for t in pc} == {64, 128, 256, 512}
    assert {t.trainer["gamma_bar_L"] for t in sweeps["crossed_pc_mse"].trials} == {0.0, -1.0}
    assert {t.trainer["gamma_bar_L"] for t in sweeps["crossed_pc_ce"].trials} == {0.0}  # cut to fit (STUDIES_PLAN.md)
    assert all(t["inference_steps"] >= 2 * t["depth"] for t in pc)  # T >= 2L
    assert {t["sequential_inference"] for t in sweeps["crossed_pc_mse"].trials for t in [t.trainer]} == {False, True}

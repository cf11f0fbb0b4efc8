"""tune-base: search space, groups, trial ids, resuming a study, bad input; a SIGKILLed search resumed (slow)."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import optuna
import pandas as pd
import pytest
import torch

from orchestrator.cli import main
from orchestrator.config import load_sweep, trial_id
from orchestrator.errors import BadInput
from orchestrator.tune_base import (
    base_sampler,
    objective_value,
    resume_study,
    sampler_seed,
    search_groups,
    search_space,
    searched_spec,
    study_best,
)
from trainers import TrainerConfig, make_trainer

SPACE = """
name: tb
trainer: {optimizer: sgd, depth: 3, activation: tanh, base_width: 16}
data: {dataset: fmnist, subset: 300, test_subset: 200}
train: {epochs: 1, batch_size: 50}
grid:
  algorithm: [bp, pc]
  parametrization: [sp, mup]
  width: [16, 32]
  seed: [3, 4]
objective: {metric: final_train_loss, mode: min}
search: {trials: 3}
resources: {cpu: 1}
"""


@pytest.fixture
def space(tmp_path):
    p = tmp_path / "tb.yaml"
    p.write_text(textwrap.dedent(SPACE))
    return p


# ---- search space and groups --------------------------------------------------------------
def test_default_space_is_lr_over_the_grid_range_or_1e4_to_1(space):
    assert search_space(load_sweep(space)) == [{"name": "lr", "type": "float", "low": 1e-4, "high": 1.0, "log": True}]
    sw = load_sweep(space, ["grid.lr={log2: [-8, -2, 2]}"])
    assert search_space(sw) == [{"name": "lr", "type": "float", "low": 2.0**-8, "high": 2.0**-2, "log": True}]
    sw = load_sweep(space, ["search.space.inference_lr={low: 0.05, high: 0.4}"])
    assert [p["name"] for p in search_space(sw)] == ["lr", "inference_lr"]
    assert search_space(sw)[1]["log"] is False


@pytest.mark.parametrize(
    "entry, words",
    [
        ("search.space.lrr={low: 0.1, high: 1}", "did you mean 'lr'"),
        ("search.space.width={low: 16, high: 64}", "cannot be searched"),
        ("search.space.lr={low: 1, high: 0.1}", "low < high"),
        ("search.space.lr={low: 0, high: 1, log: true}", "low > 0"),
        ("search.space.lr={low: 0.1}", "low, high"),
        ("search.space.pc_init={low: 0, high: 1}", "choices"),
        ("search.space.seed={choices: [1, 2]}", "cannot be searched"),
    ],
)
def test_bad_search_space_names_the_key(space, entry, words):
    with pytest.raises(BadInput, match="search.space") as exc:
        search_space(load_sweep(space, [entry]))
    assert words in str(exc.value)


def test_one_study_per_algorithm_at_the_base_width_sp_and_mup_share_it(space):
    sw = load_sweep(space)
    groups = search_groups(sw, search_space(sw))
    assert [g.label for g in groups] == [{"algorithm": "bp"}, {"algorithm": "pc"}]
    for g in groups:
        t = g.template["trainer"]
        assert t["width"] == 16 and t["parametrization"] == "mup" and t["seed"] == 3
    assert len({g.study for g in groups}) == 2
    # a different training loop is a different study (its values are not comparable)
    other = load_sweep(space, ["train.epochs=2"])
    assert {g.study for g in search_groups(other, search_space(other))}.isdisjoint({g.study for g in groups})
    # inference_steps in the grid: one study per (algorithm, inference_steps)
    steps = load_sweep(space, ["grid.inference_steps=[2, 4]"])
    assert len(search_groups(steps, search_space(steps))) == 4


@pytest.mark.parametrize("algorithm", ["bp", "pc", "tp"])
def test_sp_and_mup_are_the_same_network_at_the_base_width(algorithm):
    """Why one search serves both: same init, same step, same weights after it (m = 1)."""
    x, y = torch.randn(32, 20, dtype=torch.float64), torch.randn(32, 10, dtype=torch.float64)
    out = {}
    for par in ("sp", "mup"):
        torch.manual_seed(0)
        cfg = TrainerConfig(
            algorithm=algorithm,
            parametrization=par,
            width=48,
            base_width=48,
            lr=0.05,
            dtype="float64",
            inference_steps=5,
        )
        tr = make_trainer(cfg, 20, 10)
        before = {k: v.clone() for k, v in tr.model.state_dict().items()}
        loss = tr.step(x, y)["loss"]
        out[par] = (before, loss, tr.model.state_dict())
    (b_sp, l_sp, a_sp), (b_mup, l_mup, a_mup) = out["sp"], out["mup"]
    assert l_sp == pytest.approx(l_mup, rel=1e-12)
    for k in b_sp:
        torch.testing.assert_close(b_sp[k], b_mup[k], rtol=0, atol=0)
        torch.testing.assert_close(a_sp[k], a_mup[k], rtol=1e-12, atol=1e-14)
    # and the comparison can fail: away from the base width the two differ (init, or lr, or both)
    after = {}
    for par in ("sp", "mup"):
        torch.manual_seed(0)
        tr = make_trainer(
            TrainerConfig(
                algorithm=algorithm,
                parametrization=par,
                width=96,
                base_width=48,
                lr=0.05,
                dtype="float64",
                inference_steps=5,
            ),
            20,
            10,
        )
        tr.step(x, y)
        after[par] = tr.model.state_dict()
    assert not all(torch.allclose(after["sp"][k], after["mup"][k]) for k in after["sp"])


def test_searched_spec_id_is_the_hash_of_the_resolved_config(space):
    sw = load_sweep(space)
    g = search_groups(sw, search_space(sw))[0]
    a, b = searched_spec(g.template, {"lr": 0.0123}), searched_spec(g.template, {"lr": 0.0123})
    assert a == b and a["trainer"]["lr"] == 0.0123 and a["trainer"]["width"] == 16
    assert a["trial_id"] == trial_id(a["trainer"], a["data"], a["train"])
    assert searched_spec(g.template, {"lr": 0.0124})["trial_id"] != a["trial_id"]


# ---- resuming a study ---------------------------------------------------------------------
def test_rerun_sampler_seed_does_not_replay_the_first_runs_suggestion():
    """CI saw a rerun's TPE suggest lr 0.46798123196500063 again, a trial the first run had finished:
    a fresh sampler with the same seed replays the first run's draws. sampler_seed shifts it by the
    trials the study holds; checked with tune_base's own sampler (base_sampler)."""
    dist = {"lr": optuna.distributions.FloatDistribution(1e-3, 0.5, log=True)}
    history = [
        (0.013351494520010323, 0.381),
        (0.08792941852492908, 0.342),
        (0.46798123196500063, math.inf),
        (0.0021258856913179604, 0.707),
    ]  # the first run's 2 random and first 2 TPE trials (the old sampler, seed 1)

    def tpe_suggestion(n: int) -> float:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=2))
        for lr, v in history[:n]:
            study.add_trial(optuna.trial.create_trial(params={"lr": lr}, distributions=dist, value=v))
        return study.ask(dist).params["lr"]

    assert tpe_suggestion(2) == history[2][0]
    assert tpe_suggestion(4) == history[2][0]  # the bare seed replays it (the CI failure)

    space = [{"name": "lr", "type": "float", "low": 1e-3, "high": 0.5, "log": True}]
    label = {"algorithm": "bp"}
    study = optuna.create_study(sampler=base_sampler(sampler_seed(1, label, 0), space))
    asked = [study.ask(dist) for _ in range(3)]  # the first run: 2 finished, then killed in the third
    for t, (_, v) in zip(asked[:2], history):
        study.tell(t, v)
    study.tell(asked[2], state=optuna.trial.TrialState.FAIL)  # as resume_study settles it
    first_run = [t.params["lr"] for t in asked]

    def rerun_suggestion(seed: int) -> float:
        study.sampler = base_sampler(seed, space)
        t = study.ask(dist)
        study.tell(t, state=optuna.trial.TrialState.FAIL)
        return t.params["lr"]

    assert rerun_suggestion(sampler_seed(1, label, 0)) == first_run[0]  # the first run's seed replays its draws
    assert rerun_suggestion(sampler_seed(1, label, 3)) not in first_run  # 3 trials in the study: new draws


def test_resume_recovers_recorded_running_trials_and_fails_the_rest(space, tmp_path):
    sw = load_sweep(space)
    g = search_groups(sw, search_space(sw))[0]
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert resume_study(storage, g, "min", "final_train_loss", {}) == {
        "complete": 0,
        "recovered": 0,
        "failed": 0,
        "trials": 0,
    }
    study = optuna.load_study(study_name=g.study, storage=storage)
    dist = {"params/lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)}
    done_t, recorded_t, lost_t = (study.ask(fixed_distributions=dist) for _ in range(3))
    study.tell(done_t, 0.5)
    rec = searched_spec(g.template, {"lr": recorded_t.params["params/lr"]})["trial_id"]
    done = {rec: {"trial_id": rec, "status": "ok", "final_train_loss": 0.25}}
    assert resume_study(storage, g, "min", "final_train_loss", done) == {
        "complete": 2,
        "recovered": 1,
        "failed": 1,
        "trials": 3,
    }
    states = {t.number: (t.state, t.value) for t in study.get_trials()}
    assert states[recorded_t.number] == (optuna.trial.TrialState.COMPLETE, 0.25)
    assert states[lost_t.number][0] == optuna.trial.TrialState.FAIL
    best = study_best(storage, g, "final_train_loss", "min")
    assert best["best"] == {"lr": recorded_t.params["params/lr"]} and best["best_trial_id"] == rec
    assert best["trials_complete"] == 2 and rec in best["trial_ids"]
    # a second resume changes nothing
    assert resume_study(storage, g, "min", "final_train_loss", done) == {
        "complete": 2,
        "recovered": 0,
        "failed": 0,
        "trials": 3,
    }


def test_objective_of_a_diverged_trial_is_worst():
    assert objective_value({"status": "diverged", "final_train_loss": 0.1}, "final_train_loss", "min") == float("inf")
    assert objective_value({"status": "ok", "final_test_acc": float("nan")}, "final_test_acc", "max") == -float("inf")
    assert objective_value({"status": "ok", "final_train_loss": 0.3}, "final_train_loss", "min") == 0.3


# ---- bad input: one line, exit 2, nothing written -------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        ["--trials", "0"],
        ["--storage", "::not a url::"],
        ["--storage", "postgresql://nobody@127.0.0.1:1/none"],
        ["search.space.lr={low: 1, high: 0.1}"],
        ["search.trials=-2"],
        ["search.spcae.lr={low: 0.1, high: 1}"],
        ["objective.metric=final_test_accuracy"],
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(space, tmp_path, capsys, extra):
    results = tmp_path / "results"
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    options = [a for a in extra if a not in overrides]
    code = main(["tune-base", str(space), *overrides, "--results", str(results), *options])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "error" in err, err
    assert not results.exists()


# ---- a real search, killed and resumed (slow) ---------------------------------------------
# Trials of about a second (25 epochs, lr below the divergence edge) and a 0.1 s poll: on an idle
# machine 3-epoch trials finished all 7 between two polls of 0.5 s, before the kill.
KILL = """
name: killme
trainer: {algorithm: bp, optimizer: sgd, depth: 3, activation: tanh, base_width: 16}
data: {dataset: fmnist, subset: 600, test_subset: 200}
train: {epochs: 25, batch_size: 30}
grid:
  parametrization: [sp, mup]
  width: [16, 32]
objective: {metric: final_train_loss, mode: min}
search: {space: {lr: {low: 1.0e-3, high: 0.05, log: true}}, trials: 7, seed: 1, max_concurrent: 1}
resources: {cpu: 1}
"""


@pytest.mark.slow
def test_sigkilled_tune_base_resumes_without_repeating_trials(tmp_path, ray_env):
    """277 s on 2 CPUs at load 15-30: SIGKILL a 7-trial search after 2 recorded trials, run it again."""
    space = tmp_path / "killme.yaml"
    space.write_text(textwrap.dedent(KILL))
    results = tmp_path / "results"
    from orchestrator.results_store import ResultsStore

    store = ResultsStore(results / "killme" / "base")  # part files until the search ends: read as one table
    cmd = [sys.executable, "-m", "orchestrator.cli", "tune-base", str(space), "--results", str(results), "--no-mlflow"]
    proc = subprocess.Popen(
        cmd, env=ray_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            if len(store.trials()) >= 2:
                break
            assert proc.poll() is None, "tune-base ended before it could be killed"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = store.trials()
    assert 2 <= len(before) < 7
    storage = optuna.storages.RDBStorage(f"sqlite:///{results / 'killme' / 'optuna.db'}")
    (summary,) = optuna.get_all_study_summaries(storage)
    killed = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    assert len([t for t in killed if t.state == optuna.trial.TrialState.COMPLETE]) < 7

    done = subprocess.run(cmd, env=ray_env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    after = pd.read_parquet(store.trials_path)  # compacted when the search ended
    assert not store.dir.joinpath("trials").exists()
    ok = after[after.status.isin(["ok", "diverged"])]
    assert ok.trial_id.is_unique and len(ok) == 7
    # the trials recorded before the kill were not run again: same rows, same wall times
    kept = after.set_index("trial_id").loc[before.trial_id]
    assert (kept.wall_s.to_numpy() == before.wall_s.to_numpy()).all()
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 7
    assert not [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING]
    base = json.loads((results / "killme" / "base_lr.json").read_text())
    (g,) = base["groups"]
    assert sorted(g["trial_ids"]) == sorted(ok.trial_id) and g["trials_complete"] == 7
    assert g["best_trial_id"] == ok.loc[ok.final_train_loss.idxmin(), "trial_id"]
    assert "7 trials" in done.stdout

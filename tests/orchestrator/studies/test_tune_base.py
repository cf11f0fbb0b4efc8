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

from orchestrator.cli.main import main
from orchestrator.errors import BadInput
from orchestrator.spec.config import load_sweep, trial_id
from orchestrator.stores.results_store import ResultsStore, trial_row
from orchestrator.studies.base_study import recorded, rounds_of, search_rounds
from orchestrator.studies.tune_base import (
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


# ---- rounds of ask-and-tell (issues 27, 28): no Ray, a planted objective ----------------------
class Killed(Exception):
    """What the driver's death looks like to the engine: raised in the middle of a round."""


def planted(spec: dict) -> tuple[str, float]:
    """A deterministic "training": a quadratic in log2 lr, its optimum at 2^-5 (bp) or 2^-4 (pc), diverged above 2^-1."""
    x = math.log2(spec["trainer"]["lr"])
    if x > -1:
        return "diverged", math.inf
    centre = -5.0 if spec["trainer"]["algorithm"] == "bp" else -4.0
    return "ok", 0.3 + 0.05 * (x - centre) ** 2


class PlantedRuns:
    """A run_batch that records each spec's planted value in a real ResultsStore; ``kill_at`` = (call, after):
    that call records ``after`` specs, then raises :class:`Killed`."""

    def __init__(self, store: ResultsStore, kill_at: tuple[int, int] | None = None) -> None:
        self.store, self.kill_at, self.calls, self.ran = store, kill_at, 0, []

    def __call__(self, specs) -> None:
        call, self.calls = self.calls, self.calls + 1
        for i, t in enumerate(specs):
            if self.kill_at and self.kill_at == (call, i):
                raise Killed(f"killed in run_batch call {call} after {i} trials")
            spec = t.to_dict()
            status, value = planted(spec)
            history = [{"epoch": 1, "train_loss": value, "test_loss": value, "test_acc": 0.5, "wall_s": 0.01}]
            self.store.record([trial_row("tb-base", spec, history, status)], {spec["trial_id"]: history})
            self.ran.append(spec["trial_id"])


class KillAtAsk:
    """make_sampler for the engine: base_sampler, raising :class:`Killed` when round ``number`` of group ``seed_of``
    creates its ``ask``-th trial (the trial exists, untagged, unsampled: a kill among the asks)."""

    def __init__(self, seed: int, ask: int) -> None:
        self.seed, self.ask = seed, ask

    def __call__(self, seed: int, space):
        inner = base_sampler(seed, space)
        if seed != self.seed:
            return inner
        left = [self.ask]

        class Dies(optuna.samplers.BaseSampler):
            def infer_relative_search_space(self, study, trial):
                return inner.infer_relative_search_space(study, trial)

            def sample_relative(self, study, trial, search_space):
                return inner.sample_relative(study, trial, search_space)

            def sample_independent(self, study, trial, name, dist):
                return inner.sample_independent(study, trial, name, dist)

            def before_trial(self, study, trial):
                left[0] -= 1
                if left[0] < 0:
                    raise Killed("killed among the asks")
                inner.before_trial(study, trial)

            def after_trial(self, study, trial, state, values):
                inner.after_trial(study, trial, state, values)

        return Dies()


def _search(sw, root, run_batch, make_sampler=base_sampler, n=9, batch=3, storage=None):
    """tune_base's engine on a real ResultsStore and Optuna storage (default: SQLite in ``root``), resume_study
    first, as tune_base does."""
    groups = search_groups(sw, search_space(sw))
    root.mkdir(parents=True, exist_ok=True)
    storage = storage or optuna.storages.RDBStorage(f"sqlite:///{root / 'optuna.db'}")
    store = ResultsStore(root / "base")
    done = {k: r for k, r in recorded(store).items() if r["status"] in ("ok", "diverged")}
    for g in groups:
        resume_study(storage, g, "min", "final_train_loss", done)
    rounds = search_rounds(
        storage, groups, search_space(sw), n, batch, 7, "final_train_loss", "min", store, run_batch, make_sampler
    )
    return groups, storage, store, rounds


def _history(groups, storage) -> list[list[tuple]]:
    """Per group, (round, slot, lr, value) of every trial that counts, in (round, slot) order."""
    out = []
    for g in groups:
        trials = rounds_of(optuna.load_study(study_name=g.study, storage=storage).get_trials())
        out.append([(t.user_attrs["round"], t.user_attrs["slot"], t.params["lr"], t.value) for t in trials])
    return out


@pytest.mark.slow
def test_rounds_resume_after_a_kill_as_if_uninterrupted(space, tmp_path):
    """Issue 28: 8 trials in rounds of 3, 3, 2 (GP from round 1), run through once; and run killed in round 1's
    batch after 2 recorded trials, resumed, killed again among round 2's asks (after its first ask), resumed
    again. Same lrs in the same order, same values, same best; the 2 trials recorded before the first kill
    were not run again; no trial ran twice. Slow: 11 GP asks, 0.3-0.8 s each, and SQLite commits; 16-20 s on
    the 2 shared CPUs at load 10. (One group; test_rounds_run_all_groups_together... runs two.)"""
    sw = load_sweep(space, ["grid.algorithm=[bp]"])
    straight = PlantedRuns(ResultsStore(tmp_path / "a" / "base"))
    groups, st_a, _, rounds = _search(sw, tmp_path / "a", straight, n=8)
    assert rounds == 3 and straight.calls == 3 and len(straight.ran) == 8 == len(set(straight.ran))
    expected = _history(groups, st_a)
    (trials,) = expected
    assert [(r, s) for r, s, *_ in trials] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]
    for r in range(3):  # a batch's asks are distinct points inside the space
        lrs = [lr for rr, _, lr, _ in trials if rr == r]
        assert len(set(lrs)) == len(lrs) and all(1e-4 <= lr <= 1.0 for lr in lrs)
    (best,) = [study_best(st_a, g, "final_train_loss", "min") for g in groups]
    assert abs(math.log2(best["best"]["lr"]) + 5.0) < 1.0, best  # GP came within an octave of the planted optimum

    root = tmp_path / "b"
    first = PlantedRuns(ResultsStore(root / "base"), kill_at=(1, 2))
    with pytest.raises(Killed):
        _search(sw, root, first, n=8)
    assert first.calls == 2 and len(first.ran) == 3 + 2
    second = PlantedRuns(ResultsStore(root / "base"))
    with pytest.raises(Killed):
        _search(sw, root, second, KillAtAsk(sampler_seed(7, groups[0].label, 2), ask=1), n=8)
    assert second.calls == 1 and len(second.ran) == 1 and not set(second.ran) & set(first.ran)
    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'optuna.db'}")
    study = optuna.load_study(study_name=groups[0].study, storage=storage)
    cut = [t for t in study.get_trials() if t.user_attrs.get("round") == 2 or not t.params]
    assert [t.state.name for t in cut] == ["RUNNING", "RUNNING"]  # round 2's first ask, and a bare trial
    third = PlantedRuns(ResultsStore(root / "base"))
    _, st_b, _, rounds = _search(sw, root, third, n=8)
    assert rounds == 1 and third.calls == 1
    assert _history(groups, st_b) == expected
    assert [study_best(st_b, g, "final_train_loss", "min") for g in groups] == [best]
    ran = first.ran + second.ran + third.ran
    assert len(ran) == len(set(ran)) == 8 and set(ran) == set(straight.ran)
    retired = [t for t in study.get_trials() if t.user_attrs.get("retired") or not t.params]
    assert [t.state.name for t in retired] == ["FAIL", "FAIL"]


def test_rounds_run_all_groups_together_and_ask_only_what_is_missing(space, tmp_path):
    """One run_batch per round with every group's asks; a failed trial is told FAIL and asked again next round;
    search.batch caps each group's asks; a rerun of a finished search runs nothing."""
    sw = load_sweep(space)
    store = ResultsStore(tmp_path / "base")
    storage = optuna.storages.InMemoryStorage()  # the runs share it as they would a database
    seen = []

    def run_batch(specs):
        seen.append(specs)
        for t in specs:
            spec = t.to_dict()
            status, value = planted(spec)
            if len(seen) == 1 and t is specs[0]:
                status, value = "failed", math.nan  # the first trial of the first round fails
            h = [{"epoch": 1, "train_loss": value, "test_loss": value, "test_acc": 0.5, "wall_s": 0.0}]
            store.record([trial_row("tb-base", spec, h, status)], {spec["trial_id"]: h})

    groups, st, _, rounds = _search(sw, tmp_path, run_batch, n=5, batch=4, storage=storage)
    assert rounds == 2 and [len(b) for b in seen] == [8, 2]  # 4 + 4, then 1 + 1 (bp: 3 complete + the failed one)
    assert {t.trainer["algorithm"] for t in seen[0]} == {"bp", "pc"}
    bp = optuna.load_study(study_name=groups[0].study, storage=st).get_trials()
    assert [t.state.name for t in bp].count("FAIL") == 1 and [t.state.name for t in bp].count("COMPLETE") == 4
    assert [study_best(st, g, "final_train_loss", "min")["trials_complete"] for g in groups] == [4, 5]
    _, _, _, rounds = _search(
        sw, tmp_path, run_batch, n=5, batch=4, storage=storage
    )  # bp: one more trial (its rerun budget)
    assert rounds == 1 and [len(b) for b in seen] == [8, 2, 1]
    _, _, _, rounds = _search(sw, tmp_path, run_batch, n=5, batch=4, storage=storage)
    assert rounds == 0 and len(seen) == 3


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
    from orchestrator.stores.results_store import ResultsStore

    store = ResultsStore(results / "killme" / "base")  # part files until the search ends: read as one table
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        "tune-base",
        str(space),
        "--results",
        str(results),
        "--no-mlflow",
    ]
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

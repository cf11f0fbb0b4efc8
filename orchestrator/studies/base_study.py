"""tune-base's Optuna studies: the sampler, its seeds, settling a study, and the search in rounds.

The search runs in **rounds** of ask-and-tell, driven by the driver (:func:`search_rounds`, issues 27
and 28). In each round every group whose study holds fewer than ``trials`` COMPLETE trials asks a
batch of ``search.batch`` suggestions (capped at what it still needs), all of them before anything
runs; the suggestions of all groups run together as one list of trial specs (``run_batch``, which
runs and records them in Parquet); then each trial is told the value Parquet recorded for it
(:func:`objective_value`; a failed or missing trial is told FAIL). One round is one submission that
keeps every worker busy across the groups.

Determinism (issue 28: the learning rates depend only on the study's seed and the results of the
trials before them, not on when the driver died). Group g's round r asks through a sampler built
fresh, seeded by :func:`sampler_seed` (``search.seed``, the group's label, r), and sees exactly the
trials of rounds < r. Each asked trial carries the user attrs ``round``, ``slot`` and ``of`` (its
batch's size), so a rerun knows where it is:

- the last round's trials all asked and some RUNNING (the driver died while they ran or were told):
  they are that round's batch again; those whose trial id Parquet holds as done are told their
  recorded value, the others run, then are told;
- fewer asked than ``of`` (the driver died among the asks): they are marked ``retired`` and FAIL and
  the whole batch is asked again with the same seed. Optuna's samplers do not see FAIL trials:
  ``GPSampler`` models COMPLETE trials and takes RUNNING ones into qLogEI, TPE takes COMPLETE and
  PRUNED (and RUNNING as constant liars), the intersection search space skips them, and
  :func:`orchestrator.studies.sampler.no_repeat` compares only with trials that are not FAIL; so the
  batch asked again is the batch the uninterrupted run asked (tests/orchestrator/studies/test_tune_base.py
  checks it with GP). Retired trials never count.

RUNNING trials without a ``round`` (a study written by the former Ray Tune ``OptunaSearch`` path,
or an ask cut before it was tagged) are settled by :func:`resume_study` as before: told their
recorded value when Parquet holds them as done, else FAIL.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analysis import schema
from orchestrator.spec.config import TrialSpec, searched_spec
from orchestrator.stores.results_store import DONE_STATUSES, ResultsStore
from orchestrator.studies.sampler import no_repeat

ROUND, SLOT, OF, RETIRED = "round", "slot", "of", "retired"  # trial user attrs of the rounds
STARTUP_TRIALS = 3  # random trials before the model: few, the base search runs 6-20 trials
GP_MAX_DIMS = 4


# ---- values, params, seeds, sampler -------------------------------------------------------
def objective_value(row: dict[str, Any], metric: str, mode: str) -> float:
    """The value Optuna sees for a recorded trial: its objective, ±inf when diverged or not finite
    (the objective's rule: :func:`analysis.schema.objective_value`)."""
    return schema.objective_value(row.get(metric, math.nan), row.get("status"), mode)


def _params(trial) -> dict[str, Any]:
    """An Optuna trial's params as trainer fields (the former OptunaSearch path flattened ``params/lr``)."""
    return {k.split("/", 1)[-1]: v for k, v in trial.params.items()}


def _trial_id(group, trial) -> str | None:
    """The trial id of an Optuna trial of ``group``'s study (None when it has no valid params)."""
    if not trial.params:
        return None
    try:
        return searched_spec(group.template, _params(trial))["trial_id"]
    except (TypeError, ValueError):
        return None


def sampler_seed(seed: int, label: dict[str, Any], round_: int) -> int:
    """The sampler's seed for group ``label``'s round ``round_``.

    A stable hash (SHA-256 of JSON, not Python's salted ``hash``) of ``search.seed``, the group and the
    round, in ``[0, 2**32)``: each group draws its own learning rates (with one seed for all, the demo's
    three algorithms drew the same six), each round its own random draws (a fresh sampler with one seed
    for every round replays the first round's draws: CI saw a finished trial's lr suggested again bit for
    bit), and a rerun of round r draws what the first run drew there.
    """
    key = json.dumps({"seed": int(seed), "group": label, "round": int(round_)}, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")


def base_sampler(seed: int, space: list[dict[str, Any]]):
    """The Optuna sampler of a base-width study: GP for up to 4 numeric keys, else multivariate TPE.

    Both start modelling after :data:`STARTUP_TRIALS` random trials and account for the trials of the
    batch asked before (GP: qLogEI over them; TPE: constant liar); GP never suggests a measured or
    asked point again (:func:`orchestrator.studies.sampler.no_repeat`).
    ``benchmarks/base_sampler.py`` measured GP against random and TPE on a planted 1-D optimum.
    """
    import optuna

    numeric = all("choices" not in p for p in space)
    if numeric and len(space) <= GP_MAX_DIMS:
        return no_repeat(optuna.samplers.GPSampler(seed=seed, n_startup_trials=STARTUP_TRIALS))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True, constant_liar=True)


# ---- settling and the best ------------------------------------------------------------------
def resume_study(storage, group, mode: str, metric: str, done: dict[str, dict]) -> dict[str, int]:
    """Open (or create) the group's study and settle the RUNNING trials that belong to no round.

    Such a trial (left by the former OptunaSearch path, or an ask cut before it was tagged) whose
    trial id Parquet holds as done is told COMPLETE with its recorded value; any other is told FAIL
    (``skip_if_finished``). The rounds' own RUNNING trials are :func:`search_rounds`' to settle.
    Returns counts ``complete, recovered, failed`` and ``trials`` (all the study's trials, whatever
    their state).
    """
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(
        storage=storage,
        study_name=group.study,
        load_if_exists=True,
        direction="minimize" if mode == "min" else "maximize",
    )
    recovered = failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if in_round(t):
            continue
        tid = _trial_id(group, t)
        if tid in done and not t.user_attrs.get(RETIRED):
            study.tell(t.number, objective_value(done[tid], metric, mode), skip_if_finished=True)
            recovered += 1
        else:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed += 1
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return {
        "complete": complete,
        "recovered": recovered,
        "failed": failed,
        "trials": len(study.get_trials(deepcopy=False)),
    }


def study_best(storage, group, metric: str, mode: str) -> dict[str, Any]:
    """The group's best COMPLETE trial: params, value, trial id (``best`` None when no finite value)."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=group.study, storage=storage)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trials = [t for t in complete if t.value is not None and math.isfinite(t.value)]
    out = {
        "group": group.label,
        "study": group.study,
        "base_width": group.template["trainer"]["base_width"],
        "parametrization_run": group.template["trainer"]["parametrization"],
        "trials_complete": len(complete),
        "trial_ids": sorted(searched_spec(group.template, _params(t))["trial_id"] for t in complete),
        "metric": metric,
        "mode": mode,
        "best": None,
        "best_value": None,
        "best_trial_id": None,
    }
    if trials:
        best = min(trials, key=lambda t: schema.sign(mode) * t.value)
        params = _params(best)
        out.update(best=params, best_value=best.value, best_trial_id=searched_spec(group.template, params)["trial_id"])
    return out


# ---- the rounds -------------------------------------------------------------------------------
def in_round(trial) -> bool:
    """Whether an Optuna trial belongs to a round: asked in full (params, then ``round``, ``slot`` and
    last ``of`` set) and not retired. Any other RUNNING trial is :func:`resume_study`'s to settle."""
    return OF in trial.user_attrs and not trial.user_attrs.get(RETIRED)


def rounds_of(trials: list) -> list:
    """The trials that belong to a round (:func:`in_round`), in (round, slot) order."""
    return sorted(filter(in_round, trials), key=lambda t: (t.user_attrs[ROUND], t.user_attrs[SLOT]))


@dataclass
class Round:
    """One group's batch in a round: its study, the round number, its Optuna trials and their specs (slot order)."""

    group: Any
    study: Any
    number: int
    trials: list  # optuna FrozenTrial or Trial, in slot order
    specs: list[dict[str, Any]]
    told: frozenset[int] = frozenset()  # numbers of the trials already told (a driver died among the tells)


def _suggest(trial, p: dict[str, Any], prefix: str) -> None:
    """Suggest the search-space entry ``p`` (``search_space``'s form) on an Optuna trial."""
    name = prefix + p["name"]
    if "choices" in p:
        trial.suggest_categorical(name, list(p["choices"]))
    elif p["type"] == "int":
        trial.suggest_int(name, int(p["low"]), int(p["high"]), log=p["log"])
    else:
        trial.suggest_float(name, float(p["low"]), float(p["high"]), log=p["log"])


def ask_batch(study, group, space: list[dict[str, Any]], number: int, k: int) -> list:
    """Ask ``k`` trials of round ``number`` on ``study`` (its sampler), each tagged once its params are set
    (``of`` last: a trial cut before it belongs to no round, and :func:`resume_study` fails it).

    All the batch's asks happen before anything runs: the j-th sees the j - 1 before it RUNNING.
    A study of the former OptunaSearch path keeps its ``params/`` prefix (one search space for GP).
    """
    old = any(name.startswith("params/") for t in study.get_trials(deepcopy=False) for name in t.params)
    prefix = "params/" if old else ""
    out = []
    for slot in range(k):
        trial = study.ask()
        for p in space:
            _suggest(trial, p, prefix)
        trial.set_user_attr(ROUND, number)
        trial.set_user_attr(SLOT, slot)
        trial.set_user_attr(OF, k)
        out.append(trial)
    return out


def open_round(storage, group) -> bool:
    """Whether ``group``'s study holds a round with a trial still RUNNING (a driver died in it)."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=group.study, storage=storage)
    return any(t.state == TrialState.RUNNING for t in rounds_of(study.get_trials(deepcopy=False)))


def _retire(study, trials: list) -> None:
    """Mark ``trials`` (a batch cut among its asks) retired, then FAIL: they never count."""
    from optuna.trial import TrialState

    for t in trials:
        if t.state == TrialState.RUNNING:
            study._storage.set_trial_user_attr(t._trial_id, RETIRED, True)
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


def plan_round(
    storage,
    group,
    space: list[dict[str, Any]],
    n: int,
    batch: int,
    seed: int,
    budget: int,
    make_sampler: Callable[[int, list[dict[str, Any]]], Any] = base_sampler,
) -> Round | None:
    """Group ``group``'s batch of the next round, or None when its study holds ``n`` COMPLETE trials
    (or the ``budget`` of asks left to this run is spent).

    An interrupted round (all its asks made, some RUNNING) is returned as it is; a round cut among
    its asks is retired and asked again; otherwise round r + 1 asks ``min(batch, n - complete, budget)``.
    """
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=group.study, storage=storage)
    trials = study.get_trials(deepcopy=False)
    _retire(study, [t for t in trials if t.user_attrs.get(RETIRED)])  # retired, then killed before FAIL
    tagged = rounds_of(trials)
    number = 0
    if tagged:
        last = max(t.user_attrs[ROUND] for t in tagged)
        batch_trials = sorted((t for t in tagged if t.user_attrs[ROUND] == last), key=lambda t: t.user_attrs[SLOT])
        number = last + 1
        if any(t.state == TrialState.RUNNING for t in batch_trials):
            of = batch_trials[0].user_attrs[OF]
            if [t.user_attrs[SLOT] for t in batch_trials] == list(range(of)):
                specs = [searched_spec(group.template, _params(t)) for t in batch_trials]
                told = frozenset(t.number for t in batch_trials if t.state != TrialState.RUNNING)
                return Round(group, study, last, batch_trials, specs, told)
            _retire(study, batch_trials)  # cut among its asks: asked again, same seed
            number = last
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    k = min(batch, n - complete, budget)
    if k <= 0:
        return None
    sampler = make_sampler(sampler_seed(seed, group.label, number), space)
    study = optuna.load_study(study_name=group.study, storage=storage, sampler=sampler)
    asked = ask_batch(study, group, space, number, k)
    return Round(group, study, number, asked, [searched_spec(group.template, _params(t)) for t in asked])


def recorded(store: ResultsStore) -> dict[str, dict[str, Any]]:
    """``{trial id: row}`` of every trial ``store`` holds (base and parts)."""
    table = store.trials()
    return {} if table.empty else {r["trial_id"]: r for r in table.to_dict("records")}


def tell_round(rnd: Round, rows: dict[str, dict[str, Any]], metric: str, mode: str) -> None:
    """Tell each trial of ``rnd`` its recorded value (done in Parquet), else FAIL."""
    from optuna.trial import TrialState

    for t, spec in zip(rnd.trials, rnd.specs):
        if t.number in rnd.told:
            continue
        row = rows.get(spec["trial_id"])
        if row is not None and row["status"] in DONE_STATUSES:
            rnd.study.tell(t.number, objective_value(row, metric, mode), skip_if_finished=True)
        else:
            rnd.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


def to_trial_spec(spec: dict[str, Any]) -> TrialSpec:
    """A :class:`TrialSpec` from its ``to_dict()`` form (``searched_spec``'s)."""
    return TrialSpec(
        spec["trial_id"], dict(spec["trainer"]), dict(spec["data"]), dict(spec["train"]), tuple(spec["swept"])
    )


def search_rounds(
    storage,
    groups: list,
    space: list[dict[str, Any]],
    n: int,
    batch: int,
    seed: int,
    metric: str,
    mode: str,
    store: ResultsStore,
    run_batch: Callable[[list[TrialSpec]], None],
    make_sampler: Callable[[int, list[dict[str, Any]]], Any] = base_sampler,
) -> int:
    """Run the groups' studies in rounds until each holds ``n`` COMPLETE trials (see the module's doc).

    Args:
        storage: the Optuna storage; every group's study exists in it (:func:`resume_study`).
        groups: the search groups (``label``, ``template``, ``study``).
        space: the checked search space (``tune_base.search_space``).
        n: COMPLETE trials per study; batch: asks per group and round; seed: ``search.seed``.
        metric, mode: the objective (a ``trials.parquet`` column, ``min``/``max``).
        store: where ``run_batch`` records the trials (read after each round).
        run_batch: runs and records a list of trial specs (the round's trials not yet done in ``store``).
        make_sampler: ``(seed, space) -> sampler`` (default :func:`base_sampler`).

    Each group asks at most ``n`` minus its COMPLETE trials at the start in this call (a trial
    that fails makes a rerun ask again, never an endless loop here); an interrupted round is always
    finished.

    Returns:
        The number of rounds run (submissions of ``run_batch`` and rounds whose trials were all recorded).
    """
    import optuna
    from optuna.trial import TrialState

    budgets = {}
    for g in groups:
        study = optuna.load_study(study_name=g.study, storage=storage)
        budgets[g.study] = n - len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    count = 0
    while True:
        rounds = []
        for g in groups:
            rnd = plan_round(storage, g, space, n, batch, seed, budgets[g.study], make_sampler)
            if rnd is not None:
                budgets[g.study] -= len(rnd.trials)
                rounds.append(rnd)
        if not rounds:
            return count
        count += 1
        rows = recorded(store)
        todo: dict[str, dict[str, Any]] = {}
        for rnd in rounds:
            for t, spec in zip(rnd.trials, rnd.specs):
                if t.number in rnd.told:
                    continue
                row = rows.get(spec["trial_id"])
                if row is None or row["status"] not in DONE_STATUSES:
                    todo.setdefault(spec["trial_id"], spec)
        if todo:
            run_batch([to_trial_spec(s) for s in todo.values()])
            rows = recorded(store)
        for rnd in rounds:
            tell_round(rnd, rows, metric, mode)

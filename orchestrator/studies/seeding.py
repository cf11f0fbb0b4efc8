"""Adaptive seeding of ``verify``: which groups are still undecided at a look, and the seeds they get next.

verify looks at the seed counts of :func:`analysis.stats.seed_schedule` (``verify.seeds``, then
``verify.seed_step`` more at each look, up to ``verify.max_seeds``); each look's intervals are at
:func:`analysis.stats.look_level`, so that the adaptive design keeps its error rate. After a look a
group is **undecided** when its own verdict (before the SP-control rule) is ``inconclusive``, or
when it is an SP control that does not drift while its μP twin transfers on its own (the twin's
verdict waits on it). Only those groups get the next seeds: their grid points at every width with
the new seed values, which continue from the largest seed of the grid. A look reads only the trials
of its own seeds, so a resumed run decides as an uninterrupted one did, whatever a later look of an
interrupted run had already recorded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from analysis.stats import look_level, seed_schedule
from orchestrator.spec.config import Sweep, TrialSpec, trial_id

CONTROL, JUDGED = "sp", "mup"


def seed_plan(sweep: Sweep) -> tuple[list[int], list[int]]:
    """``(seed values in the order they are given, seed counts at each look)`` of a verify sweep.

    The first values are the grid's own seeds (``with_seeds`` applied); the rest continue from
    the largest of them + 1.
    """
    base = sorted({int(t.trainer["seed"]) for t in sweep.trials})
    v = sweep.config.verify
    looks = seed_schedule(len(base), int(v.max_seeds), int(v.seed_step))
    return base + list(range(base[-1] + 1, base[-1] + 1 + looks[-1] - len(base))), looks


def own_verdicts(groups: pd.DataFrame) -> pd.Series:
    """Each group's verdict before the SP-control rule (``own_verdict``, else ``verdict``)."""
    return groups["own_verdict"] if "own_verdict" in groups.columns else groups["verdict"]


def undecided(groups: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The rows of ``groups`` (the analysis's groups) that more seeds could still decide.

    A group is undecided when its own verdict is ``inconclusive``, or when it is an SP control
    that is not ``drifts`` while its μP twin (the same other keys) is ``transfers`` on its own.
    """
    if groups.empty:
        return groups
    own = own_verdicts(groups)
    out = own == "inconclusive"
    if "parametrization" in groups.columns:
        other = [k for k in keys if k != "parametrization" and k in groups.columns]
        twin = groups[other].apply(tuple, axis=1) if other else pd.Series([()] * len(groups), index=groups.index)
        waiting = set(twin[(groups.parametrization == JUDGED) & (own == "transfers")])
        out |= (groups.parametrization == CONTROL) & (own != "drifts") & twin.isin(waiting)
    return groups[out]


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def label(row: pd.Series, groups: pd.DataFrame, keys: list[str]) -> str:
    """A group's name: its values of the keys that vary between ``groups`` (``bp/mup``)."""
    shown = [k for k in keys if k in groups.columns and groups[k].nunique() > 1] or keys
    return "/".join(str(row[k]) for k in shown)


def grow(
    sweep: Sweep, todo: pd.DataFrame, keys: list[str], seeds: list[int], given: dict[tuple, set[int]]
) -> list[TrialSpec]:
    """The grid points of the groups in ``todo`` at each of ``seeds`` they lack, every width included.

    Args:
        sweep: the verify sweep (its grid points at the first look's seeds).
        todo: the undecided groups (rows of the analysis's groups).
        keys: the group keys.
        seeds: the seed values of the next look.
        given: group (its key values) → seeds it has beyond the grid's; updated.
    """
    first = min(int(t.trainer["seed"]) for t in sweep.trials)
    base = {int(t.trainer["seed"]) for t in sweep.trials}
    out: dict[str, TrialSpec] = {}
    for _, row in todo.iterrows():
        have = given.setdefault(tuple(row[k] for k in keys), set())
        lack = [s for s in seeds if s not in base and s not in have]
        have.update(lack)
        for t in sweep.trials:
            if int(t.trainer["seed"]) != first or not all(_same(t.trainer.get(k, "-"), row[k]) for k in keys):
                continue
            swept = tuple(dict.fromkeys([*t.swept, "seed"]))
            for s in lack:
                trainer = {**t.trainer, "seed": s}
                tid = trial_id(trainer, t.data, t.train)
                out.setdefault(tid, TrialSpec(tid, trainer, t.data, t.train, swept))
    return list(out.values())


def at_seeds(logs: Any, seeds: list[int]) -> Any:
    """``logs`` (:class:`analysis.load.SweepLogs`) with only the trials (and their history) of ``seeds``."""
    trials = logs.trials
    if "seed" not in trials.columns:
        return logs
    trials = trials[trials.seed.isin(seeds)]
    history = logs.history
    if "trial_id" in history.columns:
        history = history[history.trial_id.isin(set(trials.trial_id))]
    return dataclasses.replace(logs, trials=trials, history=history)


def look_line(
    todo: pd.DataFrame, groups: pd.DataFrame, keys: list[str], batch: list[int], look: int, looks: int
) -> str:
    """``seeds: 2 undecided group(s) (bp/mup, pc/sp) get seeds 3-5 (look 2 of 3, 98.3 % intervals)``."""
    names = ", ".join(label(r, groups, keys) for _, r in todo.iterrows())
    span = f"{batch[0]}-{batch[-1]}" if len(batch) > 1 else f"{batch[0]}"
    return (
        f"seeds: {len(todo)} undecided group(s) ({names}) get seed{'s' if len(batch) > 1 else ''} {span} "
        f"(look {look} of {looks}, {100 * look_level(looks):.1f} % intervals)"
    )
